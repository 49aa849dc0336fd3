"""Inner adaptation of one task: eq. 4 (theta, auxiliary loss) then eq. 5 (phi, target loss).

Nothing here knows about speech: the losses are user functions over parameter pytrees. MMTL
is two stages of the general stage API (`mmtl_jax.meta.stages`): `mmtl_stages`.

Loss contracts (one task, no task axis; all pure):
  inner_loss(theta, batch, rng) -> scalar       the eq. 4 loss. In MMTL it is the MEAN of the
      k auxiliary losses, so alpha * grad(inner_loss) is the paper's (alpha/k) sum_j grad L^{S,j}.
  transfer_loss(theta, phi, batch, rng) -> scalar   the eq. 5 loss (and the outer loss of
      eqs. 6-7 unless a separate outer_loss is given).
"""

from typing import Any, Callable, Dict, Tuple

import jax

from mmtl_jax.meta.stages import RNG_METRICS, RNG_OUTER, Stage, adapt_stages
from mmtl_jax.types import Params, PyTree

InnerLoss = Callable[[PyTree, PyTree, jax.Array], jax.Array]
TransferLoss = Callable[[PyTree, PyTree, PyTree, jax.Array], jax.Array]

# Fixed fold_in tags, so each use of a task's key is independent and reproducible (stages 0
# and 1 of `mmtl_stages` use tags 0 and 1; see `stages.stage_tag`).
RNG_INNER, RNG_TRANSFER = 0, 1


def check_params(params: Params) -> None:
  """Params must be exactly {'theta', 'phi'}: the optimiser partitions by these names."""
  if not isinstance(params, dict) or set(params) != {'theta', 'phi'}:
    keys = sorted(params) if isinstance(params, dict) else type(params).__name__
    raise ValueError(f"params must be a dict with keys 'theta' and 'phi', got {keys}")


def has_leaves(tree: PyTree) -> bool:
  return bool(jax.tree.leaves(tree))


def mmtl_stages(inner_loss: InnerLoss, transfer_loss: TransferLoss, *, alpha: float,
                beta: float, inner_steps: int = 1, log_inner_after: bool = False
                ) -> Tuple[Stage, Stage]:
  """Eqs. 4-5 as two `Stage`s: 'inner' adapts theta on inner_loss by SGD(alpha), then
  'transfer' adapts phi on transfer_loss at theta' by SGD(beta); `inner_steps` steps each.

  Stage 0 and 1 draw from fold_in(rng, RNG_INNER) and fold_in(rng, RNG_TRANSFER), the keys
  MMTL always used, so the stage path is bit-identical to the original two-loop code.
  """
  return (Stage('theta', lambda p, b, r: inner_loss(p['theta'], b, r), steps=inner_steps,
                lr=alpha, name='inner', log_after=log_inner_after),
          Stage('phi', lambda p, b, r: transfer_loss(p['theta'], p['phi'], b, r),
                steps=inner_steps, lr=beta, name='transfer'))


def mmtl_stats(stats: Dict[str, Any]) -> Dict[str, Any]:
  """Stage stats under MMTL's names: 'transfer_loss_before' is reported as 'transfer_loss'."""
  stats = dict(stats)
  if 'transfer_loss_before' in stats:
    stats['transfer_loss'] = stats.pop('transfer_loss_before')
  return stats


def inner_adapt(params: Params, batch: PyTree, rng: jax.Array, inner_loss: InnerLoss,
                transfer_loss: TransferLoss, *, alpha: float, beta: float, inner_steps: int = 1,
                first_order: bool = False, remat: bool = False) -> Tuple[Params, Dict[str, Any]]:
  """Adapts {'theta', 'phi'} to one task: eq. 4 `inner_steps` times, then eq. 5 as often.

  theta'   = theta - alpha * grad_theta inner_loss(theta, batch)            (eq. 4, repeated)
  phi'     = phi   - beta  * grad_phi transfer_loss(theta', phi, batch)     (eq. 5, repeated)

  The two `mmtl_stages` run by `adapt_stages`.

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
  stages = mmtl_stages(inner_loss, transfer_loss, alpha=alpha, beta=beta,
                       inner_steps=inner_steps)
  adapted, stats = adapt_stages(stages, params, batch, rng, first_order=first_order,
                                remat=remat)
  return adapted, mmtl_stats(stats)


__all__ = ['RNG_INNER', 'RNG_METRICS', 'RNG_OUTER', 'RNG_TRANSFER', 'InnerLoss', 'TransferLoss',
           'check_params', 'has_leaves', 'inner_adapt', 'mmtl_stages', 'mmtl_stats']
