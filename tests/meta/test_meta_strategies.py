"""Task-axis strategies agree; Reptile matches its closed form; the step is traced once.

The meta package is model-agnostic, so these tests use a tiny generic conv model (fast to
compile) through MMTL's spec (`meta.recipes.mmtl`); the SER model is exercised in
test_meta_gradients.py and test_ser.py.

Internals tested (imported inside the tests that use them): `mmtl_jax.meta._tasks`'s
`_cpu_cores` (monkeypatched under `resolve_groups`), `padded_num_tasks` and `pad_tasks`.
"""

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmtl_jax import meta


def conv_losses():
  """A tiny generic (non-SER) conv model whose losses use their rng (a dropout mask).

  theta: {'kernel': [3, 3, 1, 2], 'w': [2]}; phi: {'a': [], 'b': []}. batch per task:
  'x' [B, 6, 6], 'y_aux' [B], 'y' [B].
  """

  def features(theta, x, rng):
    h = jax.lax.conv_general_dilated(x[..., None], theta['kernel'], (1, 1), 'SAME',
                                     dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    h = jax.nn.relu(h) * jax.random.bernoulli(rng, 0.8, h.shape)
    return h.mean(axis=(1, 2)) @ theta['w']  # [B]

  def inner_loss(theta, batch, rng):
    return jnp.mean((features(theta, batch['x'], rng) - batch['y_aux']) ** 2)

  def transfer_loss(theta, phi, batch, rng):
    pred = phi['a'] * features(theta, batch['x'], rng) + phi['b']
    return jnp.mean((pred - batch['y']) ** 2)

  return inner_loss, transfer_loss


def conv_problem(num_tasks):
  rng = np.random.default_rng(0)
  params = {'theta': {'kernel': jnp.asarray(rng.normal(size=(3, 3, 1, 2)), jnp.float32),
                      'w': jnp.asarray(rng.normal(size=(2,)), jnp.float32)},
            'phi': {'a': jnp.float32(0.5), 'b': jnp.float32(0.1)}}
  batch = {'x': rng.normal(size=(num_tasks, 5, 6, 6)).astype(np.float32),
           'y_aux': rng.normal(size=(num_tasks, 5)).astype(np.float32),
           'y': rng.normal(size=(num_tasks, 5)).astype(np.float32)}
  return params, batch


@pytest.fixture(scope='module')
def problem():
  return (*conv_problem(4), *conv_losses())


def _grads(problem, **options):
  params, batch, inner_loss, transfer_loss = problem
  spec = meta.recipes.mmtl(inner_loss, transfer_loss, alpha=0.3, beta=0.2, **options)
  return jax.jit(lambda p: meta.meta_gradient(spec, p, batch, jax.random.PRNGKey(7)).grads)(
      params)


def _assert_trees_close(a, b, rtol=2e-5, atol=1e-7):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(x, y, rtol=rtol, atol=atol)


@pytest.mark.slow  # over 5 s alone
@pytest.mark.parametrize('mode', ['exact', 'reptile'])  # differentiated / not
def test_vmap_map_loop_chunks_and_groups_agree(problem, mode):
  # One vmap over all 4 tasks is the reference; the default groups (on a 2-core CPU: 4 of
  # one task each) and uneven groups 1 + 2 + 1 must give the same sums: a group dropped,
  # counted twice or sliced off by one would not.
  reference = _grads(problem, mode=mode, strategy='vmap', task_groups=1)
  for kwargs in (dict(strategy='map'), dict(strategy='loop'),
                 dict(strategy='vmap', task_chunk=2), dict(strategy='vmap'),
                 dict(strategy='vmap', task_groups=3)):
    _assert_trees_close(_grads(problem, mode=mode, **kwargs), reference)


def test_task_groups_resolution(monkeypatch):
  from mmtl_jax.meta import _tasks  # internal: the core count behind resolve_task_groups
  assert meta.resolve_task_groups(3, 8) == 3
  assert meta.resolve_task_groups(16, 8) == 8  # capped at the task count
  monkeypatch.setattr(_tasks, '_cpu_cores', lambda: 2)
  expected = 4 if jax.default_backend() == 'cpu' else 1  # two per core on CPU only
  assert meta.resolve_task_groups(0, 8) == expected
  assert meta.resolve_task_groups(0, 3) == min(3, expected)
  loss = lambda *args: 0.0
  with pytest.raises(ValueError, match='invalid MetaSpec: task_groups: must be >= 0'):
    meta.recipes.mmtl(loss, loss, alpha=0.1, beta=0.1, task_groups=-1)


def test_grouped_vmap_runs_the_groups_as_separate_vmaps():
  # The gain on CPU comes from independent groups; a version that quietly fell back to one
  # vmap would still give equal sums, so count the vmapped calls by batch size.
  def fn(batch, task_index):
    return jnp.sum(batch) * (task_index + 1)

  batch = jnp.arange(5 * 2, dtype=jnp.float32).reshape(5, 2)
  total = meta.sum_over_tasks(fn, batch, 'vmap', task_groups=2)
  expected = sum(float(batch[t].sum()) * (t + 1) for t in range(5))
  assert float(total) == pytest.approx(expected)
  grouped = []
  jaxpr = jax.make_jaxpr(lambda b: meta.sum_over_tasks(fn, b, 'vmap', task_groups=2))(batch)
  for eqn in jaxpr.jaxpr.eqns:
    if eqn.primitive.name in ('jit', 'pjit'):  # renamed across jax versions
      grouped.append(eqn.invars[0].aval.shape[0])
  assert sorted(grouped) == [2, 3]  # 5 tasks as near-equal groups of 2 and 3


def test_auto_strategy_is_loop_on_cpu():
  assert meta.resolve_strategy('auto') == ('loop' if jax.default_backend() == 'cpu' else 'vmap')


def test_chunk_must_divide_the_tasks(problem):
  with pytest.raises(ValueError, match='task_chunk'):
    _grads(problem, mode='reptile', strategy='vmap', task_chunk=3)


_SHARDED_SCRIPT = textwrap.dedent('''
    import json, sys, jax, numpy as np
    sys.path.insert(0, %r)
    from test_meta_strategies import conv_losses, conv_problem
    from mmtl_jax import meta
    assert jax.device_count() == 4, jax.devices()
    params, batch = conv_problem(8)
    losses = conv_losses()
    def run(**kw):
      spec = meta.recipes.mmtl(*losses, mode='exact', alpha=0.3, beta=0.2, **kw)
      return jax.jit(lambda p: meta.meta_gradient(spec, p, batch,
                                                  jax.random.PRNGKey(7)).grads)(params)
    def diff(a, b):
      return max(float(np.max(np.abs(x - y)) / (np.max(np.abs(y)) + 1e-12))
                 for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
    ref = run(strategy='vmap')
    out = {'sharded': diff(run(strategy='sharded'), ref),
           'sharded_chunk': diff(run(strategy='sharded', task_chunk=1), ref),
           'map': diff(run(strategy='map'), ref)}
    print('RESULT ' + json.dumps(out))
''' % os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow  # a subprocess on 4 fake CPU devices
def test_sharded_over_four_fake_devices_agrees_with_vmap():
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=4',
             JAX_PLATFORMS='cpu')
  out = subprocess.run([sys.executable, '-c', _SHARDED_SCRIPT], env=env, capture_output=True,
                       text=True, timeout=300)
  lines = [l for l in out.stdout.splitlines() if l.startswith('RESULT ')]
  assert lines, out.stderr[-3000:]
  diffs = json.loads(lines[0][len('RESULT '):])
  assert all(d < 1e-5 for d in diffs.values()), diffs


def test_reptile_direction_matches_closed_form_on_a_quadratic():
  """inner_loss = |theta - a_i|^2 / 2, transfer_loss = |phi - b_i * theta|^2 / 2, 2 inner steps.

  By hand: theta'_i = a_i + (1 - alpha)^2 (theta - a_i);
           phi'_i = b_i theta'_i + (1 - beta)^2 (phi - b_i theta'_i);
           direction = mean_i (params - params'_i).
  """
  alpha, beta = 0.1, 0.3
  theta, phi = jnp.array([1.0, -2.0, 0.5]), jnp.array([0.3, 0.7, -1.0])
  a = jnp.array([[0.0, 1.0, 2.0], [3.0, -1.0, 0.5], [-2.0, 0.0, 1.0]])
  b = jnp.array([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0], [2.0, 2.0, 2.0]])
  inner_loss = lambda t, batch, rng: 0.5 * jnp.sum((t - batch['a']) ** 2)
  transfer_loss = lambda t, p, batch, rng: 0.5 * jnp.sum((p - batch['b'] * t) ** 2)
  spec = meta.recipes.mmtl(inner_loss, transfer_loss, mode='reptile', strategy='vmap',
                           steps=2, alpha=alpha, beta=beta)
  direction = meta.meta_gradient(spec, {'theta': theta, 'phi': phi}, {'a': a, 'b': b},
                                 jax.random.PRNGKey(0)).grads
  theta_i = a + (1 - alpha) ** 2 * (theta - a)
  phi_i = b * theta_i + (1 - beta) ** 2 * (phi - b * theta_i)
  np.testing.assert_allclose(direction['theta'], (theta - theta_i).mean(0), rtol=1e-6)
  np.testing.assert_allclose(direction['phi'], (phi - phi_i).mean(0), rtol=1e-6)

  # task_reduce='sum' is what eqs. 6-7 write: n times the mean.
  summed = meta.meta_gradient(
      meta.recipes.mmtl(inner_loss, transfer_loss, mode='reptile', strategy='map',
                        steps=2, alpha=alpha, beta=beta, task_reduce='sum'),
      {'theta': theta, 'phi': phi}, {'a': a, 'b': b}, jax.random.PRNGKey(0)).grads
  np.testing.assert_allclose(summed['theta'], 3 * direction['theta'], rtol=1e-6)


