"""Meta modes on the tiny SER model: the default lets theta see the emotion loss (Reptile with
one inner step does not), and 'reptile_emotion' is the Reptile direction plus FOMAML's gradient.
(MAML++'s multi-step loss and annealing on a general `MetaSpec`: tests/meta/test_meta_modes.py.)
"""

import dataclasses
import inspect

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mmtl_jax import meta
from mmtl_jax.configs import base
from mmtl_jax.meta.spec import RNG_OUTER
from mmtl_jax.ser import losses as ser

RNG = jax.random.PRNGKey(3)

# recipes.mmtl's keywords as the old MetaConfig defaulted them (alpha, beta are required).
DEFAULTS = dict(alpha=0.01, beta=0.01, steps=1, mode='first_order')


@pytest.fixture(name='setup', scope='module')
def fixture_setup(tiny_model):
  """(params, batch of 2 tasks, inner_loss, transfer_loss, {options: jitted meta-gradient},
  config.model) on the tiny model, dropout on so that the tests also see each loss's rng."""
  model = tiny_model(dropout=0.25)
  params = ser.init_params(model, jax.random.PRNGKey(0), (1, 8, 8))
  batch = ser.random_batch(2, 3, 8, 8, seed=0)
  return (params, batch, *ser.make_losses(model), {}, model)


def _mmtl(setup, **options):
  """MMTL's spec of the setup's losses: DEFAULTS updated by `options`."""
  _, _, inner_loss, transfer_loss, _, _ = setup
  return meta.recipes.mmtl(inner_loss, transfer_loss, **dict(DEFAULTS, **options))


def _meta_gradient(setup, batch=None, spec=None, **options):
  """The meta-gradient of `setup` (or of `batch`) under `spec` (default `_mmtl(setup,
  **options)`), compiled once per spec / options."""
  params, default_batch, _, _, jitted, _ = setup
  key = spec if spec is not None else tuple(sorted(options.items()))
  if key not in jitted:
    spec = spec if spec is not None else _mmtl(setup, **options)
    jitted[key] = jax.jit(lambda p, b: meta.meta_gradient(spec, p, b, RNG).grads)
  return jitted[key](params, default_batch if batch is None else batch)


def _assert_trees_close(got, want, rtol):
  """Leaf by leaf, relative to each leaf's largest entry (small entries cancel in sums)."""
  got_leaves, want_leaves = jax.tree.leaves(got), jax.tree.leaves(want)
  assert jax.tree.structure(got) == jax.tree.structure(want)
  for g, w in zip(got_leaves, want_leaves):
    np.testing.assert_allclose(g, w, rtol=rtol, atol=rtol * float(np.abs(w).max()))


def _other_targets(batch):
  """The same batch (inputs, auxiliary labels) with every emotion label and weight changed."""
  other = dict(batch)
  other['target'] = (batch['target'] + 1) % 4
  other['target_weight'] = batch['target_weight'][:, ::-1].copy()
  return other


def _max_relative_change(a, b):
  return max(float(np.abs(x - y).max() / np.abs(x).max())
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.mark.slow  # over 5 s alone
def test_default_mode_gives_theta_the_emotion_gradient(setup):
  # Through config.meta as training builds it (ser.mmtl_spec), so a mode set in
  # configs/base.py is caught too.
  config = base.get_config()
  config.model = setup[5]
  config.meta.strategy = 'loop'
  spec = ser.mmtl_spec(config)
  assert spec.estimator == meta.estimator(
      inspect.signature(meta.recipes.mmtl).parameters['mode'].default)
  batch = setup[1]
  before = _meta_gradient(setup, spec=spec)
  after = _meta_gradient(setup, _other_targets(batch), spec=spec)
  # Every theta leaf moves when only the emotion labels change: theta sees the emotion loss.
  for name in before['theta']:
    assert _max_relative_change(before['theta'][name], after['theta'][name]) > 1e-2, name


@pytest.mark.slow  # over 5 s alone
def test_reptile_with_one_inner_step_gives_theta_no_emotion_gradient(setup):
  """The degeneracy the default avoids: theta - theta' = alpha * grad L_aux(theta)."""
  options = dict(mode='reptile', strategy='loop', steps=1)
  batch = setup[1]
  before = _meta_gradient(setup, **options)
  after = _meta_gradient(setup, _other_targets(batch), **options)
  _assert_trees_close(after['theta'], before['theta'], rtol=1e-6)
  assert _max_relative_change(before['phi'], after['phi']) > 1e-2  # the change did reach phi


@pytest.mark.slow  # over 5 s alone
def test_reptile_emotion_is_reptile_plus_first_order(setup):
  # Large inner rates, so that the Reptile part is not negligible next to the gradient.
  grads = {mode: _meta_gradient(setup, mode=mode, strategy='loop', alpha=0.3, beta=0.3)
           for mode in ('reptile', 'first_order', 'reptile_emotion')}
  expected = jax.tree.map(jnp.add, grads['reptile'], grads['first_order'])
  _assert_trees_close(grads['reptile_emotion'], expected, rtol=1e-6)
  for part in ('reptile', 'first_order'):  # both parts matter in every leaf group
    assert _max_relative_change(grads['reptile_emotion'], grads[part]) > 1e-2, part


@pytest.mark.slow  # over 5 s alone
def test_reptile_emotion_agrees_across_task_strategies(setup):
  grads = {s: _meta_gradient(setup, mode='reptile_emotion', strategy=s)
           for s in ('loop', 'vmap', 'map')}
  for s in ('vmap', 'map'):
    _assert_trees_close(grads[s], grads['loop'], rtol=1e-5)


@pytest.mark.slow  # over 5 s alone
def test_reptile_emotion_matches_a_plain_loop_over_tasks(setup):
  """By hand: per task, adapt first order, take the outer gradient at the adapted params with
  the task's outer key, add params - adapted; mean over tasks."""
  params, batch, _, transfer_loss, _, _ = setup
  options = dict(mode='reptile_emotion', strategy='loop', steps=2, alpha=0.2, beta=0.1)
  stages = _mmtl(setup, **options).stages

  @jax.jit
  def one_task(task, rng):
    adapted, _ = meta.adapt_stages(stages, params, task, rng, first_order=True)
    grad = jax.grad(lambda a: transfer_loss(a['theta'], a['phi'], task,
                                            jax.random.fold_in(rng, RNG_OUTER)))(adapted)
    return jax.tree.map(lambda p, a, g: p - a + g, params, adapted, grad)

  num_tasks = batch['x'].shape[0]
  directions = [one_task(jax.tree.map(lambda leaf, t=t: leaf[t], batch),
                         jax.random.fold_in(RNG, t)) for t in range(num_tasks)]
  expected = jax.tree.map(lambda *d: sum(d) / num_tasks, *directions)
  _assert_trees_close(_meta_gradient(setup, **options), expected, rtol=1e-5)
