"""The meta library refuses bad settings when they are built and bad inputs when traced, each
with one line naming the field and the value; `make_step` guards against a non-finite
meta-gradient (issue 28)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mmtl_jax import meta

RNG = jax.random.PRNGKey(0)
LOSS = lambda p, b, r: 0.0


def _one_line(excinfo) -> str:
  message = str(excinfo.value)
  assert '\n' not in message, message
  return message


@pytest.mark.parametrize('kwargs, expected', [
    (dict(lr=float('inf')), 'lr must be finite, got inf'),   # was accepted
    (dict(lr=float('nan')), 'lr must be finite, got nan'),   # was accepted
    (dict(lr=-0.1), 'lr must be > 0, got -0.1 (a negative rate'),  # gradient ascent
    (dict(lr=0.0), 'lr must be > 0, got 0.0'),
    (dict(lr='0.1'), "lr must be a number, got '0.1'"),
    (dict(lr=0.1, steps=2.5), 'steps must be an int, got 2.5'),  # ran 3 steps
    (dict(lr=0.1, steps=True), 'steps must be an int, got True'),
    (dict(lr=0.1, steps=0), 'steps must be >= 1, got 0'),
])
def test_stage_refuses_bad_rates_and_step_counts(kwargs, expected):
  with pytest.raises(ValueError) as excinfo:
    meta.Stage('w', LOSS, **kwargs)
  assert _one_line(excinfo).startswith('Stage: ') and expected in str(excinfo.value)


def test_stage_accepts_numpy_numbers():
  stage = meta.Stage('w', LOSS, steps=np.int64(2), lr=np.float32(0.1))
  assert stage.steps == 2


@pytest.mark.parametrize('build, expected', [
    (lambda: meta.Implicit(lam=float('inf')), 'lam must be finite, got inf'),
    (lambda: meta.Implicit(lam=float('nan')), 'lam must be finite, got nan'),
    (lambda: meta.Implicit(cg_steps=2.5), 'cg_steps must be an int, got 2.5'),
    (lambda: meta.Implicit(cg_steps=True), 'cg_steps must be an int, got True'),
    (lambda: meta.Implicit(damping=float('nan')), 'damping must be finite, got nan'),
    (lambda: meta.Implicit(lam_damping=float('inf')), 'lam_damping must be finite, got inf'),
    (lambda: meta.Implicit(pull_back=1), 'pull_back must be a bool, got 1'),
    (lambda: meta.Exact(first_order_until=1.5), 'first_order_until must be an int, got 1.5'),
    (lambda: meta.MultiStep(anneal=True), 'anneal must be an int, got True'),
    (lambda: meta.MetaSpec((meta.Stage('w', LOSS, lr=0.1),), LOSS, task_chunk=1.5),
     'task_chunk: must be an int, got 1.5'),
    (lambda: meta.inner_adam(float('nan')), 'learning_rate must be finite, got nan'),
    (lambda: meta.inner_adam(0.1, b2=1.0), 'b2 must be < 1, got 1.0'),
    (lambda: meta.inner_adam(0.1, eps=0.0), 'eps must be > 0, got 0.0'),
])
def test_estimators_and_specs_refuse_non_finite_and_non_integer_settings(build, expected):
  with pytest.raises(ValueError) as excinfo:
    build()
  assert expected in _one_line(excinfo)


# --- inputs: refused at trace time, before any loss is called --------------------------------

def _counting_spec(calls, **stage):
  def loss(p, b, r):
    calls.append(1)
    return jnp.sum((b['x'] @ p['net']['w'] - b['y']) ** 2)

  stage = dict(dict(group='net', lr=0.1), **stage)
  return meta.MetaSpec((meta.Stage(loss=loss, **stage),), loss, strategy='map')


PARAMS = {'net': {'w': jnp.ones((3,))}}
BATCH = {'x': jnp.ones((4, 5, 3)), 'y': jnp.zeros((4, 5))}


@pytest.mark.parametrize('params, batch, stage, expected', [
    (PARAMS, {'x': jnp.ones((4, 5, 3)), 'y': 0.0}, {},
     "task_batch leaf ['y'] is a scalar: every leaf needs a leading task axis"),
    (PARAMS, {'x': jnp.ones((0, 5, 3)), 'y': jnp.zeros((0, 5))}, {}, 'task_batch has 0 tasks'),
    (PARAMS, {'x': jnp.ones((4, 5, 3)), 'y': jnp.zeros((3, 5))}, {},
     "share one leading task axis, got sizes ['x']: 4, ['y']: 3"),
    (PARAMS, {}, {}, 'task_batch has no arrays'),
    ([jnp.ones((3,))], BATCH, {}, 'params must be a dict of named groups'),
    (jnp.ones((3,)), BATCH, {}, 'params must be a dict of named groups'),
    (PARAMS, BATCH, dict(group='head'),
     "Stage 'head': params have no group(s) ['head']; groups are ['net']"),
    (PARAMS, BATCH, dict(group='net', lr=None, learned_lr='rates'),
     "Stage 'net': no learned-rate group 'rates' in params"),
])
@pytest.mark.parametrize('entry', ['meta_gradient', 'jit', 'meta_objective', 'make_step'])
def test_bad_inputs_raise_one_line_meta_input_errors_before_computing(params, batch, stage,
                                                                      expected, entry):
  calls = []
  spec = _counting_spec(calls, **stage)
  run = {
      'meta_gradient': lambda: meta.meta_gradient(spec, params, batch, RNG),
      'jit': lambda: jax.jit(lambda p, b: meta.meta_gradient(spec, p, b, RNG))(params, batch),
      'meta_objective': lambda: meta.meta_objective(spec, params, batch, RNG),
      'make_step': lambda: meta.make_step(spec, optax.sgd(0.1))[1](
          params, meta.MetaState((), jnp.int32(0)), batch, RNG),
  }[entry]
  with pytest.raises(meta.MetaInputError) as excinfo:
    run()
  assert expected in _one_line(excinfo)
  assert isinstance(excinfo.value, ValueError)
  assert not calls  # nothing was traced, let alone computed


def test_valid_inputs_still_run():
  calls = []
  out = meta.meta_gradient(_counting_spec(calls), PARAMS, BATCH, RNG)
  assert calls and np.all(np.isfinite(out.grads['net']['w']))
  assert meta.num_tasks({'a': np.zeros((2, 1)), 'b': [np.zeros(2)]}) == 2


# --- make_step's guard against a non-finite meta-gradient ------------------------------------

def _step_setup(on_nonfinite, **options):
  loss = lambda p, b, r: jnp.mean((b['x'] @ p['net']['w'] - b['y']) ** 2)
  spec = meta.recipes.maml(loss, loss, groups='net', steps=2, lr=0.1, strategy='vmap',
                           task_groups=1, **options)
  opt = meta.group_optimizer({'net': optax.adam(1e-2)})
  return meta.make_step(spec, opt, on_nonfinite=on_nonfinite)


def _batch(seed, nan_task=None):
  x = jax.random.normal(jax.random.PRNGKey(seed), (4, 5, 3))
  y = x @ jnp.arange(3.0)
  if nan_task is not None:
    y = y.at[nan_task, 0].set(jnp.nan)
  return {'x': x, 'y': y}


def _assert_bitwise(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(u), np.asarray(v))


def test_skip_is_bit_identical_to_the_unguarded_step_when_finite():
  (init, skip), (_, plain) = _step_setup('skip'), _step_setup('ignore')
  skip, plain = jax.jit(skip), jax.jit(plain)
  p1 = p2 = PARAMS
  s1 = s2 = init(PARAMS)
  for i in range(3):
    p1, s1, m1 = skip(p1, s1, _batch(i), jax.random.fold_in(RNG, i))
    p2, s2, m2 = plain(p2, s2, _batch(i), jax.random.fold_in(RNG, i))
    _assert_bitwise((p1, s1), (p2, s2))
    assert float(m1['nonfinite']) == 0.0 and 'nonfinite' not in m2
    assert set(m1) == set(m2) | {'nonfinite'}


def test_skip_keeps_params_and_optimiser_state_on_a_nan_task_and_reports_it():
  init, step = _step_setup('skip')
  step = jax.jit(step)
  params, state, _ = step(PARAMS, init(PARAMS), _batch(0), RNG)
  new_params, new_state, metrics = step(params, state, _batch(1, nan_task=2), RNG)
  assert float(metrics['nonfinite']) == 1.0
  assert not np.isfinite(float(metrics['grad_norm']))
  _assert_bitwise((new_params, new_state.opt, new_state.model),
                  (params, state.opt, state.model))
  assert int(new_state.step) == 2  # the counter advances: the schedules see outer steps
  # and the next finite step trains on from there
  after, _, metrics = step(new_params, new_state, _batch(2), RNG)
  assert float(metrics['nonfinite']) == 0.0
  assert np.all(np.isfinite(after['net']['w']))
  assert not np.array_equal(after['net']['w'], new_params['net']['w'])
  # without the guard one NaN task turns every parameter NaN
  init, plain = _step_setup('ignore')
  bad, _, _ = jax.jit(plain)(params, state, _batch(1, nan_task=2), RNG)
  assert np.all(np.isnan(bad['net']['w']))


def test_raise_raises_eagerly_and_through_the_metric_under_jit():
  init, step = _step_setup('raise')
  state = init(PARAMS)
  with pytest.raises(meta.NonFiniteMetaGradient, match='non-finite meta-gradient'):
    step(PARAMS, state, _batch(1, nan_task=0), RNG)
  params, new_state, metrics = jax.jit(step)(PARAMS, state, _batch(1, nan_task=0), RNG)
  _assert_bitwise(params, PARAMS)
  with pytest.raises(meta.NonFiniteMetaGradient, match='at step 0'):
    meta.raise_if_nonfinite(metrics, step=state.step)
  _, _, metrics = jax.jit(step)(PARAMS, state, _batch(1), RNG)
  meta.raise_if_nonfinite(metrics)  # finite: nothing to raise


def test_make_step_refuses_an_unknown_policy():
  with pytest.raises(ValueError, match="on_nonfinite must be one of .* got 'warn'"):
    _step_setup('warn')


def test_all_finite():
  assert bool(meta.all_finite({'a': jnp.ones(3), 'b': jnp.arange(2)}))
  assert not bool(meta.all_finite({'a': jnp.array([1.0, jnp.inf])}))
  assert bool(meta.all_finite({}))
