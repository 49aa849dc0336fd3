"""MAML++'s multi-step loss and derivative-order annealing on a general `MetaSpec`, and the
MAML++ weights and objective under float64 (no float32 constant may creep in). (The modes on
the SER model: tests/ser/test_mmtl_modes.py.)
"""

import dataclasses
import inspect

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mmtl_jax import meta
from mmtl_jax.meta.spec import RNG_OUTER

RNG = jax.random.PRNGKey(3)


def _assert_trees_close(got, want, rtol):
  """Leaf by leaf, relative to each leaf's largest entry (small entries cancel in sums)."""
  got_leaves, want_leaves = jax.tree.leaves(got), jax.tree.leaves(want)
  assert jax.tree.structure(got) == jax.tree.structure(want)
  for g, w in zip(got_leaves, want_leaves):
    np.testing.assert_allclose(g, w, rtol=rtol, atol=rtol * float(np.abs(w).max()))



# ---- MAML++ on a general MetaSpec: multi-step loss and derivative-order annealing -------------
def _regression(dtype=jnp.float32):
  """A 1-6-1 tanh net on 2 tasks of 4 support + 4 query points."""
  k = jax.random.split(jax.random.PRNGKey(0), 4)
  params = {'net': {'w1': jax.random.normal(k[0], (1, 6), dtype),
                    'w2': 0.5 * jax.random.normal(k[1], (6, 1), dtype)}}
  x = jax.random.uniform(k[2], (2, 8, 1), dtype, -2, 2)
  batch = {'x': x, 'y': jnp.sin(x + jax.random.uniform(k[3], (2, 1, 1), dtype))}
  predict = lambda p, xs: jnp.tanh(xs @ p['net']['w1']) @ p['net']['w2']
  support = lambda p, b, r: jnp.mean((predict(p, b['x'][:4]) - b['y'][:4]) ** 2)
  query = lambda p, b, r: jnp.mean((predict(p, b['x'][4:]) - b['y'][4:]) ** 2)
  return params, batch, support, query


def test_multi_step_weights_anneal_from_uniform_toward_the_last_step():
  w = [np.asarray(meta.multi_step_weights(t, 4, 10)) for t in (0, 5, 10, 50)]
  np.testing.assert_allclose(w[0], [0.25] * 4)
  for weights in w:
    np.testing.assert_allclose(weights.sum(), 1.0, rtol=1e-6)
  assert w[0][-1] < w[1][-1] < w[2][-1] == w[3][-1]
  np.testing.assert_allclose(w[3], [0.0075] * 3 + [1 - 3 * 0.0075], rtol=1e-6)


@pytest.mark.slow  # float64 finite differences
def test_multi_step_exact_gradient_matches_finite_differences():
  with jax.enable_x64(True):
    params, batch, support, query = _regression(jnp.float64)
    spec = meta.MetaSpec((meta.Stage('net', support, steps=3, lr=0.3),), query,
                         meta.MultiStep(meta.Exact(), anneal=4), strategy='map')
    grads = meta.meta_gradient(spec, params, batch, RNG, step=1).grads
    objective = lambda p: meta.meta_objective(spec, p, batch, RNG, step=1)
    d = jax.tree.map(lambda l: jnp.cos(jnp.arange(l.size, dtype=jnp.float64)).reshape(l.shape),
                     params)
    eps = 1e-6
    fd = (objective(jax.tree.map(lambda p, v: p + eps * v, params, d))
          - objective(jax.tree.map(lambda p, v: p - eps * v, params, d))) / (2 * eps)
    analytic = sum(jnp.vdot(g, v) for g, v in zip(jax.tree.leaves(grads), jax.tree.leaves(d)))
    assert abs(float(fd - analytic)) <= 1e-7 * abs(float(analytic))
    plain = meta.meta_gradient(dataclasses.replace(spec, estimator=meta.Exact()), params, batch,
                               RNG).grads
    assert not np.allclose(plain['net']['w1'], grads['net']['w1'], rtol=1e-3)


def test_first_order_multi_step_is_the_weighted_sum_of_gradients_after_each_step():
  params, batch, support, query = _regression()
  spec = meta.MetaSpec((meta.Stage('net', support, steps=3, lr=0.3),), query,
                       meta.MultiStep(meta.FirstOrder(), anneal=4),
                       strategy='loop')
  weights = meta.multi_step_weights(2, 3, 4)
  grads = meta.meta_gradient(spec, params, batch, RNG, step=2).grads
  want = []
  for t in range(2):
    task, net = jax.tree.map(lambda x, t=t: x[t], batch), params['net']
    total = jax.tree.map(jnp.zeros_like, net)
    for s in range(3):
      g = jax.grad(lambda n: support({'net': n}, task, None))(net)
      net = jax.tree.map(lambda n, gg: n - 0.3 * gg, net, g)
      q = jax.grad(lambda n: query({'net': n}, task, None))(net)
      total = jax.tree.map(lambda a, b, s=s: a + weights[s] * b, total, q)
    want.append(total)
  want = jax.tree.map(lambda a, b: (a + b) / 2, *want)
  _assert_trees_close(grads['net'], want, rtol=1e-5)


