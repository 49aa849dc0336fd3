"""The stage API: MMTL through it is bit-identical to the original two-loop code; stages see
the groups adapted before them; ANIL leaves the body alone; errors are clear.

The reference below is the pre-stage MMTL implementation (meta/inner.py and meta/outer.py as
they were), frozen here verbatim but for names, so that any drift of the stage path (rng
derivation, update formula, loop structure) shows up as a changed bit.
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
from mmtl_jax.meta import strategy as strategy_lib
from mmtl_jax.ser import losses as ser

RNG = jax.random.PRNGKey(7)


# ---- frozen reference: the MMTL code before the stage API --------------------------------
def _ref_sgd(params, grads, lr):
  return jax.tree.map(lambda p, g: p - jnp.asarray(lr, p.dtype) * g.astype(p.dtype),
                      params, grads)


def _ref_sgd_scan(loss_fn, params, rng, lr, steps, first_order, remat):
  def step(p, s):
    loss, g = jax.value_and_grad(loss_fn)(p, jax.random.fold_in(rng, s))
    if first_order:
      g = jax.lax.stop_gradient(g)
    return _ref_sgd(p, g, lr), loss

  if remat:
    step = jax.checkpoint(step, prevent_cse=False)
  if steps == 1:
    params, loss = step(params, jnp.int32(0))
    return params, loss[None]
  return jax.lax.scan(step, params, jnp.arange(steps))


def _ref_inner_adapt(params, batch, rng, inner_loss, transfer_loss, *, alpha, beta,
                     inner_steps=1, first_order=False, remat=False):
  theta, phi = params['theta'], params['phi']
  theta_adapted, inner_losses = _ref_sgd_scan(
      lambda t, r: inner_loss(t, batch, r), theta, jax.random.fold_in(rng, 0), alpha,
      inner_steps, first_order, remat)
  stats = {'inner_loss_before': inner_losses[0]}
  if jax.tree.leaves(phi):
    phi_adapted, transfer_losses = _ref_sgd_scan(
        lambda p, r: transfer_loss(theta_adapted, p, batch, r), phi,
        jax.random.fold_in(rng, 1), beta, inner_steps, first_order, remat)
    stats['transfer_loss'] = transfer_losses[0]
  else:
    phi_adapted = phi
  return {'theta': theta_adapted, 'phi': phi_adapted}, stats


def _ref_task_meta_gradient(params, batch, rng, inner_loss, transfer_loss, cfg):
  outer_rng = jax.random.fold_in(rng, 2)

  def adapt(p, first_order):
    return _ref_inner_adapt(p, batch, rng, inner_loss, transfer_loss, alpha=cfg.alpha,
                            beta=cfg.beta, inner_steps=cfg.inner_steps,
                            first_order=first_order, remat=cfg.remat)

  def outer(adapted):
    return transfer_loss(adapted['theta'], adapted['phi'], batch, outer_rng)

  grads, loss, adapted, stats = meta.MODES.get(cfg.mode)(params, adapt, outer)
  metrics = dict(stats, outer_loss=loss)
  if cfg.log_inner_after:
    metrics['inner_loss_after'] = inner_loss(adapted['theta'], batch,
                                             jax.random.fold_in(rng, 3))
  return grads, metrics


def _ref_meta_gradient(params, task_batch, rng, inner_loss, transfer_loss, cfg):
  def per_task(batch, task_index):
    return _ref_task_meta_gradient(params, batch, jax.random.fold_in(rng, task_index),
                                   inner_loss, transfer_loss, cfg)

  n = strategy_lib.num_tasks(task_batch)
  grads, metrics = strategy_lib.sum_over_tasks(per_task, task_batch, cfg.strategy,
                                               cfg.task_chunk)
  scale = 1.0 if cfg.task_reduce == 'sum' else 1.0 / n
  grads = jax.tree.map(lambda g: g * jnp.asarray(scale, g.dtype), grads)
  return grads, jax.tree.map(lambda m: m / n, metrics)
# ---- end of the frozen reference ---------------------------------------------------------


@pytest.fixture(name='ser_setup', scope='module')
def fixture_ser_setup(tiny_model):
  model = tiny_model(dropout=0.25)  # dropout: every loss's key matters
  model.conv_features, model.conv_kernels = (2,), ((3, 3),)  # one conv block: compiles faster
  params = ser.init_params(model, jax.random.PRNGKey(0), (1, 8, 8))
  batch = ser.random_batch(2, 3, 8, 8, seed=2)
  return params, batch, *ser.make_losses(model)


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


def _assert_bit_identical(setup, cfg):
  params, batch, inner_loss, transfer_loss = setup
  want = jax.jit(lambda p: _ref_meta_gradient(p, batch, RNG, inner_loss, transfer_loss,
                                              cfg))(params)
  got = jax.jit(lambda p: meta.meta_gradient(p, batch, RNG, inner_loss, transfer_loss,
                                             cfg))(params)
  assert jax.tree.structure(got) == jax.tree.structure(want)
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_array_equal(g, w)
  assert float(optax.tree.norm(got[0])) > 0


@pytest.mark.parametrize('mode', ['exact', 'first_order', 'reptile', 'reptile_emotion'])
@pytest.mark.parametrize('strategy,steps', [('loop', 2), ('vmap', 1), ('vmap', 3)])
def test_mmtl_through_stages_is_bit_identical_to_the_original_code(mode, strategy, steps):
  cfg = meta.MetaConfig(mode=mode, strategy=strategy, inner_steps=steps, alpha=0.3, beta=0.2)
  _assert_bit_identical(_mlp_mmtl(), cfg)


def test_mmtl_on_the_ser_model_is_bit_identical_to_the_original_code(ser_setup):
  _assert_bit_identical(ser_setup, meta.MetaConfig(mode='exact', strategy='loop',
                                                   inner_steps=2, alpha=0.3, beta=0.2))


def test_mmtl_inner_adapt_is_bit_identical_with_empty_phi():
  params, batch, inner_loss, transfer_loss = _mlp_mmtl()
  params = {'theta': params['theta'], 'phi': {}}
  task = jax.tree.map(lambda x: x[0], batch)
  inner_only = lambda theta, b, r: inner_loss(theta, b, r)
  for first_order in (False, True):
    kw = dict(alpha=0.3, beta=0.2, inner_steps=2, first_order=first_order)
    want = jax.jit(lambda p: _ref_inner_adapt(p, task, RNG, inner_only, transfer_loss,
                                              **kw))(params)
    got = jax.jit(lambda p: meta.inner_adapt(p, task, RNG, inner_only, transfer_loss,
                                             **kw))(params)
    assert set(got[1]) == {'inner_loss_before'}  # eq. 5 skipped: no transfer_loss stat
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
      np.testing.assert_array_equal(g, w)


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
  exact, _ = meta.stage_meta_gradient(spec, params, task_batch, RNG)
  first = meta.stage_meta_gradient(
      meta.MetaSpec(spec.stages, loss, mode='first_order', strategy='loop'), params,
      task_batch, RNG)[0]
  want = jax.grad(lambda p: meta.stage_objective(spec, p, task_batch, RNG))(params)
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
  with pytest.raises(ValueError, match='not registered|unknown|exact'):
    meta.MetaSpec((meta.Stage('head', loss, lr=0.1),), loss, mode='nope')
  with pytest.raises(ValueError, match='needs the outer step'):
    spec = meta.MetaSpec((meta.Stage('head', loss, lr=0.1),), loss, multi_step=True)
    meta.stage_meta_gradient(spec, params, jax.tree.map(lambda x: x[None], batch), RNG)
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
    return meta.MetaSpec(stages, query, strategy=strategy, multi_step=True,
                         multi_step_anneal=4, first_order_until=1)
  return meta.MetaSpec(stages, query, mode=mode, strategy=strategy, implicit_lam=2.0)

def gradients(strategy, modes, mesh=None):
  params, batch, state, support, query = general_problem()
  if strategy == 'sharded':
    params, state = meta.replicate(params, mesh), meta.replicate(state, mesh)
    batch = meta.shard_task_batch(batch, mesh)
  out = {}
  for mode in modes:
    spec = spec_for(mode, strategy, support, query)
    fn = jax.jit(lambda p, s, b, t: meta.stage_meta_gradient(
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


def test_every_mode_agrees_across_local_strategies():
  scope = {}
  exec(_GENERAL, scope)  # pylint: disable=exec-used
  results = {s: scope['gradients'](s, MODES) for s in ('loop', 'map', 'vmap')}
  for key in RESULTS:
    for s in ('map', 'vmap'):
      _close(results[s][key], results['loop'][key])
  assert not np.allclose(results['loop']['exact0'][0], results['loop']['first_order0'][0])
  assert not np.allclose(results['loop']['maml++0'][0], results['loop']['maml++2'][0])


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


def test_the_meta_step_returns_the_mean_adapted_state_and_exact_matches_fd():
  with jax.enable_x64(True):
    _, params, state, batch, loss = _bn_problem(jnp.float64)
    spec = meta.MetaSpec((meta.Stage('net', loss, steps=2, lr=0.2),), loss, strategy='loop')
    grads, _, new_state = meta.stage_meta_gradient(spec, params, batch, RNG, state=state)
    per_task = [meta.adapt_stages(spec.stages, params, jax.tree.map(lambda x, t=t: x[t], batch),
                                  jax.random.fold_in(RNG, t), state=state)[1]['model_state']
                for t in range(2)]
    want = jax.tree.map(lambda a, b: (a + b) / 2, *per_task)
    for got, w in zip(jax.tree.leaves(new_state), jax.tree.leaves(want)):
      np.testing.assert_allclose(got, w, rtol=1e-12)
    objective = lambda p: meta.stage_objective(spec, p, batch, RNG, state=state)
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
