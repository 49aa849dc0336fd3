"""`Stage` and `MetaSpec`: the static description of a meta-update, checked in one place.

Params are a dict of named groups (group name -> any pytree). A `Stage` adapts one group (or
a tuple of groups, adapted together) for `steps` steps of its own loss and inner rule; its
loss receives the FULL params dict, in which earlier stages' groups are already adapted.
A `MetaSpec` chains stages, names the outer loss, the gradient estimator (an `Estimator`
object owning its settings), the task strategy and the memory option. `mmtl_jax.meta.recipes` builds the usual ones.

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

from mmtl_jax.meta import _checks
from mmtl_jax.meta._estimators import MODES, Estimator, Exact

PyTree = Any
Params = Dict[str, PyTree]
Loss = Callable[..., Any]
Group = Union[str, Tuple[str, ...]]

STRATEGIES = ('auto', 'vmap', 'map', 'loop', 'sharded')
TASK_REDUCES = ('mean', 'sum')

# fold_in tags of a task key (module docstring).
RNG_ADAPT, RNG_OUTER, RNG_METRICS = 0, 1, 2


@dataclasses.dataclass(frozen=True)
class Stage:
  """One stage of the inner adaptation (hashable).

  Attributes:
    group: the params group name it adapts, or a tuple of names adapted together (then the
      adapted sub-tree, and learned rates, are the dict {name: params[name]}).
    loss: see the module docstring; gets the full params dict.
    steps: inner steps, an int >= 1 (lax.scan over steps, straight-line code for one step).
    lr: plain SGD rate, p <- p - lr * g: a finite number > 0 (a negative rate, gradient
      ascent, is refused). Give exactly one of lr / optimizer / learned_lr,
      or optimizer together with learned_lr (which then scales the optimiser's update).
    optimizer: any optax GradientTransformation (e.g. optax.sgd(0.1, momentum=0.9),
      `meta.inner_adam(1e-2)`: optax.adam's exact meta-gradient is NaN at zero gradient
      entries); its state is created per task and is differentiable.
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
    problems = _checks.problems(
        _checks.count_problem('steps', self.steps, 1),
        None if self.lr is None else _checks.number_problem(
            'lr', self.lr, positive=True, hint=' (a negative rate would ascend the loss)'))
    group = self.group if isinstance(self.group, tuple) else (self.group,)
    if not group or not all(isinstance(g, str) and g for g in group):
      problems.append(f'group must be a name or a tuple of names, got {self.group!r}')
    if self.lr is not None and (self.optimizer is not None or self.learned_lr):
      problems.append('give lr alone, or optimizer and/or learned_lr (not with lr)')
    if self.lr is None and self.optimizer is None and not self.learned_lr:
      problems.append('needs an inner rule: lr, optimizer or learned_lr')
    if self.per_step_lr and not self.learned_lr:
      problems.append('per_step_lr needs learned_lr')
    if self.learned_lr and self.learned_lr in group:
      problems.append(f'learned_lr group {self.learned_lr!r} is also adapted by the stage')
    if problems:
      raise ValueError('Stage: ' + '; '.join(problems))

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
    estimator: the gradient estimator, an `Estimator` (meta/_estimators.py: `Exact()`,
      `FirstOrder()`, `Reptile()`, `ReptileEmotion()`, `Implicit(lam=...)`, `MultiStep(...)`,
      or a registered one) or a `MODES` name, built with its defaults ('exact', 'implicit',
      ...). It owns its settings and their checks; `problems(spec)` says what it cannot do
      with these stages (e.g. `Implicit` needs exactly one).
    strategy: how the task axis is computed: 'vmap', 'map' (lax.scan), 'loop' (Python loop
      traced into the jit), 'sharded' (tasks split over a device mesh) or 'auto' (CPU: loop,
      else vmap). See docs/META_API.md, "Task strategies".
    task_chunk: tasks per chunk for 'vmap' / 'sharded', accumulated (0 = all at once).
    task_groups: 'vmap' without task_chunk splits the tasks into this many vmapped groups
      run side by side (0 = two per CPU core on CPU, 1 on accelerators).
    task_reduce: 'mean' or 'sum' of the per-task directions.
    remat: rematerialise each inner step in the backward pass (exact mode memory).
  """

  stages: Tuple[Stage, ...]
  outer_loss: Loss
  estimator: Any = Exact()
  strategy: str = 'auto'
  task_chunk: int = 0
  task_groups: int = 0
  task_reduce: str = 'mean'
  remat: bool = False

  def __post_init__(self):
    object.__setattr__(self, 'stages', tuple(self.stages))
    if isinstance(self.estimator, str) and self.estimator in MODES:
      object.__setattr__(self, 'estimator', MODES.get(self.estimator)())
    problems = _problems(self)
    if problems:
      raise ValueError('invalid MetaSpec: ' + '; '.join(problems))

  @property
  def learned_rates(self) -> bool:
    return any(s.learned_lr for s in self.stages)

  @property
  def needs_step(self) -> bool:
    """Whether the meta-gradient depends on the outer step counter (the estimator's
    schedule: multi-step weights, derivative-order annealing)."""
    return self.estimator.needs_step


def _problems(spec: MetaSpec) -> list:
  """Every problem of `spec`, as 'field: what is wrong' strings; the estimator adds its own."""
  out = []
  stages_ok = bool(spec.stages) and all(isinstance(s, Stage) for s in spec.stages)
  if not stages_ok:
    out.append('stages: need a non-empty sequence of Stage')
  if not isinstance(spec.estimator, Estimator):
    out.append(f'estimator: unknown {spec.estimator!r}; known: {MODES.names()} '
               '(or an Estimator)')
  elif stages_ok:
    out.extend(spec.estimator.problems(spec))
  if spec.strategy not in STRATEGIES:
    out.append(f'strategy: {spec.strategy!r} not in {STRATEGIES}')
  if spec.task_reduce not in TASK_REDUCES:
    out.append(f'task_reduce: {spec.task_reduce!r} not in {TASK_REDUCES}')
  for name in ('task_chunk', 'task_groups'):
    problem = _checks.count_problem(name, getattr(spec, name), 0)
    if problem:
      out.append(problem.replace(f'{name} ', f'{name}: ', 1))
  return out


__all__ = ['STRATEGIES', 'TASK_REDUCES', 'MetaSpec', 'Params', 'PyTree', 'Stage']
