"""Adaptation of one task, stage after stage (`adapt_stages`).

Groups a stage does not adapt (ANIL's body, learned rates) pass through unchanged. When
`adapt_stages` gets a model state (e.g. Flax BatchNorm's 'batch_stats'), every inner step's
new state feeds the next step and the next stage ("threaded"), and stats['model_state']
holds the state after the last step. Whether normalisation uses the current batch's
statistics (transductive) or running averages (inductive) is the loss's choice; per-step
statistics (MAML++) are one one-step stage per inner step. See docs/META_API.md. Keys:
meta/spec.py's module docstring.
"""

from typing import Any, Dict, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp

from mmtl_jax.meta import _inner_optim
from mmtl_jax.meta.spec import RNG_ADAPT, RNG_METRICS, Loss, Params, PyTree, Stage


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


def stage_key(task_rng: jax.Array, index: int) -> jax.Array:
  """The key of stage `index` of a task (step s: fold_in(stage_key, s))."""
  return jax.random.fold_in(jax.random.fold_in(task_rng, RNG_ADAPT), index)


def _stage_rates(stage: Stage, params: Params, sub: PyTree) -> Optional[PyTree]:
  if not stage.learned_lr:
    return None
  if stage.learned_lr not in params:
    raise ValueError(f'Stage {stage.label!r}: no learned-rate group {stage.learned_lr!r} in '
                     f'params (groups {sorted(params)})')
  rates = params[stage.learned_lr]
  _inner_optim.check_rates(rates, sub, stage.steps, stage.per_step_lr)
  return rates


def run_stage(stage: Stage, params: Params, batch: PyTree, rng: jax.Array, *,
              state: Any = None, first_order: bool = False, remat: bool = False,
              trajectory: bool = False) -> Tuple[PyTree, jax.Array, Any, Optional[PyTree]]:
  """`stage.steps` inner steps of one stage; rng is the stage's key (step s: fold_in(rng, s)).

  Returns (adapted sub-tree, loss at the start of each step [steps], state after the last
  step (None without state), and with `trajectory` the sub-tree after each step stacked on a
  leading [steps] axis (else None)).
  """
  sub = get_group(params, stage)
  rates = _stage_rates(stage, params, sub)
  opt_state = _inner_optim.init_state(stage.optimizer, sub)

  def value_and_grad(p, st, r):
    fn = lambda q: call_loss(stage.loss, put_group(params, stage, q), st, batch, r)
    return jax.value_and_grad(fn, has_aux=True)(p)

  def step(carry, s):
    p, o, st = carry
    (loss, new_st), g = value_and_grad(p, st, jax.random.fold_in(rng, s))
    p, o = _inner_optim.update(p, g, o, lr=stage.lr, optimizer=stage.optimizer, rates=rates,
                               per_step=stage.per_step_lr, step=s, first_order=first_order)
    return (p, o, new_st), (loss, p if trajectory else None)

  if remat:
    step = jax.checkpoint(step, prevent_cse=False)
  if stage.steps == 1:
    # Same math as a scan of length 1, but XLA optimises straight-line code better than a
    # while-loop body (layouts, fusion across the step).
    (sub, _, state), (loss, path) = step((sub, opt_state, state), jnp.int32(0))
    losses = loss[None]
    path = None if path is None else jax.tree.map(lambda x: x[None], path)
  else:
    (sub, _, state), (losses, path) = jax.lax.scan(step, (sub, opt_state, state),
                                                   jnp.arange(stage.steps),
                                                   unroll=stage.steps if stage.unroll else 1)
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
    rng: the task's key (stage i draws from `stage_key(rng, i)`).
    first_order: hold the inner updates constant (FOMAML, Reptile).
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
    sub, losses, state, path = run_stage(stage, adapted, batch, stage_key(rng, index),
                                         state=state, first_order=first_order, remat=remat,
                                         trajectory=trajectory)
    adapted = put_group(adapted, stage, sub)
    stats[f'{stage.label}_loss_before'] = losses[0]
  if state is not None:
    stats['model_state'] = state
  if trajectory:
    stats['trajectory'] = path
  return adapted, stats


def after_losses(stages: Sequence[Stage], adapted: Params, batch: PyTree, rng: jax.Array,
                 state: Any) -> Dict[str, jax.Array]:
  """'{label}_loss_after' of each stage with log_after, at the adapted params; stage i
  draws from fold_in(fold_in(task key, RNG_METRICS), i)."""
  out = {}
  metrics_rng = jax.random.fold_in(rng, RNG_METRICS)
  for index, stage in enumerate(stages):
    if stage.log_after and jax.tree.leaves(get_group(adapted, stage)):
      key = jax.random.fold_in(metrics_rng, index)
      out[f'{stage.label}_loss_after'] = call_loss(stage.loss, adapted, state, batch, key)[0]
  return out
