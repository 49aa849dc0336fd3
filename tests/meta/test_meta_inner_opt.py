"""Inner optimisers of a Stage: optax transformations (per-task state, differentiable),
first-order stop-gradients, and learned rates (Meta-SGD per parameter, MAML++ LSLR per
layer and step) trained by the outer step."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mmtl_jax import meta

RNG = jax.random.PRNGKey(4)


def _problem(dtype=jnp.float32, tasks=2):
  """A 1-8-1 tanh regression net; support/query sets of 4 points per task."""
  k = jax.random.split(jax.random.PRNGKey(0), 6)
  net = {'w1': jax.random.normal(k[0], (1, 8), dtype), 'b1': jnp.zeros((8,), dtype),
         'w2': 0.5 * jax.random.normal(k[1], (8, 1), dtype)}
  x = jax.random.uniform(k[2], (tasks, 8, 1), dtype, -2, 2)
  y = jnp.sin(x + jax.random.uniform(k[3], (tasks, 1, 1), dtype))
  batch = {'sx': x[:, :4], 'sy': y[:, :4], 'qx': x[:, 4:], 'qy': y[:, 4:]}

  def predict(p, xs):
    return jnp.tanh(xs @ p['net']['w1'] + p['net']['b1']) @ p['net']['w2']

  support = lambda p, b, r: jnp.mean((predict(p, b['sx']) - b['sy']) ** 2)
  query = lambda p, b, r: jnp.mean((predict(p, b['qx']) - b['qy']) ** 2)
  return {'net': net}, batch, support, query


def _task(batch, t=0):
  return jax.tree.map(lambda x: x[t], batch)


@pytest.mark.parametrize('optimizer', [optax.sgd(0.1, momentum=0.9),
                                       optax.adam(0.05, eps_root=1e-8)], ids=['momentum', 'adam'])
def test_an_optax_inner_optimizer_matches_a_plain_optax_loop(optimizer):
  params, batch, support, _ = _problem()
  task = _task(batch)
  adapted, _ = meta.adapt_stages((meta.Stage('net', support, steps=3, optimizer=optimizer),),
                                 params, task, RNG)
  net, state = params['net'], optimizer.init(params['net'])
  for _ in range(3):
    g = jax.grad(lambda n: support({'net': n}, task, None))(net)
    updates, state = optimizer.update(g, state, net)
    net = optax.apply_updates(net, updates)
  for got, want in zip(jax.tree.leaves(adapted['net']), jax.tree.leaves(net)):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


STAGES = {
    'momentum': lambda loss, params: (meta.Stage('net', loss, steps=2,
                                                 optimizer=optax.sgd(0.2, momentum=0.9)),
                                      params),
    'adam': lambda loss, params: (meta.Stage('net', loss, steps=2,
                                             optimizer=optax.adam(0.1, eps_root=1e-8)), params),
    'meta_sgd': lambda loss, params: (meta.Stage('net', loss, learned_lr='lr'), dict(
        params, lr=jax.tree.map(lambda r: r * (1 + jnp.arange(r.size).reshape(r.shape) / 9),
                                meta.meta_sgd_rates(params['net'], 0.3)))),
    'lslr': lambda loss, params: (meta.Stage('net', loss, steps=3, learned_lr='lr',
                                             per_step_lr=True),
                                  dict(params, lr=meta.lslr_rates(params['net'], 3, 0.3))),
}


@pytest.mark.slow  # float64 finite differences
@pytest.mark.parametrize('name', sorted(STAGES))
def test_exact_gradient_through_the_inner_optimizer_matches_finite_differences(name):
  with jax.enable_x64(True):
    params, batch, support, query = _problem(jnp.float64)
    stage, params = STAGES[name](support, params)
    spec = meta.MetaSpec((stage,), query, estimator='exact', strategy='map')
    grads = jax.jit(lambda p: meta.meta_gradient(spec, p, batch, RNG).grads)(params)
    objective = jax.jit(lambda p: meta.meta_objective(spec, p, batch, RNG))
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(9), len(leaves))
    d = treedef.unflatten([jax.random.normal(k, l.shape, jnp.float64)
                           for k, l in zip(keys, leaves)])
    eps = 1e-6
    fd = (objective(jax.tree.map(lambda p, v: p + eps * v, params, d))
          - objective(jax.tree.map(lambda p, v: p - eps * v, params, d))) / (2 * eps)
    analytic = sum(jnp.vdot(g, v) for g, v in zip(jax.tree.leaves(grads), jax.tree.leaves(d)))
    assert abs(float(fd - analytic)) <= 1e-6 * abs(float(analytic)), (float(fd),
                                                                       float(analytic))
    if 'lr' in params:  # the rates do get a gradient
      assert float(optax.tree.norm(grads['lr'])) > 1e-3


@pytest.mark.slow  # over 5 s alone
def test_first_order_holds_the_inner_update_constant_but_not_the_learned_rates():
  params, batch, support, query = _problem()
  task = _task(batch)
  params = dict(params, lr=meta.meta_sgd_rates(params['net'], 0.2))
  stage = meta.Stage('net', support, steps=2, learned_lr='lr',
                     optimizer=optax.scale_by_adam(eps_root=1e-8))
  one_task = jax.tree.map(lambda x: x[None], task)  # a meta-batch of this task alone
  grads = meta.meta_gradient(meta.MetaSpec((stage,), query, estimator='first_order'), params,
                             one_task, RNG).grads

  def hand(p):  # the same two steps, the Adam direction wrapped in stop_gradient
    net, state, adam = p['net'], None, optax.scale_by_adam(eps_root=1e-8)
    state = adam.init(net)
    for _ in range(2):
      g = jax.grad(lambda n: support({'net': n}, task, None))(net)
      u, state = adam.update(g, state, net)
      u = jax.lax.stop_gradient(u)
      net = jax.tree.map(lambda n, r, v: n + r * v, net, p['lr'], u)
    return query({'net': net}, task, None), net

  (_, adapted), want = jax.value_and_grad(hand, has_aux=True)(params)
  # params: the identity Jacobian, i.e. d outer / d params = grad outer at the adapted net.
  direct = jax.grad(lambda n: query({'net': n}, task, None))(adapted)
  for got, w, dr in zip(jax.tree.leaves(grads), jax.tree.leaves(want),
                        jax.tree.leaves({'lr': want['lr'], 'net': direct})):
    np.testing.assert_allclose(got, w, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(got, dr, rtol=1e-4, atol=1e-6)
  assert float(optax.tree.norm(grads['lr'])) > 1e-4
  exact = meta.meta_gradient(meta.MetaSpec((stage,), query), params, one_task, RNG).grads
  assert not np.allclose(exact['net']['w1'], grads['net']['w1'], rtol=1e-3)


def test_lslr_uses_rate_s_at_step_s():
  params, batch, support, _ = _problem()
  task = _task(batch)
  rates = jax.tree.map(lambda r: r * jnp.array([1.0, 0.5, 0.1]),
                       meta.lslr_rates(params['net'], 3, 0.2))
  adapted, _ = meta.adapt_stages(
      (meta.Stage('net', support, steps=3, learned_lr='lr', per_step_lr=True),),
      dict(params, lr=rates), task, RNG)
  net = params['net']
  for s, rate in enumerate((0.2, 0.1, 0.02)):
    g = jax.grad(lambda n: support({'net': n}, task, None))(net)
    net = jax.tree.map(lambda n, gg, r=rate: n - r * gg, net, g)
  for got, want in zip(jax.tree.leaves(adapted['net']), jax.tree.leaves(net)):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize('mode', ['exact', 'first_order'])
def test_meta_sgd_rates_move_under_the_outer_optimizer(mode):
  params, batch, support, query = _problem(tasks=4)
  params = dict(params, lr=meta.meta_sgd_rates(params['net'], 0.1))
  spec = meta.MetaSpec((meta.Stage('net', support, learned_lr='lr'),), query, estimator=mode,
                       strategy='vmap')
  init_fn, step_fn = meta.make_step(
      spec, meta.group_optimizer({'net': optax.adam(1e-2), 'lr': optax.adam(1e-2)}))
  state = init_fn(params)
  assert isinstance(state, meta.MetaState) and state.model is None
  step = jax.jit(step_fn)
  new = params
  for i in range(3):
    new, state, metrics = step(new, state, batch, jax.random.fold_in(RNG, i))
  assert int(state.step) == 3
  moved = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), new['lr'], params['lr'])
  assert min(jax.tree.leaves(moved)) > 1e-3, moved  # every rate leaf was trained
  assert np.isfinite(float(metrics['outer_loss']))


def test_learned_rates_are_checked_against_the_group():
  params, batch, support, _ = _problem()
  task = _task(batch)
  bad = {'w1': jnp.ones((2,)), 'b1': jnp.ones((8,)), 'w2': jnp.ones((8, 1))}
  with pytest.raises(ValueError, match='does not broadcast'):
    meta.adapt_stages((meta.Stage('net', support, learned_lr='lr'),), dict(params, lr=bad),
                      task, RNG)
  with pytest.raises(ValueError, match='leading axis of 3 steps'):
    meta.adapt_stages((meta.Stage('net', support, steps=3, learned_lr='lr',
                                  per_step_lr=True),),
                      dict(params, lr=meta.lslr_rates(params['net'], 2)), task, RNG)
  with pytest.raises(ValueError, match="no learned-rate group 'lr'"):
    meta.adapt_stages((meta.Stage('net', support, learned_lr='lr'),), params, task, RNG)
