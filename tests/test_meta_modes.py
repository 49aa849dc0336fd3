"""Meta modes on the tiny SER model: the default lets theta see the emotion loss (Reptile with
one inner step does not), and 'reptile_emotion' is the Reptile direction plus FOMAML's gradient.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmtl_jax import meta
from mmtl_jax.configs import base
from mmtl_jax.meta.inner import RNG_OUTER
from mmtl_jax.ser import losses as ser

RNG = jax.random.PRNGKey(3)


@pytest.fixture(name='setup', scope='module')
def fixture_setup(tiny_model):
  """(params, batch of 2 tasks, inner_loss, transfer_loss, {cfg: jitted meta-gradient}) on the
  tiny model, dropout on so that the tests also see each loss's rng."""
  model = tiny_model(dropout=0.25)
  params = ser.init_params(model, jax.random.PRNGKey(0), (1, 8, 8))
  batch = ser.random_batch(2, 3, 8, 8, seed=0)
  return (params, batch, *ser.make_losses(model), {})


def _meta_gradient(setup, cfg, batch=None):
  """The meta-gradient of `setup` (or of `batch`) under `cfg`, compiled once per cfg."""
  params, default_batch, inner_loss, transfer_loss, jitted = setup
  if cfg not in jitted:
    jitted[cfg] = jax.jit(lambda p, b: meta.meta_gradient(p, b, RNG, inner_loss, transfer_loss,
                                                          cfg)[0])
  return jitted[cfg](params, default_batch if batch is None else batch)


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


def test_default_mode_gives_theta_the_emotion_gradient(setup):
  # Through config.meta as training builds it, so a mode set in configs/base.py is caught too.
  config_meta = base.get_config().meta
  config_meta.strategy = 'loop'
  cfg = meta.MetaConfig.from_config(config_meta)
  assert cfg.mode == meta.MetaConfig().mode
  batch = setup[1]
  before = _meta_gradient(setup, cfg)
  after = _meta_gradient(setup, cfg, _other_targets(batch))
  # Every theta leaf moves when only the emotion labels change: theta sees the emotion loss.
  for name in before['theta']:
    assert _max_relative_change(before['theta'][name], after['theta'][name]) > 1e-2, name


def test_reptile_with_one_inner_step_gives_theta_no_emotion_gradient(setup):
  """The degeneracy the default avoids: theta - theta' = alpha * grad L_aux(theta)."""
  cfg = meta.MetaConfig(mode='reptile', strategy='loop', inner_steps=1)
  batch = setup[1]
  before = _meta_gradient(setup, cfg)
  after = _meta_gradient(setup, cfg, _other_targets(batch))
  _assert_trees_close(after['theta'], before['theta'], rtol=1e-6)
  assert _max_relative_change(before['phi'], after['phi']) > 1e-2  # the change did reach phi


def test_reptile_emotion_is_reptile_plus_first_order(setup):
  # Large inner rates, so that the Reptile part is not negligible next to the gradient.
  grads = {mode: _meta_gradient(setup, meta.MetaConfig(mode=mode, strategy='loop', alpha=0.3,
                                                       beta=0.3))
           for mode in ('reptile', 'first_order', 'reptile_emotion')}
  expected = jax.tree.map(jnp.add, grads['reptile'], grads['first_order'])
  _assert_trees_close(grads['reptile_emotion'], expected, rtol=1e-6)
  for part in ('reptile', 'first_order'):  # both parts matter in every leaf group
    assert _max_relative_change(grads['reptile_emotion'], grads[part]) > 1e-2, part


def test_reptile_emotion_agrees_across_task_strategies(setup):
  grads = {s: _meta_gradient(setup, meta.MetaConfig(mode='reptile_emotion', strategy=s))
           for s in ('loop', 'vmap', 'map')}
  for s in ('vmap', 'map'):
    _assert_trees_close(grads[s], grads['loop'], rtol=1e-5)


def test_reptile_emotion_matches_a_plain_loop_over_tasks(setup):
  """By hand: per task, adapt first order, take the outer gradient at the adapted params with
  the task's outer key, add params - adapted; mean over tasks."""
  params, batch, inner_loss, transfer_loss, _ = setup
  cfg = meta.MetaConfig(mode='reptile_emotion', strategy='loop', inner_steps=2, alpha=0.2,
                        beta=0.1)

  @jax.jit
  def one_task(task, rng):
    adapted, _ = meta.inner_adapt(params, task, rng, inner_loss, transfer_loss,
                                  alpha=cfg.alpha, beta=cfg.beta, inner_steps=cfg.inner_steps,
                                  first_order=True)
    grad = jax.grad(lambda a: transfer_loss(a['theta'], a['phi'], task,
                                            jax.random.fold_in(rng, RNG_OUTER)))(adapted)
    return jax.tree.map(lambda p, a, g: p - a + g, params, adapted, grad)

  num_tasks = batch['x'].shape[0]
  directions = [one_task(jax.tree.map(lambda leaf, t=t: leaf[t], batch),
                         jax.random.fold_in(RNG, t)) for t in range(num_tasks)]
  expected = jax.tree.map(lambda *d: sum(d) / num_tasks, *directions)
  _assert_trees_close(_meta_gradient(setup, cfg), expected, rtol=1e-5)
