"""`inner_adam`: Adam as an inner optimiser that exact meta-gradients can differentiate
through where a gradient entry is exactly 0.

Adam's update is u = -lr m / (sqrt(v) + eps) with v the moving average of g^2. Where every
gradient of an entry so far was exactly 0 (a dead ReLU unit, common at initialisation),
v = 0 and m = 0. The update is still differentiable there (m is linear in the gradients and
vanishes with them: du = -lr dm / eps), but the chain rule through sqrt multiplies the
cotangent of sqrt(v), lr m / (sqrt(v) + eps)^2 = 0, by sqrt's derivative 1 / (2 sqrt(v)) = inf:
0 * inf = NaN, and the NaN then spreads to every parameter the update touches. optax.adam's
`eps_root` > 0 avoids the NaN but changes the function (sqrt(v + eps_root)), so its
meta-gradient is not the derivative of Adam (docs/META_API.md has the sizes).

`inner_adam` computes optax.adam(eps_root=0)'s values with the same operations (bit for bit),
with one change to the derivative: its sqrt has derivative 0 where its argument is 0, the
choice of `higher`'s DifferentiableAdam (which masks the gradient of the second moment where
it is 0). At v = 0 that is the exact derivative (the term it drops is multiplied by m = 0);
elsewhere it is sqrt's own.
"""

from typing import Any, Callable, Union

import jax
import jax.numpy as jnp
import optax

from mmtl_jax.meta._checks import number_problem, problems

Rate = Union[float, Callable[[jax.Array], jax.Array]]


@jax.custom_jvp
def sqrt_zero_grad(x: jax.Array) -> jax.Array:
  """jnp.sqrt(x) whose derivative is 0 where x == 0 (1 / (2 sqrt(x)) elsewhere); every
  derivative order is finite at 0 (the tangent divides by sqrt of a `where`-guarded x)."""
  return jnp.sqrt(x)


@sqrt_zero_grad.defjvp
def _sqrt_zero_grad_jvp(primals, tangents):
  (x,), (t,) = primals, tangents
  positive = x > 0
  # The double where: the untaken branch divides by sqrt(1), never by sqrt(0), so neither
  # this tangent nor its own derivative is inf * 0.
  safe = jnp.sqrt(jnp.where(positive, x, jnp.ones_like(x)))
  return sqrt_zero_grad(x), jnp.where(positive, t / (2 * safe), jnp.zeros_like(t))


def scale_by_inner_adam(b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8
                        ) -> optax.GradientTransformation:
  """optax.scale_by_adam(b1, b2, eps, eps_root=0) with `sqrt_zero_grad` (module docstring);
  the same state (optax.ScaleByAdamState) and the same operations in the same order."""

  def init_fn(params):
    mu, nu = optax.tree.zeros_like(params), optax.tree.zeros_like(params)
    return optax.ScaleByAdamState(count=jnp.zeros([], jnp.int32), mu=mu, nu=nu)

  def update_fn(updates, state, params=None):
    del params
    mu = optax.tree.update_moment(updates, state.mu, b1, 1)
    nu = optax.tree.update_moment_per_elem_norm(updates, state.nu, b2, 2)
    count = optax.safe_increment(state.count)
    mu_hat = optax.tree.bias_correction(mu, b1, count)
    nu_hat = optax.tree.bias_correction(nu, b2, count)
    updates = jax.tree.map(lambda m, v: m / (sqrt_zero_grad(v) + eps), mu_hat, nu_hat)
    return updates, optax.ScaleByAdamState(count=count, mu=mu,
                                           nu=optax.tree.cast_like(nu, state.nu))

  return optax.GradientTransformation(init_fn, update_fn)


def _problems(learning_rate: Any, b1: Any, b2: Any, eps: Any) -> list:
  found = [] if callable(learning_rate) else [
      number_problem('learning_rate', learning_rate, positive=True)]
  for name, value in (('b1', b1), ('b2', b2)):
    problem = number_problem(name, value, positive=False)
    if not problem and not value < 1:
      problem = f'{name} must be < 1, got {value}'
    found.append(problem)
  # eps = 0 would make the update at a zero gradient 0 / 0.
  found.append(number_problem('eps', eps, positive=True,
                              hint=' (the update at a zero gradient is 0 / (0 + eps))'))
  return problems(*found)


def inner_adam(learning_rate: Rate, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8
               ) -> optax.GradientTransformation:
  """Adam for a `Stage`'s `optimizer` in exact mode: the values of
  optax.adam(learning_rate, b1, b2, eps, eps_root=0), bit for bit, with a derivative that is
  exact and finite where gradient entries are exactly 0 (module docstring; optax.adam's is
  NaN there). learning_rate: a finite number > 0 or an optax schedule.

  Raises:
    ValueError: a setting out of range (one line naming each).
  """
  found = _problems(learning_rate, b1, b2, eps)
  if found:
    raise ValueError('inner_adam: ' + '; '.join(found))
  return optax.chain(scale_by_inner_adam(b1, b2, eps),
                     optax.scale_by_learning_rate(learning_rate))


__all__ = ['inner_adam', 'scale_by_inner_adam', 'sqrt_zero_grad']
