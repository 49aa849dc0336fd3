"""The stage API: MMTL through its stages follows eqs. 4-7 with the documented keys (a loop
written out by hand); stages see the groups adapted before them; ANIL leaves the body alone;
errors are clear; every mode agrees under every task strategy; model state is threaded.
"""

import json
import os
import subprocess
import sys
import textwrap

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mmtl_jax import meta

RNG = jax.random.PRNGKey(7)


def _mlp_mmtl():
  """A small MMTL problem with dropout (so every key matters): theta a 4-6 tanh layer with
  an auxiliary linear read-out, phi a 6-3 softmax head; 3 tasks of 5 examples."""
  k = jax.random.split(jax.random.PRNGKey(1), 6)
  params = {'theta': {'w': jax.random.normal(k[0], (4, 6)), 'aux': jax.random.normal(k[1], (6,))},
            'phi': {'w': jax.random.normal(k[2], (6, 3))}}
  batch = {'x': jax.random.normal(k[3], (3, 5, 4)), 'y_aux': jax.random.normal(k[4], (3, 5)),
           'y': jax.random.randint(k[5], (3, 5), 0, 3)}

  def features(theta, x, rng):
    h = jnp.tanh(x @ theta['w'])
    return h * jax.random.bernoulli(rng, 0.8, h.shape) / 0.8

  def inner_loss(theta, b, rng):
    return jnp.mean((features(theta, b['x'], rng) @ theta['aux'] - b['y_aux']) ** 2)

  def transfer_loss(theta, phi, b, rng):
    logits = features(theta, b['x'], rng) @ phi['w']
    return optax.softmax_cross_entropy_with_integer_labels(logits, b['y']).mean()

  return params, batch, inner_loss, transfer_loss


def _key(task_rng, *tags):
  """fold_in of task_rng by each tag in turn (meta/spec.py's derivation)."""
  for tag in tags:
    task_rng = jax.random.fold_in(task_rng, tag)
  return task_rng


def _hand_mmtl(params, batch, rng, inner_loss, transfer_loss, *, alpha, beta, steps,
               first_order):
  """Eqs. 4-7 written out, task by task, with meta/spec.py's keys: task t's key r_t =
  fold_in(rng, t); stage i (0: theta by inner_loss, 1: phi by transfer_loss), step s:
  fold_in(fold_in(fold_in(r_t, 0), i), s); outer loss fold_in(r_t, 1); inner loss after
  adaptation (log_inner_after) fold_in(fold_in(r_t, 2), 0). Returns (mean outer loss, mean
  metrics)."""
  sgd = lambda p, g, lr: jax.tree.map(
      lambda a, b: a - lr * (jax.lax.stop_gradient(b) if first_order else b), p, g)
  outer, metrics = [], []
  for t in range(batch['x'].shape[0]):
    b, r = jax.tree.map(lambda x, t=t: x[t], batch), jax.random.fold_in(rng, t)
    theta, phi = params['theta'], params['phi']
    inner_before = inner_loss(theta, b, _key(r, 0, 0, 0))
    for s in range(steps):
      theta = sgd(theta, jax.grad(inner_loss)(theta, b, _key(r, 0, 0, s)), alpha)
    transfer_before = transfer_loss(theta, phi, b, _key(r, 0, 1, 0))
    for s in range(steps):
      phi = sgd(phi, jax.grad(transfer_loss, argnums=1)(theta, phi, b, _key(r, 0, 1, s)), beta)
    outer.append(transfer_loss(theta, phi, b, _key(r, 1)))
    metrics.append({'inner_loss_before': inner_before, 'transfer_loss_before': transfer_before,
                    'outer_loss': outer[-1],
                    'inner_loss_after': inner_loss(theta, b, _key(r, 2, 0))})
  n = len(outer)
  return sum(outer) / n, jax.tree.map(lambda *m: sum(m) / n, *metrics)


