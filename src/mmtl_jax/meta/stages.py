"""Adaptation as a sequence of stages, each adapting one named parameter group of one task.

Params are a dict of named groups (group name -> any pytree). A `Stage` adapts one group (or
a tuple of groups, adapted together) for `steps` steps of its own loss and inner optimiser;
its loss receives the FULL params dict, in which the groups adapted by earlier stages are
already adapted. Examples:
  MAML:    (Stage('net', support_loss, steps=5, lr=0.01),)
  ANIL:    (Stage('head', support_loss, steps=5, lr=0.1),)      'body' is never adapted
  MMTL:    (Stage('theta', aux_loss, lr=alpha), Stage('phi', transfer_loss, lr=beta))
  Meta-SGD: Stage('net', loss, steps=1, learned_lr='lr') with params['lr'] = meta_sgd_rates
Groups a stage does not adapt (the body of ANIL, learned rates) pass through unchanged.

Loss contracts (one task, no task axis; pure):
  without model state:  loss(params, batch, rng) -> scalar
  with model state:     loss(params, state, batch, rng) -> (scalar, new_state)
`state` is any pytree that a forward pass updates, e.g. Flax BatchNorm's 'batch_stats'. When
`adapt_stages` gets a state, every inner step's new state feeds the next step and the next
stage ("threaded"), and stats['model_state'] holds the state after the last step. Whether
normalisation uses the current batch's statistics (transductive: `train=True` at test time
too) or running averages (inductive: `use_running_average=True` at test time, with the running
averages the meta-step returns) is the loss's choice. Per-step statistics (MAML++) are one
one-step stage per inner step, each loss closing over its step number and using its own slice
of a state whose leaves carry a leading [steps] axis. See docs/META_API.md.

Randomness: stage i draws from fold_in(task_rng, stage_tag(i)) and its step s from
fold_in(that key, s). Tags 2 and 3 are the outer loss's and the metrics' (see meta/inner.py),
so stages 0, 1 use tags 0, 1 (MMTL's eq. 4 and eq. 5 keys) and stage i >= 2 uses i + 2.
"""

import dataclasses
from typing import Any, Callable, Dict, Optional, Sequence, Tuple, Union

import jax
import jax.numpy as jnp
import optax

from mmtl_jax.meta import inner_opt
from mmtl_jax.types import Params, PyTree

Loss = Callable[..., Any]  # see the module docstring
Group = Union[str, Tuple[str, ...]]

RNG_OUTER, RNG_METRICS = 2, 3  # the fold_in tags of the outer loss and of the metrics


@dataclasses.dataclass(frozen=True)
class Stage:
  """One stage of the inner adaptation (hashable: usable inside a static jit argument).

  Attributes:
    group: the params group name it adapts, or a tuple of names adapted together (then the
      adapted sub-tree, and learned rates, are the dict {name: params[name]}).
    loss: see the module docstring; gets the full params dict.
    steps: inner steps (>= 1; lax.scan over steps, straight-line code for one step).
    lr: plain SGD rate, p <- p - lr * grad. Give exactly one of lr / optimizer / learned_lr,
      or optimizer together with learned_lr (which then scales the optimiser's update).
    optimizer: any optax GradientTransformation (e.g. optax.sgd(0.1, momentum=0.9),
      optax.adam(1e-2, eps_root=1e-8)); its state is created per task and is differentiable.
    learned_lr: name of the params group holding learned rates (Meta-SGD / MAML++ LSLR; see
      `mmtl_jax.meta.inner_opt`); that group is meta-trained by the outer optimiser.
    per_step_lr: learned rates have a leading [steps] axis (MAML++ per-step rates).
    name: prefix of this stage's stats ('{name}_loss_before', '{name}_loss_after'); default
      the group name(s) joined by '+'.
    log_after: report the stage loss at the adapted params too (one extra forward pass).
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

  def __post_init__(self):
    if self.steps < 1:
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


def stage_tag(index: int) -> int:
  """fold_in tag of stage `index` (0, 1, then 4, 5, ...: 2 and 3 are outer and metrics)."""
  return index if index < RNG_OUTER else index + 2


def get_group(params: Params, stage: Stage) -> PyTree:
  """The sub-tree a stage adapts: params[group], or {name: params[name]} for a tuple."""
  missing = [g for g in stage.groups if g not in params]
  if missing:
    raise ValueError(f'Stage {stage.label!r}: params have no group(s) {missing}; '
                     f'groups are {sorted(params)}')
  if isinstance(stage.group, str):
    return params[stage.group]
  return {g: params[g] for g in stage.groups}


def put_group(params: Params, stage: Stage, sub: PyTree) -> Params:
  """params with the stage's group(s) replaced by `sub` (a new dict; params unchanged)."""
  if isinstance(stage.group, str):
    return {**params, stage.group: sub}
  return {**params, **sub}


def call_loss(loss: Loss, params: Params, state: Any, batch: PyTree, rng: jax.Array
              ) -> Tuple[jax.Array, Any]:
  """(loss value, new state) under either loss contract (state None: no model state)."""
  if state is None:
    return loss(params, batch, rng), None
  out = loss(params, state, batch, rng)
  if not (isinstance(out, tuple) and len(out) == 2):
    raise ValueError('with model state, a loss must return (scalar, new_state), got '
                     f'{type(out).__name__}')
  return out