@pytest.mark.slow  # over 5 s alone
def test_step_applies_adam_by_name_and_is_traced_once(problem):
  params, batch, inner_loss, transfer_loss = problem
  traces = []

  def counting_inner_loss(theta, b, rng):
    traces.append(1)  # a Python side effect: runs only while tracing
    return inner_loss(theta, b, rng)

  options = dict(mode='first_order', strategy='vmap', alpha=0.3, beta=0.2,
                 log_inner_after=True)
  spec = meta.recipes.mmtl(counting_inner_loss, transfer_loss, **options)
  # phi frozen through its own learning rate: proves the partition is by name.
  init_fn, step_fn = meta.make_step(spec, meta.recipes.mmtl_optimizer(1e-2, gamma_phi=0.0))
  step = jax.jit(step_fn, donate_argnums=(0, 1))
  p = jax.tree.map(jnp.copy, params)
  opt_state = init_fn(p)
  assert isinstance(opt_state, meta.MetaState) and int(opt_state.step) == 0
  plain = meta.recipes.mmtl(inner_loss, transfer_loss, **options)
  expected_grads = jax.jit(lambda q: meta.meta_gradient(plain, q, batch,
                                                        jax.random.PRNGKey(0)).grads)(params)
  p, opt_state, metrics = step(p, opt_state, batch, jax.random.PRNGKey(0))
  # Adam's first step: -gamma * g / (|g| + eps) on theta; phi frozen by its name's lr.
  first = jax.tree.map(lambda t, g: t - 1e-2 * g / (jnp.abs(g) + 1e-8), params['theta'],
                       expected_grads['theta'])
  _assert_trees_close(p['theta'], first, rtol=1e-5, atol=1e-6)
  _assert_trees_close(p['phi'], params['phi'], rtol=0, atol=0)
  n_traces = len(traces)
  assert n_traces > 0
  for i in range(1, 3):
    p, opt_state, metrics = step(p, opt_state, batch, jax.random.fold_in(jax.random.PRNGKey(0), i))
  assert len(traces) == n_traces  # no retracing from one step to the next
  assert step._cache_size() == 1  # pylint: disable=protected-access
  assert int(opt_state.step) == 3 and opt_state.model is None
  assert set(metrics) == {'inner_loss_before', 'inner_loss_after', 'transfer_loss_before',
                          'outer_loss', 'grad_norm', 'nonfinite'}
  assert all(np.isfinite(v) for v in jax.tree.leaves(metrics))
  _assert_trees_close(p['phi'], params['phi'], rtol=0, atol=0)