@pytest.mark.parametrize('strategy,steps,mode', [('loop', 2, 'exact'), ('vmap', 1, 'exact'),
                                                 ('vmap', 3, 'first_order')])
@pytest.mark.slow  # over 5 s alone
def test_mmtl_through_stages_follows_the_hand_written_loop_and_documented_keys(strategy, steps,
                                                                              mode):
  params, batch, inner_loss, transfer_loss = _mlp_mmtl()
  kw = dict(alpha=0.3, beta=0.2)
  spec = meta.recipes.mmtl(inner_loss, transfer_loss, steps=steps, mode=mode,
                           strategy=strategy, log_inner_after=True, **kw)
  got = jax.jit(lambda p: meta.meta_gradient(spec, p, batch, RNG))(params)
  assert got.state is None
  hand = lambda p: _hand_mmtl(p, batch, RNG, inner_loss, transfer_loss, steps=steps,
                              first_order=mode == 'first_order', **kw)
  (_, metrics), grads = jax.jit(jax.value_and_grad(hand, has_aux=True))(params)
  assert jax.tree.structure(got.grads) == jax.tree.structure(grads)
  for g, w in zip(jax.tree.leaves(got.grads), jax.tree.leaves(grads)):
    np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5 * float(np.abs(w).max()))
  assert set(got.metrics) == set(metrics)
  for name, value in metrics.items():
    np.testing.assert_allclose(got.metrics[name], value, rtol=1e-5, err_msg=name)
  assert float(optax.tree.norm(got.grads)) > 0


@pytest.mark.slow  # over 5 s alone
def test_mmtl_with_empty_phi_skips_eq_5():
  params, batch, inner_loss, transfer_loss = _mlp_mmtl()
  params = {'theta': params['theta'], 'phi': {}}
  task = jax.tree.map(lambda x: x[0], batch)
  stages = meta.recipes.mmtl(inner_loss, transfer_loss, alpha=0.3, beta=0.2,
                             steps=2).stages
  for first_order in (False, True):
    adapted, stats = jax.jit(lambda p, fo=first_order: meta.adapt_stages(
        stages, p, task, RNG, first_order=fo))(params)
    assert set(stats) == {'inner_loss_before'}  # eq. 5 skipped: no transfer_loss stat
    assert adapted['phi'] == {}
    theta = params['theta']
    for s in range(2):
      g = jax.grad(inner_loss)(theta, task, _key(RNG, 0, 0, s))
      theta = jax.tree.map(lambda a, b: a - 0.3 * b, theta, g)
    for g, w in zip(jax.tree.leaves(adapted['theta']), jax.tree.leaves(theta)):
      np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(stats['inner_loss_before'],
                               inner_loss(params['theta'], task, _key(RNG, 0, 0, 0)), rtol=1e-6)


def _linear_setup():
  """Two groups, body w [3, 2] and head v [2]; loss = mean((x @ w @ v - y)^2)."""
  k = jax.random.split(jax.random.PRNGKey(0), 4)
  params = {'body': jax.random.normal(k[0], (3, 2)), 'head': jax.random.normal(k[1], (2,))}
  batch = {'x': jax.random.normal(k[2], (5, 3)), 'y': jax.random.normal(k[3], (5,))}
  loss = lambda p, b, r: jnp.mean((b['x'] @ p['body'] @ p['head'] - b['y']) ** 2)
  return params, batch, loss


def test_a_stage_sees_the_groups_adapted_before_it():
  params, batch, loss = _linear_setup()
  stages = (meta.Stage('body', loss, lr=0.1), meta.Stage('head', loss, steps=2, lr=0.2))
  adapted, stats = meta.adapt_stages(stages, params, batch, RNG)
  body = params['body'] - 0.1 * jax.grad(loss)(params, batch, None)['body']
  head = params['head']
  for _ in range(2):  # the head's steps use the ADAPTED body
    head = head - 0.2 * jax.grad(loss)({'body': body, 'head': head}, batch, None)['head']
  np.testing.assert_allclose(adapted['body'], body, rtol=1e-6)
  np.testing.assert_allclose(adapted['head'], head, rtol=1e-6)
  np.testing.assert_allclose(stats['head_loss_before'],
                             loss({'body': body, 'head': params['head']}, batch, None),
                             rtol=1e-6)


