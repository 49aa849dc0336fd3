"""`meta.inner_adam`: optax.adam(eps_root=0)'s values, with an exact, finite derivative where
gradient entries are exactly 0 (issue 28: exact MAML through optax.adam is NaN there)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mmtl_jax import meta
from mmtl_jax.meta._inner_adam import sqrt_zero_grad

RNG = jax.random.PRNGKey(0)


def _grads(key, dtype):
  """Gradients of a {'a': [6], 'b': [2, 3]} tree, a third of the entries exactly 0."""
  ka, kb, kz = jax.random.split(key, 3)
  g = {'a': jax.random.normal(ka, (6,), dtype), 'b': jax.random.normal(kb, (2, 3), dtype)}
  return jax.tree.map(lambda x: jnp.where(jax.random.uniform(kz, x.shape) < 0.33, 0, x), g)


@pytest.mark.parametrize('dtype', ['float32', 'float64'])
@pytest.mark.parametrize('jit', [False, True])
def test_updates_equal_optax_adam_bit_for_bit(dtype, jit):
  with jax.enable_x64(dtype == 'float64'):
    ours, theirs = meta.inner_adam(3e-2), optax.adam(3e-2, eps_root=0.0)
    params = jax.tree.map(jnp.zeros_like, _grads(RNG, dtype))
    s1, s2 = ours.init(params), theirs.init(params)
    update1, update2 = ours.update, theirs.update
    if jit:
      update1, update2 = jax.jit(update1), jax.jit(update2)
    for i in range(4):
      g = _grads(jax.random.fold_in(RNG, i), dtype)
      (u1, s1), (u2, s2) = update1(g, s1, params), update2(g, s2, params)
      assert jax.tree.structure((u1, s1)) == jax.tree.structure((u2, s2))
      for x, y in zip(jax.tree.leaves((u1, s1)), jax.tree.leaves((u2, s2))):
        assert x.dtype == y.dtype
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_sqrt_has_derivative_zero_at_zero_and_its_own_elsewhere():
  sqrt = sqrt_zero_grad
  with jax.enable_x64(True):
    x = jnp.array([0.0, 4.0, 0.25])
    np.testing.assert_array_equal(sqrt(x), jnp.sqrt(x))
    d = jax.vmap(jax.grad(sqrt))(x)
    np.testing.assert_allclose(d, [0.0, 0.25, 1.0], rtol=1e-15)
    d2 = jax.vmap(jax.grad(jax.grad(sqrt)))(x)
    assert np.all(np.isfinite(d2)) and d2[0] == 0.0
    np.testing.assert_allclose(d2[1:], [-1 / 32, -2.0], rtol=1e-15)
    np.testing.assert_allclose(jax.jvp(sqrt, (x,), (jnp.ones(3),))[1], [0.0, 0.25, 1.0])


# --- exact MAML through 2 inner Adam steps on a ReLU MLP with a dead unit --------------------

HIDDEN = 8


def _relu_problem():
  """A 1-8-8-1 ReLU regressor whose first hidden unit is dead on every input (bias -100), so
  its weights' gradients are exactly 0 in every inner step; 3 sinusoid tasks."""
  k = jax.random.split(jax.random.PRNGKey(3), 6)
  net = {'w1': jax.random.normal(k[0], (1, HIDDEN)),
         'b1': jnp.zeros(HIDDEN).at[0].set(-100.0),
         'w2': jax.random.normal(k[1], (HIDDEN, HIDDEN)) / jnp.sqrt(HIDDEN),
         'b2': 0.1 * jnp.ones(HIDDEN),
         'w3': jax.random.normal(k[2], (HIDDEN, 1)) / jnp.sqrt(HIDDEN), 'b3': jnp.zeros(1)}
  x = jax.random.uniform(k[3], (3, 20, 1), minval=-5.0, maxval=5.0)
  amp = jax.random.uniform(k[4], (3, 1, 1), minval=0.5, maxval=3.0)
  y = amp * jnp.sin(x)
  batch = {'sx': x[:, :10], 'sy': y[:, :10], 'qx': x[:, 10:], 'qy': y[:, 10:]}

  def mse(params, x, y):
    p = params['net']
    h = jax.nn.relu(x @ p['w1'] + p['b1'])
    h = jax.nn.relu(h @ p['w2'] + p['b2'])
    return jnp.mean((h @ p['w3'] + p['b3'] - y) ** 2)

  support = lambda params, b, r: mse(params, b['sx'], b['sy'])
  query = lambda params, b, r: mse(params, b['qx'], b['qy'])
  return {'net': net}, batch, support, query


