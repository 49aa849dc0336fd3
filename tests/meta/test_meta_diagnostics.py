"""meta.diagnostics: approximate vs exact meta-gradients per leaf, the finite-difference check,
and the jit-able training hook."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmtl_jax import meta
from mmtl_jax.meta import diagnostics

RNG = jax.random.PRNGKey(6)


def _maml():
  """One-stage MAML on a 1-6-1 tanh net, 2 tasks of 4 support + 4 query points."""
  k = jax.random.split(jax.random.PRNGKey(0), 4)
  params = {'net': {'w1': jax.random.normal(k[0], (1, 6)),
                    'w2': 0.5 * jax.random.normal(k[1], (6, 1))}}
  x = jax.random.uniform(k[2], (2, 8, 1), minval=-2, maxval=2)
  batch = {'x': x, 'y': jnp.sin(x + jax.random.uniform(k[3], (2, 1, 1)))}
  predict = lambda p, xs: jnp.tanh(xs @ p['net']['w1']) @ p['net']['w2']
  support = lambda p, b, r: jnp.mean((predict(p, b['x'][:4]) - b['y'][:4]) ** 2)
  query = lambda p, b, r: jnp.mean((predict(p, b['x'][4:]) - b['y'][4:]) ** 2)
  spec = meta.MetaSpec((meta.Stage('net', support, lr=0.4),), query, strategy='map')
  return spec, params, batch, support


def test_similarity_of_known_vectors():
  a, b = {'u': jnp.array([1.0, 0.0])}, {'u': jnp.array([2.0, 2.0])}
  s = diagnostics.similarity(a, b)
  np.testing.assert_allclose(s['cosine'], 1 / np.sqrt(2), rtol=1e-6)
  np.testing.assert_allclose(s['norm_ratio'], 1 / np.sqrt(8), rtol=1e-6)
  np.testing.assert_allclose(s['relative_error'], np.sqrt(5 / 8), rtol=1e-6)
  assert float(diagnostics.similarity(b, b)['relative_error']) == 0.0


@pytest.mark.slow  # float64 finite differences
def test_report_checks_exact_by_finite_differences_and_compares_every_mode():
  spec, params, batch, support = _maml()
  report = diagnostics.gradient_report(spec, params, batch, RNG, fd_eps=1e-6)
  assert not jax.config.jax_enable_x64  # the float64 context was left
  fd = report['finite_difference']
  assert fd['relative_error'] < 1e-7, fd
  assert set(report['global']) == {'first_order', 'reptile', 'implicit'}
  assert [row['name'] for row in report['layers']] == ['net/w1', 'net/w2']
  for row in report['layers']:
    for mode in ('first_order', 'reptile', 'implicit'):
      assert -1 - 1e-9 <= row[mode]['cosine'] <= 1 + 1e-9 and row[mode]['norm_ratio'] > 0
  assert report['global']['first_order']['relative_error'] > 1e-3  # lr 0.4: visible 2nd order
  # Reptile with one step, rescaled by 1/lr, is the mean support gradient at params.
  with jax.enable_x64(True):
    p64 = jax.tree.map(lambda x: x.astype(jnp.float64), params)
    b64 = jax.tree.map(lambda x: x.astype(jnp.float64), batch)
    grads = diagnostics.mode_gradients(spec, p64, b64, RNG, ('reptile',))
    want = jax.grad(lambda p: jnp.mean(jax.vmap(lambda b: support(p, b, None))(b64)))(p64)
    for got, w in zip(jax.tree.leaves(grads['reptile']), jax.tree.leaves(want)):
      np.testing.assert_allclose(got, w, rtol=1e-10)


@pytest.mark.slow  # float64 finite differences
def test_report_skips_implicit_for_several_stages_and_reuses_its_compilation():
  spec, params, batch, support = _maml()
  two = meta.MetaSpec((meta.Stage('net', support, lr=0.1),) * 2, spec.outer_loss,
                      strategy='map')
  report_fn = diagnostics.make_gradient_report(two, batch, RNG)
  first = report_fn(params)
  assert set(first['global']) == {'first_order', 'reptile'}
  moved = jax.tree.map(lambda p: p * 1.1, params)
  second = report_fn(moved)
  assert second['finite_difference']['fd'] != first['finite_difference']['fd']


@pytest.mark.slow  # over 5 s alone
def test_the_training_hook_is_jittable_and_agrees_with_the_report():
  spec, params, batch, _ = _maml()
  implicit = meta.Implicit(lam=3.0)  # estimators are objects with their own settings
  hook = jax.jit(diagnostics.make_gradient_hook(
      spec, estimators={'first_order': meta.FirstOrder(), 'implicit': implicit}))
  out = hook(params, batch, RNG)
  assert set(out) == {f'{m}/{g}{k}' for m in ('first_order', 'implicit')
                      for g in ('', 'net/')
                      for k in ('cosine', 'norm_ratio', 'relative_error')} | {
                          'implicit/cg_residual', 'implicit/prox_grad_ratio'}
  report = diagnostics.gradient_report(
      spec, params, batch, RNG, float64=False,
      estimators={'exact': meta.Exact(), 'first_order': meta.FirstOrder(), 'implicit': implicit})
  solve = report['implicit_solve']  # the implicit solves are judged in the report too
  assert solve['failed'] == bool(solve['problems'])
  np.testing.assert_allclose(solve['cg_residual'], out['implicit/cg_residual'], rtol=1e-4)
  for key, value in report['global']['first_order'].items():
    np.testing.assert_allclose(out[f'first_order/{key}'], value, rtol=1e-4)
  np.testing.assert_allclose(out['first_order/cosine'], out['first_order/net/cosine'],
                             rtol=1e-6)  # one group: the group is everything
  later = hook(jax.tree.map(lambda p: 2 * p, params), batch, RNG)  # another training point
  assert float(later['first_order/cosine']) != float(out['first_order/cosine'])


def test_leaf_names_follow_the_tree():
  assert diagnostics.leaf_names({'b': {'x': 1}, 'a': [2, 3]}) == ['a/0', 'a/1', 'b/x']


@pytest.mark.parametrize('modes', [('exact',), ()])
def test_a_hook_without_approximate_modes_returns_nothing(modes):
  spec, params, batch, _ = _maml()
  assert not diagnostics.make_gradient_hook(spec, estimators=modes)(params, batch, RNG)