def test_anil_adapts_only_the_head_and_the_body_gets_a_second_order_gradient():
  params, batch, loss = _linear_setup()
  spec = meta.MetaSpec((meta.Stage('head', loss, steps=2, lr=0.3),), loss, strategy='loop')
  task_batch = jax.tree.map(lambda x: x[None], batch)
  adapted, _ = meta.adapt_stages(spec.stages, params, batch, RNG)
  np.testing.assert_array_equal(adapted['body'], params['body'])
  assert not np.allclose(adapted['head'], params['head'])
  exact = meta.meta_gradient(spec, params, task_batch, RNG).grads
  first = meta.meta_gradient(
      meta.MetaSpec(spec.stages, loss, estimator='first_order', strategy='loop'), params,
      task_batch, RNG).grads
  want = jax.grad(lambda p: meta.meta_objective(spec, p, task_batch, RNG))(params)
  for name in ('body', 'head'):
    np.testing.assert_allclose(exact[name], want[name], rtol=1e-5, atol=1e-6)
  # first order: the body only sees d outer / d body at the adapted head.
  np.testing.assert_allclose(first['body'], jax.grad(loss)(adapted, batch, None)['body'],
                             rtol=1e-5)
  assert not np.allclose(first['head'], exact['head'], rtol=1e-3)


def test_tuple_groups_are_adapted_together():
  params, batch, loss = _linear_setup()
  adapted, stats = meta.adapt_stages((meta.Stage(('body', 'head'), loss, lr=0.1),), params,
                                     batch, RNG)
  g = jax.grad(loss)(params, batch, None)
  for name in ('body', 'head'):
    np.testing.assert_allclose(adapted[name], params[name] - 0.1 * g[name], rtol=1e-6)
  assert set(stats) == {'body+head_loss_before'}


@pytest.mark.parametrize('kwargs,message', [
    (dict(group='w', steps=0, lr=0.1), 'steps must be >= 1'),
    (dict(group='w'), 'needs an inner rule'),
    (dict(group='w', lr=0.1, optimizer=optax.sgd(0.1)), 'give lr alone'),
    (dict(group='w', lr=0.1, per_step_lr=True), 'per_step_lr needs learned_lr'),
    (dict(group='w', learned_lr='w'), 'also adapted'),
    (dict(group=3, lr=0.1), 'a name or a tuple of names'),
])
def test_bad_stages_raise_clear_errors(kwargs, message):
  with pytest.raises(ValueError, match=message):
    meta.Stage(loss=lambda p, b, r: 0.0, **kwargs)


def test_bad_params_and_specs_raise_clear_errors():
  params, batch, loss = _linear_setup()
  with pytest.raises(ValueError, match=r"no group\(s\) \['net'\]"):
    meta.adapt_stages((meta.Stage('net', loss, lr=0.1),), params, batch, RNG)
  with pytest.raises(ValueError, match='non-empty sequence of Stage'):
    meta.MetaSpec((), loss)
  with pytest.raises(ValueError, match="invalid MetaSpec: estimator: unknown 'nope'"):
    meta.MetaSpec((meta.Stage('head', loss, lr=0.1),), loss, estimator='nope')
  # One ValueError lists every problem of the spec.
  with pytest.raises(ValueError, match='invalid MetaSpec: ') as error:
    meta.MetaSpec((meta.Stage('head', loss, lr=0.1),), loss, estimator='nope',
                  strategy='nowhere', task_reduce='max', task_chunk=-1, task_groups=-2)
  message = str(error.value)
  for problem in ("estimator: unknown 'nope'", "strategy: 'nowhere' not in",
                  "task_reduce: 'max' not in", 'task_chunk: must be >= 0, got -1',
                  'task_groups: must be >= 0, got -2'):
    assert problem in message, (problem, message)
  with pytest.raises(ValueError, match='needs the outer step'):
    spec = meta.MetaSpec((meta.Stage('head', loss, lr=0.1),), loss, meta.MultiStep())
    meta.meta_gradient(spec, params, jax.tree.map(lambda x: x[None], batch), RNG)
  with pytest.raises(ValueError, match=r"no outer transform for params group\(s\) \['head'\]"):
    meta.group_optimizer({'body': optax.adam(1e-3)}).init(params)