def _spec(optimizer):
  _, _, support, query = _relu_problem()
  return meta.recipes.maml(support, query, groups='net', steps=2, optimizer=optimizer,
                           strategy='map')


def test_the_problem_has_exactly_zero_gradient_entries():
  with jax.enable_x64(True):
    params, batch, support, _ = _relu_problem()
    g = jax.grad(support)(params, jax.tree.map(lambda x: x[0], batch), RNG)['net']
    assert g['w1'][0, 0] == 0.0 and g['b1'][0] == 0.0 and g['w2'][0].tolist() == [0.0] * 8
    assert np.count_nonzero(g['w2'][1:]) > 0


def test_exact_meta_gradient_through_inner_adam_is_finite_and_matches_finite_differences():
  with jax.enable_x64(True):
    params, batch, _, _ = _relu_problem()
    spec = _spec(meta.inner_adam(0.05))
    grads = jax.jit(lambda p: meta.meta_gradient(spec, p, batch, RNG).grads)(params)
    assert meta.all_finite(grads)
    direction = jax.tree.map(lambda x, k: jax.random.normal(k, x.shape, x.dtype), params,
                             jax.tree.unflatten(jax.tree.structure(params),
                                                jax.random.split(RNG, 6)))
    objective = jax.jit(lambda p: meta.meta_objective(spec, p, batch, RNG))
    h = 1e-6
    shifted = lambda s: jax.tree.map(lambda p, d: p + s * h * d, params, direction)
    fd = (objective(shifted(1.0)) - objective(shifted(-1.0))) / (2 * h)
    exact = optax.tree.vdot(grads, direction)
    np.testing.assert_allclose(exact, fd, rtol=1e-6)
    # the dead unit's incoming weights are a real part of the check: their meta-gradient
    # entries are finite (0 here: nothing reaches them through a dead ReLU)
    assert np.isfinite(grads['net']['w1'][0, 0]) and np.isfinite(grads['net']['b1'][0])


def test_optax_adam_gives_a_nan_meta_gradient_there():
  """The problem inner_adam solves: sqrt'(0) = inf times a zero cotangent."""
  with jax.enable_x64(True):
    params, batch, _, _ = _relu_problem()
    run = lambda opt: jax.jit(
        lambda p: meta.meta_gradient(_spec(opt), p, batch, RNG))(params)
    out = run(optax.adam(0.05, eps_root=0.0))
    assert np.isfinite(float(out.metrics['outer_loss']))  # the loss looks fine ...
    assert np.isnan(np.concatenate([np.ravel(x) for x in jax.tree.leaves(out.grads)])).any()
    ours = run(meta.inner_adam(0.05))
    np.testing.assert_array_equal(out.metrics['outer_loss'], ours.metrics['outer_loss'])


@pytest.mark.slow  # float64 finite differences, two more compilations
def test_optax_eps_root_is_finite_but_not_the_derivative_of_adam():
  """optax.adam(eps_root=1e-8) avoids the NaN by changing the function: its meta-gradient
  disagrees with the derivative of Adam (inner_adam's, checked against finite differences
  above) by far more than rounding (here ~0.9 relative, cosine ~0.8)."""
  with jax.enable_x64(True):
    params, batch, _, _ = _relu_problem()
    run = lambda opt: jax.jit(
        lambda p: meta.meta_gradient(_spec(opt), p, batch, RNG).grads)(params)
    flat = lambda tree: np.concatenate([np.ravel(x) for x in jax.tree.leaves(tree)])
    rooted, exact = flat(run(optax.adam(0.05, eps_root=1e-8))), flat(run(meta.inner_adam(0.05)))
    assert np.all(np.isfinite(rooted))
    assert np.linalg.norm(rooted - exact) > 0.1 * np.linalg.norm(exact)
