"""`MetaSpec`: the static description of a stage-based meta-update (any meta-learner).

  spec = MetaSpec(stages=(Stage('net', support_loss, steps=5, lr=0.01),),
                  outer_loss=query_loss, mode='exact')
  grads, metrics = stage_meta_gradient(spec, params, task_batch, rng)
  init_fn, step_fn = make_stage_step(spec, group_optimizer({'net': optax.adam(1e-3)}))

outer_loss(params, batch, rng) -> scalar, or with model state
outer_loss(params, state, batch, rng) -> (scalar, new_state) (its new state is discarded), is
evaluated at the adapted params with key fold_in(task_rng, 2).
"""

import dataclasses
from typing import Callable, Tuple

from mmtl_jax.meta.config import STRATEGIES, TASK_REDUCES
from mmtl_jax.meta.modes import MODES
from mmtl_jax.meta.stages import Stage

IMPLICIT = 'implicit'


@dataclasses.dataclass(frozen=True)
class MetaSpec:
  """Hashable settings of a stage-based meta-update (a static jit argument).

  Attributes:
    stages: the inner adaptation, a tuple of `Stage`s run in order.
    outer_loss: the outer (query) loss at the adapted params (module docstring).
    mode: a `MODES` name ('exact', 'first_order', 'reptile', 'reptile_emotion', or a
      registered one) or 'implicit' (iMAML: needs exactly one stage; see meta/implicit.py).
      With learned rates, 'first_order' backpropagates through the (stop-gradient) inner
      loop so that the rates get their gradient; params still see the identity Jacobian.
    strategy: task strategy, as `MetaConfig.strategy` ('auto', 'vmap', 'map', 'loop',
      'sharded').
    task_chunk, task_groups, task_reduce, remat: as in `MetaConfig`.
    multi_step: MAML++ multi-step loss: the outer loss is sum_s w_s outer(params after step s
      of the LAST stage), w = `multi_step_weights(step, steps, multi_step_anneal)`.
    multi_step_anneal: outer steps over which w moves from uniform to the last step only.
    first_order_until: MAML++ derivative-order annealing: outer steps < this use
      'first_order', later ones `mode` (which must then be 'exact'); 0 = off.
    implicit_lam: iMAML's proximal strength lambda (> 0).
    cg_steps: iMAML's conjugate-gradient iterations (fixed, lax.fori_loop).
  """

  stages: Tuple[Stage, ...]
  outer_loss: Callable
  mode: str = 'exact'
  strategy: str = 'auto'
  task_chunk: int = 0
  task_groups: int = 0
  task_reduce: str = 'mean'
  remat: bool = False
  multi_step: bool = False
  multi_step_anneal: int = 1
  first_order_until: int = 0
  implicit_lam: float = 1.0
  cg_steps: int = 10

  def __post_init__(self):
    object.__setattr__(self, 'stages', tuple(self.stages))
    if not self.stages or not all(isinstance(s, Stage) for s in self.stages):
      raise ValueError('MetaSpec needs a non-empty sequence of Stage')
    if self.mode != IMPLICIT:
      MODES.get(self.mode)  # ValueError listing the registered modes
    if self.strategy not in STRATEGIES:
      raise ValueError(f'meta strategy {self.strategy!r} not in {STRATEGIES}')
    if self.task_reduce not in TASK_REDUCES:
      raise ValueError(f'task_reduce {self.task_reduce!r} not in {TASK_REDUCES}')
    if self.first_order_until and self.mode != 'exact':
      raise ValueError("first_order_until (derivative-order annealing) needs mode='exact'")
    if self.mode == IMPLICIT:
      _check_implicit(self)
    if (self.multi_step_anneal < 1 or self.first_order_until < 0 or self.task_chunk < 0
        or self.task_groups < 0):
      raise ValueError('multi_step_anneal must be >= 1; first_order_until, task_chunk and '
                       'task_groups >= 0')

  @property
  def learned_rates(self) -> bool:
    return any(s.learned_lr for s in self.stages)

  @property
  def needs_step(self) -> bool:
    """Whether the meta-gradient depends on the outer step counter."""
    return self.multi_step or self.first_order_until > 0


def _check_implicit(spec: MetaSpec) -> None:
  if len(spec.stages) != 1:
    raise ValueError(f"mode 'implicit' needs exactly one stage, got {len(spec.stages)}")
  if spec.multi_step or spec.learned_rates:
    raise ValueError("mode 'implicit' supports neither multi_step nor learned rates")
  if spec.implicit_lam <= 0 or spec.cg_steps < 1:
    raise ValueError('implicit_lam must be > 0 and cg_steps >= 1')


__all__ = ['IMPLICIT', 'MetaSpec']