@pytest.mark.slow  # over 5 s alone
def test_derivative_order_annealing_switches_at_k_and_compiles_once():
  params, batch, support, query = _regression()
  stage = meta.Stage('net', support, steps=2, lr=0.3)
  spec = meta.MetaSpec((stage,), query, meta.Exact(first_order_until=2), strategy='vmap')
  fo = meta.meta_gradient(dataclasses.replace(spec, estimator=meta.FirstOrder()),
                          params, batch, RNG).grads
  exact = meta.meta_gradient(dataclasses.replace(spec, estimator=meta.Exact()), params, batch,
                             RNG).grads
  grad_at = jax.jit(lambda p, step: meta.meta_gradient(spec, p, batch, RNG, step=step).grads)
  for step, want in ((0, fo), (1, fo), (2, exact), (5, exact)):
    _assert_trees_close(grad_at(params, jnp.int32(step)), want, rtol=1e-5)
  assert grad_at._cache_size() == 1  # pylint: disable=protected-access
  assert not np.allclose(fo['net']['w1'], exact['net']['w1'], rtol=1e-3)
  # The whole meta-step too: one compilation across the switch.
  init_fn, step_fn = meta.make_step(spec, meta.group_optimizer({'net': optax.sgd(0.1)}))
  step, state, p = jax.jit(step_fn), init_fn(params), params
  for i in range(4):
    p, state, _ = step(p, state, batch, RNG)
  assert step._cache_size() == 1 and int(state.step) == 4  # pylint: disable=protected-access


# ---- float64: MAML++'s weights and objective carry no float32 constant ----------------------
def test_multi_step_weights_are_float64_under_x64_and_equal_the_closed_form():
  with jax.enable_x64(True):
    w = meta.multi_step_weights(3, 4, 10)
    assert w.dtype == jnp.float64
    # Step 3 of 4 inner steps annealed over 10: decay 1/(4 * 10) per outer step.
    non_final, final = 1 / 4 - 3 / 40, 1 / 4 + 3 * 3 / 40
    np.testing.assert_allclose(np.asarray(w), [non_final] * 3 + [final], rtol=0, atol=1e-15)
    late = meta.multi_step_weights(50, 4, 10)  # clipped: 0.03 / steps and its complement
    assert late.dtype == jnp.float64
    np.testing.assert_allclose(np.asarray(late), [0.03 / 4] * 3 + [1 - 3 * 0.03 / 4], rtol=0,
                               atol=1e-15)


def test_maml_plus_plus_objective_is_the_float64_weighted_sum_of_per_step_losses():
  """meta_objective of recipes.maml_plus_plus at outer step 2 against the loop written out:
  3 steps of SGD at each step's learned rate, the query loss after each step, weighted by the
  closed-form MAML++ weights, mean over the tasks; all in float64."""
  with jax.enable_x64(True):
    params, batch, support, query = _regression(jnp.float64)
    steps, anneal, outer_step = 3, 4, 2
    params = dict(params, lslr=jax.tree.map(
        lambda r: r * jnp.array([1.0, 0.5, 0.25], jnp.float64),
        meta.lslr_rates(params['net'], steps, 0.3)))
    spec = meta.recipes.maml_plus_plus(support, query, groups='net', steps=steps,
                                       multi_step_anneal=anneal, strategy='map')
    got = meta.meta_objective(spec, params, batch, RNG, step=outer_step)
    assert got.dtype == jnp.float64
    # Weights at outer step 2 of 4: non-final 1/3 - 2/12 = 1/6, final 1/3 + 2 * 2/12 = 2/3.
    weights = (1 / 6, 1 / 6, 2 / 3)
    total = 0.0
    for t in range(2):
      task, net = jax.tree.map(lambda x, t=t: x[t], batch), params['net']
      for s in range(steps):
        g = jax.grad(lambda n: support({'net': n}, task, None))(net)
        net = jax.tree.map(lambda n, gg, r: n - r[s] * gg, net, g, params['lslr'])
        total += weights[s] * float(query({'net': net}, task, None))
    want = total / 2
    np.testing.assert_allclose(float(got), want, rtol=1e-14)