def test_params_must_be_named_theta_and_phi():
  spec = meta.recipes.mmtl(lambda t, b, r: jnp.sum(t), lambda t, p, b, r: jnp.sum(t),
                           alpha=0.1, beta=0.1)
  task_batch, rng = {'a': jnp.zeros((1, 2))}, jax.random.PRNGKey(0)
  with pytest.raises(ValueError, match=r"params have no group\(s\) \['theta'\]"):
    meta.meta_gradient(spec, {'w': jnp.zeros(2)}, task_batch, rng)
  with pytest.raises(ValueError, match=r"params have no group\(s\) \['phi'\]"):
    meta.meta_gradient(spec, {'theta': jnp.zeros(2)}, task_batch, rng)


def test_pad_tasks_appends_copies_of_task_zero():
  from mmtl_jax.meta import _tasks  # internal: the padding of strategy 'sharded'
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:1] * 1), ('tasks',))
  assert _tasks.padded_num_tasks(5, mesh) == 5
  batch = {'x': np.arange(6, dtype=np.float32).reshape(3, 2), 'y': np.arange(3)}
  padded = _tasks.pad_tasks(batch, 5)
  np.testing.assert_array_equal(padded['x'], [[0, 1], [2, 3], [4, 5], [0, 1], [0, 1]])
  np.testing.assert_array_equal(padded['y'], [0, 1, 2, 0, 0])
  assert _tasks.pad_tasks(batch, 3) is batch
  with pytest.raises(ValueError, match='cannot pad 3 tasks down to 2'):
    _tasks.pad_tasks(batch, 2)