# ---- every mode under every task strategy -------------------------------------------------
_GENERAL = '''
import jax, jax.numpy as jnp, numpy as np
from mmtl_jax import meta

def general_problem(tasks=4):
  """ANIL-like: body w [3, 4], head v [4]; a running-mean model state of the features; dropout
  on the support loss (so the per-task keys matter). 6 support + 6 query points per task."""
  rng = np.random.default_rng(0)
  params = {'body': jnp.asarray(rng.normal(size=(3, 4)), jnp.float32),
            'head': jnp.asarray(rng.normal(size=(4,)), jnp.float32)}
  batch = {'x': rng.normal(size=(tasks, 12, 3)).astype(np.float32),
           'y': rng.normal(size=(tasks, 12)).astype(np.float32)}
  state = {'mean': jnp.zeros((4,), jnp.float32)}

  def loss(p, st, b, r, part, drop):
    h = jnp.tanh(b['x'][part] @ p['body'])
    if drop:
      h = h * jax.random.bernoulli(r, 0.8, h.shape) / 0.8
    new = {'mean': 0.9 * st['mean'] + 0.1 * h.mean(axis=0)}
    return jnp.mean((h @ p['head'] - b['y'][part]) ** 2), new

  support = lambda p, st, b, r: loss(p, st, b, r, slice(0, 6), True)
  query = lambda p, st, b, r: loss(p, st, b, r, slice(6, 12), False)
  return params, batch, state, support, query

def spec_for(mode, strategy, support, query):
  stage = meta.Stage('head', support, steps=2, lr=0.3)
  stages = (meta.Stage('body', support, lr=0.1), stage) if mode != 'implicit' else (stage,)
  if mode == 'maml++':  # multi-step loss and derivative-order annealing (exact from step 1)
    return meta.MetaSpec(stages, query, meta.MultiStep(meta.Exact(first_order_until=1), 4),
                         strategy=strategy)
  estimator = meta.Implicit(lam=2.0) if mode == 'implicit' else mode
  return meta.MetaSpec(stages, query, estimator=estimator, strategy=strategy)

def gradients(strategy, modes, mesh=None):
  params, batch, state, support, query = general_problem()
  if strategy == 'sharded':
    params, state = meta.replicate(params, mesh), meta.replicate(state, mesh)
    batch = meta.shard_task_batch(batch, mesh)
  out = {}
  for mode in modes:
    spec = spec_for(mode, strategy, support, query)
    fn = jax.jit(lambda p, s, b, t: meta.meta_gradient(
        spec, p, b, jax.random.PRNGKey(3), state=s, step=t, mesh=mesh))
    for t in ((0, 2) if mode == 'maml++' else (0,)):
      out[f'{mode}{t}'] = [np.asarray(l).tolist()
                           for l in jax.tree.leaves(fn(params, state, batch, jnp.int32(t)))]
  return out
'''
MODES = ('exact', 'first_order', 'reptile', 'reptile_emotion', 'implicit', 'maml++')
RESULTS = tuple(f'{m}0' for m in MODES) + ('maml++2',)


def _close(a, b, rtol=1e-5):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    x, y = np.asarray(x), np.asarray(y)
    np.testing.assert_allclose(x, y, rtol=rtol, atol=rtol * max(1.0, float(np.abs(y).max())))


