"""Inner adaptation of one task: eq. 4 (theta, auxiliary loss) then eq. 5 (phi, target loss).

Nothing here knows about speech: the losses are user functions over parameter pytrees.

Loss contracts (one task, no task axis; all pure):
  inner_loss(theta, batch, rng) -> scalar       the eq. 4 loss. In MMTL it is the MEAN of the
      k auxiliary losses, so alpha * grad(inner_loss) is the paper's (alpha/k) sum_j grad L^{S,j}.
  transfer_loss(theta, phi, batch, rng) -> scalar   the eq. 5 loss (and the outer loss of
      eqs. 6-7 unless a separate outer_loss is given).
"""

from typing import Any, Callable, Dict, Tuple

import jax
import jax.numpy as jnp

from mmtl_jax.types import Params, PyTree

InnerLoss = Callable[[PyTree, PyTree, jax.Array], jax.Array]
TransferLoss = Callable[[PyTree, PyTree, PyTree, jax.Array], jax.Array]

# Fixed fold_in tags, so each use of a task's key is independent and reproducible.
RNG_INNER, RNG_TRANSFER, RNG_OUTER, RNG_METRICS = 0, 1, 2, 3


def check_params(params: Params) -> None:
  """Params must be exactly {'theta', 'phi'}: the optimiser partitions by these names."""
  if not isinstance(params, dict) or set(params) != {'theta', 'phi'}:
    keys = sorted(params) if isinstance(params, dict) else type(params).__name__
    raise ValueError(f"params must be a dict with keys 'theta' and 'phi', got {keys}")


def has_leaves(tree: PyTree) -> bool:
  return bool(jax.tree.leaves(tree))


def _sgd(params: PyTree, grads: PyTree, lr: float) -> PyTree:
  return jax.tree.map(lambda p, g: p - jnp.asarray(lr, p.dtype) * g.astype(p.dtype),
                      params, grads)


def _sgd_scan(loss_fn: Callable[[PyTree, jax.Array], jax.Array], params: PyTree, rng: jax.Array,
              lr: float, steps: int, first_order: bool, remat: bool) -> Tuple[PyTree, jax.Array]:
  """`steps` steps of p <- p - lr * grad loss_fn(p, rng_s) under lax.scan.

  Returns the final params and the loss at the start of each step, [steps].
  `first_order` stops the gradient of each step (FOMAML): d p_{s+1} / d p_s = I.
  `remat` saves only the carry per step and recomputes the step in the backward pass.
  """

  def step(p, s):
    loss, g = jax.value_and_grad(loss_fn)(p, jax.random.fold_in(rng, s))
    if first_order:
      g = jax.lax.stop_gradient(g)
    return _sgd(p, g, lr), loss

  if remat:
    step = jax.checkpoint(step, prevent_cse=False)
  if steps == 1:
    # Same math as a scan of length 1, but XLA optimises straight-line code better than a
    # while-loop body (layouts, fusion across the step), so one step, the paper's setting,
    # is traced without the loop.
    params, loss = step(params, jnp.int32(0))
    return params, loss[None]
  return jax.lax.scan(step, params, jnp.arange(steps))


def inner_adapt(params: Params, batch: PyTree, rng: jax.Array, inner_loss: InnerLoss,
                transfer_loss: TransferLoss, *, alpha: float, beta: float, inner_steps: int = 1,
                first_order: bool = False, remat: bool = False) -> Tuple[Params, Dict[str, Any]]:
  """Adapts {'theta', 'phi'} to one task: eq. 4 `inner_steps` times, then eq. 5 as often.

  theta'   = theta - alpha * grad_theta inner_loss(theta, batch)            (eq. 4, repeated)
  phi'     = phi   - beta  * grad_phi transfer_loss(theta', phi, batch)     (eq. 5, repeated)

  Args:
    params: {'theta': pytree, 'phi': pytree}; phi may be {} (plain MAML: eq. 5 is skipped).
    batch: one task's data (any pytree, no task axis), passed unchanged to the losses.
    rng: this task's key; step s of eq. 4 uses fold_in(fold_in(rng, RNG_INNER), s).
    inner_loss, transfer_loss: see the module docstring.
    alpha, beta: learning rates of eqs. 4 and 5.
    inner_steps: number of steps of each equation (lax.scan, not unrolled).
    first_order: stop gradients through the inner gradients (FOMAML / Reptile).
    remat: jax.checkpoint each inner step (exact mode: trades compute for memory).

  Returns:
    (adapted params {'theta': theta', 'phi': phi'}, stats) with stats
    'inner_loss_before' (at theta) and 'transfer_loss' (at theta', phi; eq. 5's first loss,
    absent when phi is empty).
  """
  check_params(params)
  theta, phi = params['theta'], params['phi']
  theta_adapted, inner_losses = _sgd_scan(
      lambda t, r: inner_loss(t, batch, r), theta, jax.random.fold_in(rng, RNG_INNER), alpha,
      inner_steps, first_order, remat)
  stats = {'inner_loss_before': inner_losses[0]}
  if has_leaves(phi):
    phi_adapted, transfer_losses = _sgd_scan(
        lambda p, r: transfer_loss(theta_adapted, p, batch, r), phi,
        jax.random.fold_in(rng, RNG_TRANSFER), beta, inner_steps, first_order, remat)
    stats['transfer_loss'] = transfer_losses[0]
  else:
    phi_adapted = phi
  return {'theta': theta_adapted, 'phi': phi_adapted}, stats