def _stage_rates(stage: Stage, params: Params, sub: PyTree) -> Optional[PyTree]:
  if not stage.learned_lr:
    return None
  if stage.learned_lr not in params:
    raise ValueError(f'Stage {stage.label!r}: no learned-rate group {stage.learned_lr!r} in '
                     f'params (groups {sorted(params)})')
  rates = params[stage.learned_lr]
  inner_opt.check_rates(rates, sub, stage.steps, stage.per_step_lr)
  return rates


def run_stage(stage: Stage, params: Params, batch: PyTree, rng: jax.Array, *,
              state: Any = None, first_order: bool = False, remat: bool = False,
              trajectory: bool = False) -> Tuple[PyTree, jax.Array, Any, Optional[PyTree]]:
  """`stage.steps` inner steps of one stage; rng is the stage's key (step s: fold_in(rng, s)).

  Returns (adapted sub-tree, loss at the start of each step [steps], state after the last
  step (None without state), and with `trajectory` the sub-tree after each step stacked on a
  leading [steps] axis (else None)). `first_order` holds each update constant (see
  `inner_opt`); `remat` recomputes each step in the backward pass (memory of exact mode).
  """
  sub = get_group(params, stage)
  rates = _stage_rates(stage, params, sub)
  opt_state = inner_opt.init_state(stage.optimizer, sub)

  def value_and_grad(p, st, r):
    fn = lambda q: call_loss(stage.loss, put_group(params, stage, q), st, batch, r)
    return jax.value_and_grad(fn, has_aux=True)(p)

  def step(carry, s):
    p, o, st = carry
    (loss, new_st), g = value_and_grad(p, st, jax.random.fold_in(rng, s))
    p, o = inner_opt.update(p, g, o, lr=stage.lr, optimizer=stage.optimizer, rates=rates,
                            per_step=stage.per_step_lr, step=s, first_order=first_order)
    return (p, o, new_st), (loss, p if trajectory else None)

  if remat:
    step = jax.checkpoint(step, prevent_cse=False)
  if stage.steps == 1:
    # Same math as a scan of length 1, but XLA optimises straight-line code better than a
    # while-loop body (layouts, fusion across the step), so one step is traced without it.
    (sub, _, state), (loss, path) = step((sub, opt_state, state), jnp.int32(0))
    losses = loss[None]
    path = None if path is None else jax.tree.map(lambda x: x[None], path)
  else:
    (sub, _, state), (losses, path) = jax.lax.scan(step, (sub, opt_state, state),
                                                   jnp.arange(stage.steps))
  return sub, losses, state, path


def adapt_stages(stages: Sequence[Stage], params: Params, batch: PyTree, rng: jax.Array, *,
                 first_order: bool = False, state: Any = None, remat: bool = False,
                 trajectory: bool = False) -> Tuple[Params, Dict[str, Any]]:
  """Adapts `params` to one task, stage after stage (each sees the earlier stages' output).

  Args:
    stages: the stages, in order. A stage whose group has no leaves (e.g. MMTL's phi = {}) is
      skipped.
    params: dict of named groups; must hold every stage's group(s) and learned-rate group.
    batch: one task's data (no task axis), passed unchanged to the losses.
    rng: the task's key (stage i: fold_in(rng, stage_tag(i)); see the module docstring).
    first_order: hold the inner updates constant (FOMAML, Reptile; see `inner_opt`).
    state: model state threaded through every step of every stage, or None (no state).
    remat: jax.checkpoint each inner step.
    trajectory: also return stats['trajectory'], the LAST stage's group after each of its
      steps, stacked on a leading [steps] axis (MAML++ multi-step loss).

  Returns:
    (adapted params: same groups as params, stats): stats['{label}_loss_before'] is each
    run stage's loss at its first step (scalar); stats['model_state'] the state after the
    last step (only when state is not None).
  """
  adapted, stats, path = dict(params), {}, None
  for index, stage in enumerate(stages):
    if not jax.tree.leaves(get_group(adapted, stage)):
      continue
    sub, losses, state, path = run_stage(
        stage, adapted, batch, jax.random.fold_in(rng, stage_tag(index)), state=state,
        first_order=first_order, remat=remat, trajectory=trajectory)
    adapted = put_group(adapted, stage, sub)
    stats[f'{stage.label}_loss_before'] = losses[0]
  if state is not None:
    stats['model_state'] = state
  if trajectory:
    stats['trajectory'] = path
  return adapted, stats


def after_losses(stages: Sequence[Stage], adapted: Params, batch: PyTree, rng: jax.Array,
                 state: Any) -> Dict[str, jax.Array]:
  """'{label}_loss_after' of each stage with log_after, at the (stop-gradient) adapted params.

  Stage 0 uses key fold_in(rng, 3) (MMTL's inner_loss_after); stage i > 0
  fold_in(fold_in(rng, 3), stage_tag(i)).
  """
  out = {}
  metrics_rng = jax.random.fold_in(rng, RNG_METRICS)
  for index, stage in enumerate(stages):
    if stage.log_after:
      key = metrics_rng if index == 0 else jax.random.fold_in(metrics_rng, stage_tag(index))
      out[f'{stage.label}_loss_after'] = call_loss(stage.loss, adapted, state, batch, key)[0]
  return out


__all__ = ['Stage', 'adapt_stages', 'after_losses', 'call_loss', 'get_group', 'put_group',
           'run_stage', 'stage_tag']
