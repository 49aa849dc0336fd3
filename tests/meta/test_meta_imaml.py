"""iMAML ('implicit'): the meta-gradient of the proximal problem by conjugate gradient on
Hessian-vector products; equal to the closed form on a quadratic, to finite differences on a
non-linear net, and its memory does not grow with the inner steps."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mmtl_jax import meta

RNG = jax.random.PRNGKey(5)
LAM = 2.0


def _quadratic(tasks=2):
  """L_in(phi, b) = 1/2 (phi - A b)^T Q (phi - A b) + c^T phi,  L_out = 1/2 |B phi - y|^2 +
  sum(b) * sum(phi): the head phi (4) is adapted, the body b (3) enters both losses."""
  k = jax.random.split(jax.random.PRNGKey(0), 8)
  m = jax.random.normal(k[0], (4, 4), jnp.float64)
  batch = {'Q': jnp.stack([m @ m.T / 4 + 0.5 * jnp.eye(4)] * tasks),
           'A': jax.random.normal(k[1], (tasks, 4, 3), jnp.float64),
           'c': jax.random.normal(k[2], (tasks, 4), jnp.float64),
           'B': jax.random.normal(k[3], (tasks, 5, 4), jnp.float64),
           'y': jax.random.normal(k[4], (tasks, 5), jnp.float64)}
  params = {'head': jax.random.normal(k[5], (4,), jnp.float64),
            'body': jax.random.normal(k[6], (3,), jnp.float64)}

  def inner(p, b, r):
    d = p['head'] - b['A'] @ p['body']
    return 0.5 * d @ b['Q'] @ d + b['c'] @ p['head']

  def outer(p, b, r):
    return 0.5 * jnp.sum((b['B'] @ p['head'] - b['y']) ** 2) + p['body'].sum() * p['head'].sum()

  def closed_form(p):  # the proximal problem solved exactly, differentiated by jax
    def one(b):
      q = b['Q']
      phi = jnp.linalg.solve(q + LAM * jnp.eye(4),
                             q @ b['A'] @ p['body'] - b['c'] + LAM * p['head'])
      return outer({'head': phi, 'body': p['body']}, b, None)
    return jax.vmap(one)(batch).mean()

  return params, batch, inner, outer, closed_form


@pytest.mark.slow  # over 5 s alone (300 float64 inner steps)
@pytest.mark.parametrize('strategy', ['vmap', 'map', 'loop'])
def test_implicit_gradient_equals_the_closed_form_of_the_proximal_problem(strategy):
  with jax.enable_x64(True):
    params, batch, inner, outer, closed_form = _quadratic()
    # SGD at rate 1/(L + lam) contracts by at most 1 - (mu + lam)/(L + lam) per step.
    stage = meta.Stage('head', inner, steps=300, lr=0.2)
    spec = meta.MetaSpec((stage,), outer, meta.Implicit(lam=LAM, cg_steps=8),
                         strategy=strategy)
    assert meta.recipes.imaml(inner, outer, groups='head', steps=300, lr=0.2, lam=LAM,
                              cg_steps=8, strategy=strategy) == spec  # the recipe is this spec
    got, metrics, state = jax.jit(lambda p: meta.meta_gradient(spec, p, batch, RNG))(params)
    assert state is None  # no model state
    want = jax.grad(closed_form)(params)
    for name in ('head', 'body'):  # body: the cross term through phi*(theta, b)
      np.testing.assert_allclose(got[name], want[name], rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(metrics['outer_loss'], closed_form(params), rtol=1e-9)
    # ... and the first-order gradient (what iMAML replaces) is visibly different.
    first = meta.meta_gradient(meta.MetaSpec((stage,), outer, estimator='first_order'), params,
                               batch, RNG).grads
    assert not np.allclose(first['head'], want['head'], rtol=1e-2)


@pytest.mark.slow  # float64 finite differences
def test_implicit_gradient_matches_finite_differences_on_a_nonlinear_net():
  with jax.enable_x64(True):
    k = jax.random.split(jax.random.PRNGKey(1), 4)
    params = {'net': {'w1': jax.random.normal(k[0], (1, 6), jnp.float64),
                      'w2': 0.5 * jax.random.normal(k[1], (6, 1), jnp.float64)}}
    x = jax.random.uniform(k[2], (2, 8, 1), jnp.float64, -2, 2)
    batch = {'x': x, 'y': jnp.sin(x + jax.random.uniform(k[3], (2, 1, 1), jnp.float64))}
    predict = lambda p, xs: jnp.tanh(xs @ p['net']['w1']) @ p['net']['w2']
    support = lambda p, b, r: jnp.mean((predict(p, b['x'][:4]) - b['y'][:4]) ** 2)
    query = lambda p, b, r: jnp.mean((predict(p, b['x'][4:]) - b['y'][4:]) ** 2)
    spec = meta.MetaSpec((meta.Stage('net', support, steps=200, lr=0.1),), query,
                         meta.Implicit(lam=5.0, cg_steps=12), strategy='map')
    grads = jax.jit(lambda p: meta.meta_gradient(spec, p, batch, RNG).grads)(params)
    objective = jax.jit(lambda p: meta.meta_objective(spec, p, batch, RNG))
    d = jax.tree.map(lambda l: jnp.cos(jnp.arange(l.size, dtype=jnp.float64)).reshape(l.shape),
                     params)
    eps = 1e-5
    fd = (objective(jax.tree.map(lambda p, v: p + eps * v, params, d))
          - objective(jax.tree.map(lambda p, v: p - eps * v, params, d))) / (2 * eps)
    analytic = sum(jnp.vdot(g, v) for g, v in zip(jax.tree.leaves(grads), jax.tree.leaves(d)))
    assert abs(float(fd - analytic)) <= 1e-7 * abs(float(analytic)), (float(fd),
                                                                       float(analytic))


def _temp_bytes(mode, steps):
  k = jax.random.split(jax.random.PRNGKey(0), 2)
  params = {'net': {'w': jax.random.normal(k[0], (16, 16))}}
  batch = {'x': jax.random.normal(k[1], (2, 64, 16))}
  loss = lambda p, b, r: jnp.mean(jnp.tanh(b['x'] @ p['net']['w']) ** 2)
  spec = meta.MetaSpec((meta.Stage('net', loss, steps=steps, lr=0.1),), loss, estimator=mode,
                       strategy='map')
  compiled = jax.jit(lambda p: meta.meta_gradient(spec, p, batch, RNG)).lower(
      params).compile()
  return compiled.memory_analysis().temp_size_in_bytes


def test_implicit_memory_does_not_grow_with_the_inner_steps():
  assert _temp_bytes('implicit', 50) == _temp_bytes('implicit', 5)
  assert _temp_bytes('exact', 50) > 2 * _temp_bytes('exact', 5)  # what iMAML avoids


def test_conjugate_gradient_solves_a_spd_system_and_survives_a_zero_residual():
  with jax.enable_x64(True):
    m = jax.random.normal(jax.random.PRNGKey(2), (5, 5), jnp.float64)
    a = m @ m.T + jnp.eye(5)
    b = {'u': jnp.arange(5.0, dtype=jnp.float64)}
    x = meta.conjugate_gradient(lambda v: {'u': a @ v['u']}, b, 12)  # more steps than dim
    np.testing.assert_allclose(x['u'], jnp.linalg.solve(a, b['u']), rtol=1e-10)
    zero = meta.conjugate_gradient(lambda v: {'u': a @ v['u']}, {'u': jnp.zeros(5)}, 3)
    np.testing.assert_array_equal(zero['u'], np.zeros(5))


def test_implicit_needs_one_stage_and_a_positive_lambda():
  loss = lambda p, b, r: 0.0
  two = (meta.Stage('a', loss, lr=0.1), meta.Stage('b', loss, lr=0.1))
  with pytest.raises(ValueError, match='exactly one stage'):
    meta.MetaSpec(two, loss, 'implicit')
  with pytest.raises(ValueError, match='lam must be > 0'):
    meta.Implicit(lam=0.0)


def _indefinite_quadratic():
  """L_in(phi) = 1/2 phi^T Q phi + c^T phi with Q's smallest eigenvalue -6 < -LAM, so the
  undamped system I + Q / LAM is indefinite; L_out = 1/2 |phi - y|^2."""
  with jax.enable_x64(True):
    q_basis, _ = jnp.linalg.qr(jax.random.normal(jax.random.PRNGKey(3), (4, 4), jnp.float64))
    q = q_basis @ jnp.diag(jnp.array([-6.0, 0.5, 3.0, 8.0], jnp.float64)) @ q_basis.T
    batch = {'Q': q[None], 'c': jnp.array([[0.3, -0.2, 0.1, 0.4]], jnp.float64),
             'y': jnp.array([[1.0, -1.0, 0.5, 2.0]], jnp.float64)}
  params = {'head': jnp.array([0.2, -0.1, 0.3, 0.05], jnp.float64)}
  inner = lambda p, b, r: 0.5 * p['head'] @ b['Q'] @ p['head'] + b['c'] @ p['head']
  outer = lambda p, b, r: 0.5 * jnp.sum((p['head'] - b['y']) ** 2)
  return params, batch, inner, outer, q


def _proximal_sgd(params, batch, q, steps, lr):
  """The inner solve by a plain loop: SGD on L_in + LAM/2 |phi - theta|^2."""
  theta = params['head']
  phi = theta
  for _ in range(steps):
    phi = phi - lr * (q @ phi + batch['c'][0] + LAM * (phi - theta))
  return phi


def test_damped_implicit_solve_gives_the_closed_form_damped_direction_on_an_indefinite_hessian():
  with jax.enable_x64(True):
    params, batch, inner, outer, q = _indefinite_quadratic()
    damping, lam_damping = 1.0, 10.0  # the iMAML authors' defaults
    spec = meta.recipes.imaml(inner, outer, groups='head', steps=3, lr=0.05, lam=LAM,
                              cg_steps=4, damping=damping, lam_damping=lam_damping,
                              strategy='loop')
    out = jax.jit(lambda p: meta.meta_gradient(spec, p, batch, RNG))(params)
    phi = _proximal_sgd(params, batch, q, 3, 0.05)
    g = phi - batch['y'][0]
    a = (1 + damping) * jnp.eye(4) + q / (LAM + lam_damping)  # positive definite
    assert float(jnp.linalg.eigvalsh(a).min()) > 0
    np.testing.assert_allclose(out.grads['head'], jnp.linalg.solve(a, g), rtol=1e-9)
    assert float(out.metrics['cg_residual']) < 1e-9  # 4 iterations solve a 4-d SPD system
    assert float(out.metrics['cg_iterations']) == 4


def test_undamped_implicit_solve_stops_on_negative_curvature_and_reports_its_residual():
  with jax.enable_x64(True):
    params, batch, inner, outer, q = _indefinite_quadratic()
    spec = meta.recipes.imaml(inner, outer, groups='head', steps=3, lr=0.05, lam=LAM,
                              cg_steps=4, strategy='loop')
    out = jax.jit(lambda p: meta.meta_gradient(spec, p, batch, RNG))(params)
    phi = _proximal_sgd(params, batch, q, 3, 0.05)
    g = phi - batch['y'][0]
    a = jnp.eye(4) + q / LAM  # indefinite: no CG iterate converges to a minimiser
    assert float(jnp.linalg.eigvalsh(a).min()) < 0
    # The reported residual is that of the returned direction, whatever CG did.
    want = float(jnp.linalg.norm(g - a @ out.grads['head']) / jnp.linalg.norm(g))
    np.testing.assert_allclose(float(out.metrics['cg_residual']), want, rtol=1e-9)
    assert float(out.metrics['cg_iterations']) < 4  # stopped on non-positive curvature
    assert meta.solve_problems({'cg_residual': 1.5}) and not meta.solve_problems(
        {'cg_residual': 0.5, 'prox_grad_ratio': 0.1})
    assert meta.solve_problems({'prox_grad_ratio': 0.9})[0].startswith('inner problem unsolved')


def test_conjugate_gradient_stops_at_non_positive_curvature():
  with jax.enable_x64(True):
    a = jnp.diag(jnp.array([2.0, -1.0, 3.0], jnp.float64))
    matvec = lambda v: {'u': a @ v['u']}
    # b^T A b < 0: the first direction already has negative curvature -> x = b, no step.
    b = {'u': jnp.array([0.1, 1.0, 0.1], jnp.float64)}
    x, iterations = meta._implicit._cg(matvec, b, 5)  # pylint: disable=protected-access
    np.testing.assert_array_equal(x['u'], b['u'])
    assert int(iterations) == 0
    # Positive curvature first, negative later: the iterate of the last good step is kept.
    b = {'u': jnp.array([1.0, 0.5, 0.0], jnp.float64)}
    x, iterations = meta._implicit._cg(matvec, b, 5)  # pylint: disable=protected-access
    assert int(iterations) == 1
    step = float(b['u'] @ b['u'] / (b['u'] @ a @ b['u']))
    np.testing.assert_allclose(x['u'], step * b['u'], rtol=1e-12)
    assert np.all(np.isfinite(np.asarray(x['u'])))


def test_pull_back_inner_solve_is_plain_steps_then_one_step_towards_theta():
  with jax.enable_x64(True):
    params, batch, inner, outer, q = _indefinite_quadratic()
    spec = meta.recipes.imaml(inner, outer, groups='head', steps=3, lr=0.05, lam=LAM,
                              cg_steps=4, damping=1.0, lam_damping=10.0,
                              pull_back=True, strategy='loop')
    out = meta.meta_gradient(spec, params, batch, RNG)
    theta, phi = params['head'], params['head']
    for _ in range(3):
      phi = phi - 0.05 * (q @ phi + batch['c'][0])
    phi = phi - 0.05 * LAM * (phi - theta)
    np.testing.assert_allclose(out.metrics['outer_loss'],
                               0.5 * jnp.sum((phi - batch['y'][0]) ** 2), rtol=1e-12)
    with pytest.raises(ValueError, match='pull-back'):
      meta.MetaSpec((meta.Stage('head', inner, optimizer=optax.sgd(0.1)),),
                    outer, meta.Implicit(pull_back=True))


@pytest.mark.parametrize('settings, problem', [
    (dict(lam=0.0), 'lam must be > 0'), (dict(lam=-1.0), 'lam must be > 0'),
    (dict(cg_steps=0), 'cg_steps must be >= 1'),
    (dict(damping=-1.0), 'damping and lam_damping must be >= 0'),
    (dict(lam_damping=-0.5), 'damping and lam_damping must be >= 0')])
def test_estimators_refuse_bad_settings_when_built(settings, problem):
  with pytest.raises(ValueError, match=problem):
    meta.Implicit(**settings)
  with pytest.raises(ValueError, match=problem):  # the registry's factory is the class
    meta.MODES.get('implicit')(**settings)


def test_other_estimators_check_their_settings_and_what_they_can_run():
  loss = lambda p, b, r: 0.0
  with pytest.raises(ValueError, match='first_order_until must be >= 0'):
    meta.Exact(first_order_until=-1)
  with pytest.raises(ValueError, match='anneal must be >= 1'):
    meta.MultiStep(meta.Exact(), anneal=0)
  with pytest.raises(ValueError, match='base must be an Estimator'):
    meta.MultiStep('exact')
  stage = meta.Stage('a', loss, lr=0.1)
  with pytest.raises(ValueError, match='Implicit cannot be wrapped'):
    meta.MetaSpec((stage,), loss, meta.MultiStep(meta.Implicit()))
  with pytest.raises(ValueError, match='learned rates'):
    meta.MetaSpec((meta.Stage('a', loss, learned_lr='lr'),), loss, meta.Implicit())
  spec = meta.recipes.imaml(loss, loss, groups='a', steps=2, lr=0.1, lam=3.0)
  assert spec.estimator == meta.Implicit(lam=3.0)  # settings live on the estimator
  assert meta.MetaSpec((stage,), loss, 'implicit').estimator == meta.Implicit()
  assert len(dataclasses.fields(meta.MetaSpec)) <= 8
