"""`Stage` and `MetaSpec`: the static description of a meta-update, checked in one place.

Params are a dict of named groups (group name -> any pytree). A `Stage` adapts one group (or
a tuple of groups, adapted together) for `steps` steps of its own loss and inner rule; its
loss receives the FULL params dict, in which earlier stages' groups are already adapted.
A `MetaSpec` chains stages, names the outer loss, the gradient estimator (`mode`), the task
strategy and the memory options. `mmtl_jax.meta.recipes` builds the usual ones.

Loss contracts (one task, no task axis; pure):
  without model state:  loss(params, batch, rng) -> scalar
  with model state:     loss(params, state, batch, rng) -> (scalar, new_state)
The outer loss has the same contract (its new state is discarded).

Randomness (the one place it is defined). The meta-iteration key `rng` gives
  task t:               k_t = fold_in(rng, t)             (whatever the task strategy)
  stage i, step s:      fold_in(fold_in(fold_in(k_t, 0), i), s)
  outer loss:           fold_in(k_t, 1)
  stage i's loss after adaptation (metrics only): fold_in(fold_in(k_t, 2), i)
  iMAML's Hessian-vector products: the stage-0 key folded with `steps`.
"""

import dataclasses
from typing import Any, Callable, Dict, Optional, Tuple, Union

import optax

from mmtl_jax.meta._estimators import MODES

PyTree = Any
Params = Dict[str, PyTree]
Loss = Callable[..., Any]
Group = Union[str, Tuple[str, ...]]

STRATEGIES = ('auto', 'vmap', 'map', 'loop', 'sharded')
TASK_REDUCES = ('mean', 'sum')
IMPLICIT = 'implicit'

# fold_in tags of a task key (module docstring).
RNG_ADAPT, RNG_OUTER, RNG_METRICS = 0, 1, 2


@dataclasses.dataclass(frozen=True)
class Stage:
  """One stage of the inner adaptation (hashable).

  Attributes:
    group: the params group name it adapts, or a tuple of names adapted together (then the
      adapted sub-tree, and learned rates, are the dict {name: params[name]}).
    loss: see the module docstring; gets the full params dict.
    steps: inner steps (>= 1; lax.scan over steps, straight-line code for one step).
    lr: plain SGD rate, p <- p - lr * g. Give exactly one of lr / optimizer / learned_lr,
      or optimizer together with learned_lr (which then scales the optimiser's update).
    optimizer: any optax GradientTransformation (e.g. optax.sgd(0.1, momentum=0.9),
      optax.adam(1e-2, eps_root=1e-8)); its state is created per task and is differentiable.
    learned_lr: name of the params group holding learned rates (Meta-SGD / MAML++ LSLR:
      `meta_sgd_rates`, `lslr_rates`); that group is meta-trained by the outer optimiser.
    per_step_lr: learned rates have a leading [steps] axis (MAML++ per-step rates).
    name: prefix of this stage's metrics ('{name}_loss_before', '{name}_loss_after');
      default the group name(s) joined by '+'.
    log_after: report the stage loss at the adapted params too (one extra forward pass).
    unroll: trace the steps as straight-line code instead of a loop (lax.scan unrolled):
      longer compiles, but XLA:CPU runs convolutions inside a loop body far slower (about 10x
      for a Conv4) than outside one.
  """

  group: Group
  loss: Loss
  steps: int = 1
  lr: Optional[float] = None
  optimizer: Optional[optax.GradientTransformation] = None
  learned_lr: Optional[str] = None
  per_step_lr: bool = False
  name: str = ''
  log_after: bool = False
  unroll: bool = False

  def __post_init__(self):
    if int(self.steps) < 1:
      raise ValueError(f'Stage steps must be >= 1, got {self.steps}')
    group = self.group if isinstance(self.group, tuple) else (self.group,)
    if not group or not all(isinstance(g, str) and g for g in group):
      raise ValueError(f'Stage group must be a name or a tuple of names, got {self.group!r}')
    if self.lr is not None and (self.optimizer is not None or self.learned_lr):
      raise ValueError('Stage: give lr alone, or optimizer and/or learned_lr (not with lr)')
    if self.lr is None and self.optimizer is None and not self.learned_lr:
      raise ValueError('Stage needs an inner rule: lr, optimizer or learned_lr')
    if self.per_step_lr and not self.learned_lr:
      raise ValueError('Stage per_step_lr needs learned_lr')
    if self.learned_lr in self.groups:
      raise ValueError(f'learned_lr group {self.learned_lr!r} is also adapted by the stage')

  @property
  def groups(self) -> Tuple[str, ...]:
    return (self.group,) if isinstance(self.group, str) else tuple(self.group)

  @property
  def label(self) -> str:
    return self.name or '+'.join(self.groups)


