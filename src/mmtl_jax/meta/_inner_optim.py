"""Inner update rules of a `Stage`: plain SGD, any optax transformation, learned rates.

One inner step of a stage maps (group params p, gradient g, optimiser state) to p':
  lr only:                p' = p - lr * g
  optimizer (optax):      p' = p + u,  (u, state') = optimizer.update(g, state, p)
  learned_lr (+/- optax): p' = p + r * u,  u = optimizer's update or -g; r the learned rates
Everything is differentiable (exact mode differentiates through the optimiser's state too;
use `meta.inner_adam` there rather than optax.adam, whose derivative is NaN where a gradient
entry is exactly 0: meta/_inner_adam.py). The optimiser state is created per task inside
the per-task function.

First order (`first_order=True`): the update u (and the state it came from) is held
constant, so d p'/d p = I; learned rates r are NOT stopped, so d p'/d r = u and Meta-SGD /
MAML++ rates still get a gradient.

Learned rates live in `params[stage.learned_lr]`, a group of their own that the outer
optimiser updates. Their leaves mirror the adapted group's leaves:
  per_step_lr=False: each rate leaf broadcasts against its parameter leaf: the same shape
    (Meta-SGD, `meta_sgd_rates`) or a scalar (one learned rate per layer);
  per_step_lr=True: each rate leaf has a leading [steps] axis, the rest broadcasting against
    the parameter leaf: shape [steps] is MAML++'s per-layer per-step rate (`lslr_rates`).
"""

from typing import Any, Optional, Tuple

import jax
import jax.numpy as jnp
import optax

PyTree = Any


def meta_sgd_rates(group: PyTree, init: float = 0.01) -> PyTree:
  """Meta-SGD (Li et al. 2017) rates: one per parameter entry, shaped like `group`, = init."""
  return jax.tree.map(lambda p: jnp.full(jnp.shape(p), init, jnp.result_type(p)), group)


def lslr_rates(group: PyTree, steps: int, init: float = 0.01) -> PyTree:
  """MAML++ LSLR rates (Antoniou et al. 2019): one per leaf ("layer") and step, each [steps]."""
  return jax.tree.map(lambda p: jnp.full((steps,), init, jnp.result_type(p)), group)


def check_rates(rates: PyTree, group: PyTree, steps: int, per_step: bool) -> None:
  """ValueError unless `rates` has `group`'s structure and broadcastable leaves."""
  if jax.tree.structure(rates) != jax.tree.structure(group):
    raise ValueError(f'learned rates must mirror the adapted group: got structure '
                     f'{jax.tree.structure(rates)}, want {jax.tree.structure(group)}')
  for r, p in zip(jax.tree.leaves(rates), jax.tree.leaves(group)):
    shape = jnp.shape(r)
    if per_step:
      if not shape or shape[0] != steps:
        raise ValueError(f'per-step rates need a leading axis of {steps} steps, got {shape}')
      shape = shape[1:]
    try:
      jnp.broadcast_shapes(shape, jnp.shape(p))
    except ValueError as e:
      raise ValueError(f'rate shape {shape} does not broadcast to parameter shape '
                       f'{jnp.shape(p)}') from e


def init_state(optimizer: Optional[optax.GradientTransformation], group: PyTree) -> Any:
  """The inner optimiser's state for one task ((): plain SGD)."""
  return () if optimizer is None else optimizer.init(group)


def _sgd(params: PyTree, grads: PyTree, lr: float) -> PyTree:
  return jax.tree.map(lambda p, g: p - jnp.asarray(lr, p.dtype) * g.astype(p.dtype),
                      params, grads)


def _rate(r: jax.Array, step: jax.Array, per_step: bool) -> jax.Array:
  return r[step] if per_step else r


def update(group: PyTree, grads: PyTree, opt_state: Any, *, lr: Optional[float],
           optimizer: Optional[optax.GradientTransformation], rates: Optional[PyTree],
           per_step: bool, step: jax.Array, first_order: bool) -> Tuple[PyTree, Any]:
  """One inner step of one group (see the module docstring). Returns (p', state')."""
  if optimizer is None and rates is None:
    if first_order:
      grads = jax.lax.stop_gradient(grads)
    return _sgd(group, grads, lr), opt_state
  if optimizer is None:
    updates = jax.tree.map(jnp.negative, grads)
  else:
    updates, opt_state = optimizer.update(grads, opt_state, group)
  if first_order:
    updates, opt_state = jax.lax.stop_gradient((updates, opt_state))
  if rates is not None:
    updates = jax.tree.map(lambda u, r: (_rate(r, step, per_step) * u).astype(u.dtype),
                           updates, rates)
  return optax.apply_updates(group, updates), opt_state