@pytest.mark.slow  # over 5 s alone
def test_every_mode_agrees_across_local_strategies():
  scope = {}
  exec(_GENERAL, scope)  # pylint: disable=exec-used
  results = {s: scope['gradients'](s, MODES) for s in ('loop', 'map', 'vmap')}
  for key in RESULTS:
    for s in ('map', 'vmap'):
      _close(results[s][key], results['loop'][key])
  assert not np.allclose(results['loop']['exact0'][0], results['loop']['first_order0'][0])
  assert not np.allclose(results['loop']['maml++0'][0], results['loop']['maml++2'][0])


@pytest.mark.slow  # a subprocess on 2 fake CPU devices
def test_every_mode_agrees_between_sharded_and_vmap_on_two_devices():
  script = _GENERAL + textwrap.dedent('''
      import json
      mesh = meta.default_mesh()
      assert mesh.devices.size == 2, mesh
      modes = %r
      print('RESULT ' + json.dumps({'sharded': gradients('sharded', modes, mesh),
                                    'vmap': gradients('vmap', modes)}))
  ''' % (MODES,))
  env = dict(os.environ, JAX_PLATFORMS='cpu',
             XLA_FLAGS='--xla_force_host_platform_device_count=2')
  proc = subprocess.run([sys.executable, '-c', script], env=env, capture_output=True,
                        text=True, timeout=600, check=False)
  lines = [l for l in proc.stdout.splitlines() if l.startswith('RESULT ')]
  assert lines, proc.stderr[-4000:]
  result = json.loads(lines[0][len('RESULT '):])
  for key in RESULTS:
    _close(result['sharded'][key], result['vmap'][key])


# ---- model state: Flax BatchNorm statistics threaded through the inner steps --------------
class _BNNet(nn.Module):
  @nn.compact
  def __call__(self, x):
    h = nn.Dense(5)(x)
    h = nn.BatchNorm(use_running_average=False, momentum=0.5)(h)
    return nn.Dense(1)(nn.relu(h))[:, 0]


def _bn_problem(dtype=jnp.float32):
  model = _BNNet()
  k = jax.random.split(jax.random.PRNGKey(3), 3)
  x = jax.random.normal(k[0], (2, 8, 3), dtype)
  variables = model.init(k[1], x[0])
  params = {'net': jax.tree.map(lambda v: v.astype(dtype), variables['params'])}
  state = jax.tree.map(lambda v: v.astype(dtype), variables['batch_stats'])
  batch = {'x': x, 'y': jax.random.normal(k[2], (2, 8), dtype)}

  def loss(p, st, b, r):
    pred, updates = model.apply({'params': p['net'], 'batch_stats': st}, b['x'],
                                mutable=['batch_stats'])
    return jnp.mean((pred - b['y']) ** 2), updates['batch_stats']

  return model, params, state, batch, loss


@pytest.mark.slow  # over 5 s alone
def test_batchnorm_statistics_are_threaded_through_the_inner_steps():
  _, params, state, batch, loss = _bn_problem()
  task = jax.tree.map(lambda x: x[0], batch)
  adapted, stats = meta.adapt_stages((meta.Stage('net', loss, steps=3, lr=0.1),), params,
                                     task, RNG, state=state)
  p, st = params, state  # a plain Python loop of 3 SGD steps, each updating the statistics
  for _ in range(3):
    (_, st_new), g = jax.value_and_grad(loss, has_aux=True)(p, st, task, None)
    p, st = jax.tree.map(lambda a, b: a - 0.1 * b, p, g), st_new
  for got, want in zip(jax.tree.leaves((adapted, stats['model_state'])),
                       jax.tree.leaves((p, st))):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  for got, initial in zip(jax.tree.leaves(stats['model_state']), jax.tree.leaves(state)):
    assert not np.allclose(got, initial)
  # Not threaded (every step from the initial state) would give other statistics.
  _, one = meta.adapt_stages((meta.Stage('net', loss, steps=1, lr=0.1),), params, task, RNG,
                             state=state)
  assert not np.allclose(one['model_state']['BatchNorm_0']['mean'], st['BatchNorm_0']['mean'])