@dataclasses.dataclass(frozen=True)
class MetaSpec:
  """Everything static about a meta-update (hashable; usable as a static jit argument).

  Attributes:
    stages: the inner adaptation, a tuple of `Stage`s run in order.
    outer_loss: the outer (query) loss at the adapted params (module docstring).
    mode: the gradient estimator, a `MODES` name ('exact', 'first_order', 'reptile',
      'reptile_emotion', or a registered one) or 'implicit' (iMAML: exactly one stage).
      With learned rates, 'first_order' backpropagates through the stopped inner loop so
      that the rates get their gradient; params still see the identity Jacobian.
    strategy: how the task axis is computed: 'vmap', 'map' (lax.scan), 'loop' (Python loop
      traced into the jit), 'sharded' (tasks split over a device mesh) or 'auto' (CPU: loop,
      else vmap). See docs/META_API.md, "Task strategies".
    task_chunk: tasks per chunk for 'vmap' / 'sharded', accumulated (0 = all at once).
    task_groups: 'vmap' without task_chunk splits the tasks into this many vmapped groups
      run side by side (0 = two per CPU core on CPU, 1 on accelerators).
    task_reduce: 'mean' or 'sum' of the per-task directions.
    remat: rematerialise each inner step in the backward pass (exact mode memory).
    multi_step: MAML++ multi-step loss: the outer loss is sum_s w_s outer(params after step s
      of the LAST stage), w = `multi_step_weights(step, steps, multi_step_anneal)`.
    multi_step_anneal: outer steps over which w moves from uniform to the last step only.
    first_order_until: MAML++ derivative-order annealing: outer steps < this use
      'first_order', later ones `mode` (which must then be 'exact'); 0 = off.
    implicit_lam: iMAML's proximal strength lambda (> 0).
    cg_steps: iMAML's conjugate-gradient iterations.
    cg_damping, cg_lam_damping: iMAML's damped system (1 + cg_damping) I + H / (implicit_lam
      + cg_lam_damping) (0, 0: the exact implicit gradient; the iMAML authors' code: 1, 10).
    implicit_pull_back: iMAML's inner problem as the authors' code solves it: the stage on its
      own loss, then one SGD step (the stage's lr) on lam/2 ||phi - params||^2.
  """

  stages: Tuple[Stage, ...]
  outer_loss: Loss
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
  cg_damping: float = 0.0
  cg_lam_damping: float = 0.0
  implicit_pull_back: bool = False

  def __post_init__(self):
    object.__setattr__(self, 'stages', tuple(self.stages))
    problems = _problems(self)
    if problems:
      raise ValueError('invalid MetaSpec: ' + '; '.join(problems))

  @property
  def learned_rates(self) -> bool:
    return any(s.learned_lr for s in self.stages)

  @property
  def needs_step(self) -> bool:
    """Whether the meta-gradient depends on the outer step counter."""
    return self.multi_step or self.first_order_until > 0


def _problems(spec: MetaSpec) -> list:
  """Every problem of `spec`, as 'field: what is wrong' strings."""
  out = []
  if not spec.stages or not all(isinstance(s, Stage) for s in spec.stages):
    out.append('stages: need a non-empty sequence of Stage')
  if spec.mode != IMPLICIT and spec.mode not in MODES:
    out.append(f'mode: unknown {spec.mode!r}; known: {MODES.names() + (IMPLICIT,)}')
  if spec.strategy not in STRATEGIES:
    out.append(f'strategy: {spec.strategy!r} not in {STRATEGIES}')
  if spec.task_reduce not in TASK_REDUCES:
    out.append(f'task_reduce: {spec.task_reduce!r} not in {TASK_REDUCES}')
  for name in ('task_chunk', 'task_groups', 'first_order_until'):
    if getattr(spec, name) < 0:
      out.append(f'{name}: must be >= 0, got {getattr(spec, name)}')
  if spec.multi_step_anneal < 1:
    out.append(f'multi_step_anneal: must be >= 1, got {spec.multi_step_anneal}')
  if spec.first_order_until and spec.mode != 'exact':
    out.append("first_order_until: derivative-order annealing needs mode='exact'")
  if spec.mode == IMPLICIT:
    if len(spec.stages) != 1:
      out.append(f"mode: 'implicit' needs exactly one stage, got {len(spec.stages)}")
    if spec.multi_step or any(s.learned_lr for s in spec.stages if isinstance(s, Stage)):
      out.append("mode: 'implicit' supports neither multi_step nor learned rates")
  if spec.implicit_lam <= 0 or spec.cg_steps < 1:
    out.append('implicit_lam must be > 0 and cg_steps >= 1')
  if spec.cg_damping < 0 or spec.cg_lam_damping < 0:
    out.append(f'cg_damping and cg_lam_damping must be >= 0, got {spec.cg_damping} and '
               f'{spec.cg_lam_damping}')
  if spec.implicit_pull_back and spec.stages and isinstance(spec.stages[0], Stage) and (
      spec.stages[0].lr is None):
    out.append('implicit_pull_back: the stage needs a plain SGD rate (lr) for its pull-back '
               'step')
  return out


__all__ = ['IMPLICIT', 'STRATEGIES', 'TASK_REDUCES', 'MetaSpec', 'Params', 'PyTree', 'Stage']
