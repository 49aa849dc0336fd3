"""Meta-gradient correctness on a tiny SER model WITH a BiLSTM (exact, first-order, inner scan),
through MMTL's `MetaSpec` (`meta.recipes.mmtl`)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmtl_jax import meta
from mmtl_jax.ser import losses as ser

ALPHA, BETA = 0.3, 0.2  # large inner steps so second-order terms are not negligible


def mmtl(losses, mode, **kw):
  """MMTL's spec of `losses` = (inner_loss, transfer_loss) at this file's rates."""
  return meta.recipes.mmtl(*losses, alpha=ALPHA, beta=BETA, mode=mode, strategy='map', **kw)


def _adapt_key(task_rng, stage, step):
  """The documented key of stage `stage`, inner step `step` (meta/spec.py)."""
  return jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(task_rng, 0), stage), step)


@pytest.fixture(scope='module')
def problem(tiny_model):
  model = tiny_model()
  params = ser.init_params(model, jax.random.PRNGKey(0), (1, 8, 8))
  batch = ser.random_batch(num_tasks=2, batch_size=3, frames=8, bins=8, num_aux=3, seed=1)
  inner_loss, transfer_loss = ser.make_losses(model)
  return params, batch, inner_loss, transfer_loss


@pytest.fixture(scope='module')
def exact_and_first_order(problem):
  params, batch, *losses = problem
  grad = lambda spec: jax.jit(lambda p: meta.meta_gradient(
      spec, p, batch, jax.random.PRNGKey(2)).grads)(params)
  return grad(mmtl(losses, 'exact')), grad(mmtl(losses, 'first_order'))


@pytest.mark.slow  # float64 finite differences
def test_exact_meta_gradient_matches_central_finite_differences(tiny_model):
  with jax.enable_x64(True):
    model = tiny_model('float64')
    params = ser.init_params(model, jax.random.PRNGKey(0), (1, 8, 8))
    params = jax.tree.map(lambda x: x.astype(jnp.float64), params)
    batch = ser.random_batch(num_tasks=2, batch_size=3, frames=8, bins=8, num_aux=3, seed=1)
    batch = {k: v.astype(np.float64) if v.dtype == np.float32 else v for k, v in batch.items()}
    key, spec = jax.random.PRNGKey(2), mmtl(ser.make_losses(model), 'exact', steps=2)
    grads = jax.jit(lambda p: meta.meta_gradient(spec, p, batch, key).grads)(params)
    objective = jax.jit(lambda p: meta.meta_objective(spec, p, batch, key))
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(3), len(leaves))
    direction = treedef.unflatten([jax.random.normal(k, l.shape, jnp.float64)
                                   for k, l in zip(keys, leaves)])
    eps = 1e-5
    shifted = lambda s: jax.tree.map(lambda p, d: p + s * eps * d, params, direction)
    fd = (objective(shifted(1.0)) - objective(shifted(-1.0))) / (2 * eps)
    analytic = sum(jnp.vdot(g, d) for g, d in zip(jax.tree.leaves(grads),
                                                    jax.tree.leaves(direction)))
    assert grads['theta']['bilstm']['recurrent_kernel'].dtype == jnp.float64
    rel = abs(float(fd) - float(analytic)) / abs(float(analytic))
    assert rel <= 1e-5, (float(fd), float(analytic), rel)
  assert not jax.config.jax_enable_x64  # restored for the other tests


@pytest.mark.slow  # over 5 s alone
def test_first_order_equals_exact_with_inner_gradients_stopped(problem, exact_and_first_order):
  params, batch, inner_loss, transfer_loss = problem
  key = jax.random.PRNGKey(2)

  def hand_objective(p, task_batch, task_index):
    # Eqs. 4-5 written out with jax.lax.stop_gradient on the inner gradients, then eqs. 6-7,
    # with the keys of meta/spec.py: stage i step s, then the outer loss at fold_in(r, 1).
    r = jax.random.fold_in(key, task_index)
    g = jax.grad(inner_loss)(p['theta'], task_batch, _adapt_key(r, 0, 0))
    theta = jax.tree.map(lambda t, gt: t - ALPHA * jax.lax.stop_gradient(gt), p['theta'], g)
    g = jax.grad(transfer_loss, argnums=1)(theta, p['phi'], task_batch, _adapt_key(r, 1, 0))
    phi = jax.tree.map(lambda t, gt: t - BETA * jax.lax.stop_gradient(gt), p['phi'], g)
    return transfer_loss(theta, phi, task_batch, jax.random.fold_in(r, 1))

  def hand_mean(p):
    losses = [hand_objective(p, jax.tree.map(lambda x, i=i: x[i], batch), i) for i in range(2)]
    return sum(losses) / 2

  expected = jax.jit(jax.grad(hand_mean))(params)
  _, first_order = exact_and_first_order
  for got, want in zip(jax.tree.leaves(first_order), jax.tree.leaves(expected)):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


@pytest.mark.slow  # over 5 s alone
def test_second_order_term_is_nonzero_through_the_lstm(exact_and_first_order):
  exact, first_order = exact_and_first_order
  for name in ('input_kernel', 'recurrent_kernel'):
    e = np.asarray(exact['theta']['bilstm'][name])
    f = np.asarray(first_order['theta']['bilstm'][name])
    assert np.linalg.norm(e - f) > 1e-3 * np.linalg.norm(e), name
  # phi's second-order term comes from eq. 5 only: also non-zero.
  assert not np.allclose(exact['phi']['fc']['kernel'], first_order['phi']['fc']['kernel'])


@pytest.mark.slow  # over 5 s alone
def test_two_inner_steps_equal_two_manual_applications(tiny_model):
  model = tiny_model(dropout=0.3)  # dropout makes every step's rng matter
  params = ser.init_params(model, jax.random.PRNGKey(0), (1, 8, 8))
  batch = jax.tree.map(lambda x: x[0], ser.random_batch(1, 3, 8, 8, seed=4))
  inner_loss, transfer_loss = ser.make_losses(model)
  rng = jax.random.PRNGKey(5)
  stages = meta.recipes.mmtl(inner_loss, transfer_loss, alpha=ALPHA, beta=BETA,
                             steps=2).stages
  adapted, stats = jax.jit(lambda p: meta.adapt_stages(stages, p, batch, rng))(params)

  @jax.jit
  def manual(params):
    theta, phi = params['theta'], params['phi']
    first_inner_loss = inner_loss(theta, batch, _adapt_key(rng, 0, 0))
    for s in range(2):
      g = jax.grad(inner_loss)(theta, batch, _adapt_key(rng, 0, s))
      theta = jax.tree.map(lambda t, gt: t - ALPHA * gt, theta, g)
    first_transfer_loss = transfer_loss(theta, phi, batch, _adapt_key(rng, 1, 0))
    for s in range(2):
      g = jax.grad(transfer_loss, argnums=1)(theta, phi, batch, _adapt_key(rng, 1, s))
      phi = jax.tree.map(lambda t, gt: t - BETA * gt, phi, g)
    return {'theta': theta, 'phi': phi}, first_inner_loss, first_transfer_loss

  expected, first_inner_loss, first_transfer_loss = manual(params)
  for got, want in zip(jax.tree.leaves(adapted), jax.tree.leaves(expected)):
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-6)
  assert set(stats) == {'inner_loss_before', 'transfer_loss_before'}
  np.testing.assert_allclose(stats['inner_loss_before'], first_inner_loss, rtol=1e-5)
  np.testing.assert_allclose(stats['transfer_loss_before'], first_transfer_loss, rtol=1e-5)


@pytest.mark.slow  # over 5 s alone
def test_remat_does_not_change_the_exact_gradient(problem, exact_and_first_order):
  params, batch, *losses = problem
  spec = mmtl(losses, 'exact', remat=True)
  got = jax.jit(lambda p: meta.meta_gradient(spec, p, batch, jax.random.PRNGKey(2)).grads)(
      params)
  exact, _ = exact_and_first_order
  for g, e in zip(jax.tree.leaves(got), jax.tree.leaves(exact)):
    np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-7)