@pytest.mark.slow  # float64 finite differences
def test_the_meta_step_returns_the_mean_adapted_state_and_exact_matches_fd():
  with jax.enable_x64(True):
    _, params, state, batch, loss = _bn_problem(jnp.float64)
    spec = meta.MetaSpec((meta.Stage('net', loss, steps=2, lr=0.2),), loss, strategy='loop')
    grads, _, new_state = meta.meta_gradient(spec, params, batch, RNG, state=state)
    per_task = [meta.adapt_stages(spec.stages, params, jax.tree.map(lambda x, t=t: x[t], batch),
                                  jax.random.fold_in(RNG, t), state=state)[1]['model_state']
                for t in range(2)]
    want = jax.tree.map(lambda a, b: (a + b) / 2, *per_task)
    for got, w in zip(jax.tree.leaves(new_state), jax.tree.leaves(want)):
      np.testing.assert_allclose(got, w, rtol=1e-12)
    objective = lambda p: meta.meta_objective(spec, p, batch, RNG, state=state)
    d = jax.tree.map(lambda l: jnp.sin(jnp.arange(l.size, dtype=jnp.float64)).reshape(l.shape),
                     params)
    eps = 1e-6
    fd = (objective(jax.tree.map(lambda p, v: p + eps * v, params, d))
          - objective(jax.tree.map(lambda p, v: p - eps * v, params, d))) / (2 * eps)
    analytic = sum(jnp.vdot(g, v) for g, v in zip(jax.tree.leaves(grads), jax.tree.leaves(d)))
    assert abs(float(fd - analytic)) <= 1e-6 * abs(float(analytic))


def test_a_loss_without_a_new_state_is_rejected_when_state_is_given():
  _, params, state, batch, loss = _bn_problem()
  scalar_only = lambda p, st, b, r: loss(p, st, b, r)[0]
  with pytest.raises(ValueError, match=r'must return \(scalar, new_state\)'):
    meta.adapt_stages((meta.Stage('net', scalar_only, lr=0.1),), params,
                      jax.tree.map(lambda x: x[0], batch), RNG, state=state)


def test_per_step_batchnorm_statistics_as_one_stage_per_step():
  """The documented MAML++ pattern: S one-step stages, stage s using and updating slot s of a
  state stacked on a leading [S] axis."""
  _, params, state, batch, loss = _bn_problem()
  task = jax.tree.map(lambda x: x[0], batch)
  stacked = jax.tree.map(lambda v: jnp.stack([v, v]), state)

  def step_loss(s):
    def fn(p, st, b, r):
      value, new = loss(p, jax.tree.map(lambda v: v[s], st), b, r)
      return value, jax.tree.map(lambda v, n: v.at[s].set(n), st, new)
    return fn

  stages = tuple(meta.Stage('net', step_loss(s), lr=0.1) for s in range(2))
  _, stats = meta.adapt_stages(stages, params, task, RNG, state=stacked)
  p, slots = params, []
  for _ in range(2):  # each step starts from the INITIAL statistics of its own slot
    (_, new), g = jax.value_and_grad(loss, has_aux=True)(p, state, task, None)
    p, slots = jax.tree.map(lambda a, b: a - 0.1 * b, p, g), slots + [new]
  want = jax.tree.map(lambda a, b: jnp.stack([a, b]), *slots)
  for got, w in zip(jax.tree.leaves(stats['model_state']), jax.tree.leaves(want)):
    np.testing.assert_allclose(got, w, rtol=1e-5, atol=1e-6)
  assert not np.allclose(stats['model_state']['BatchNorm_0']['mean'][0],
                         stats['model_state']['BatchNorm_0']['mean'][1])
