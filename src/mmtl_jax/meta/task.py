"""One task's outer direction under a `MetaSpec`: adaptation by stages, then the mode.

The mode (`MODES`) sees `adapt(params, first_order)` = `adapt_stages` and `outer(adapted)` =
the outer loss at the adapted params (with the adapted model state, and for the multi-step
loss the weighted sum over the last stage's steps). 'implicit' goes to meta/implicit.py.
"""

from typing import Any, Dict, Optional, Tuple

import jax
import jax.numpy as jnp

from mmtl_jax.meta import implicit
from mmtl_jax.meta.modes import MODES, Mode, exact
from mmtl_jax.meta.spec import IMPLICIT, MetaSpec
from mmtl_jax.meta.stages import (RNG_OUTER, adapt_stages, after_losses, call_loss, get_group,
                                  put_group)
from mmtl_jax.types import Params, PyTree

Metrics = Dict[str, jax.Array]


def _first_order_through(params, adapt, outer):
  """'first_order' when rates are learned: differentiate through the stopped inner loop, so
  params get grad outer(adapted) (identity Jacobian) and learned rates their gradient."""
  return exact(params, lambda p, _: adapt(p, True), outer)


def mode_fn(spec: MetaSpec, mode: Optional[str] = None) -> Mode:
  """The mode function of `mode` (default spec.mode) for this spec."""
  mode = mode or spec.mode
  if mode == 'first_order' and spec.learned_rates:
    return _first_order_through
  return MODES.get(mode)


def _multi_step_outer(spec, params_final, adapted, path, state, batch, rng, weights):
  """sum_s w_s outer(adapted with the last stage's group at step s).

  The group at step s is path[s] + (adapted - final): equal to path[s] in value, it carries
  the gradient of `adapted` whatever the mode did to it (first order: d/d adapted = I for
  every s), and in exact mode adapted is final, so each path[s] keeps its own dependence.
  """
  stage = spec.stages[-1]
  shift = jax.tree.map(jnp.subtract, get_group(adapted, stage), get_group(params_final, stage))

  def one(sub):
    sub = jax.tree.map(jnp.add, sub, shift)
    return call_loss(spec.outer_loss, put_group(adapted, stage, sub), state, batch, rng)[0]

  losses = jax.lax.map(one, path)
  return jnp.sum(weights.astype(losses.dtype) * losses)


def task_stage_gradient(spec: MetaSpec, params: Params, batch: PyTree, rng: jax.Array, *,
                        state: Any = None, weights: Optional[jax.Array] = None,
                        mode: Optional[str] = None) -> Tuple[Params, Metrics, Any]:
  """Outer direction of ONE task; `rng` is already the task's key.

  Args:
    spec: the `MetaSpec`. params: dict of named groups. batch: one task's data.
    state: model state (None: the losses take none), threaded through the inner steps.
    weights: [steps of the last stage] multi-step loss weights (needed iff spec.multi_step).
    mode: overrides spec.mode (derivative-order annealing picks 'first_order' or 'exact').

  Returns:
    (direction shaped like params, metrics of scalars: '{stage}_loss_before',
    '{stage}_loss_after' (stages with log_after), 'outer_loss'; the adapted model state or
    None).
  """
  if (weights is None) == spec.multi_step:
    raise ValueError('weights must be given exactly when spec.multi_step is set')
  if (mode or spec.mode) == IMPLICIT:
    return implicit.task_gradient(spec, params, batch, rng, state=state)
  outer_rng = jax.random.fold_in(rng, RNG_OUTER)
  seen = {}  # what the last adapt() returned: read by outer() in the same trace

  def adapt(p, first_order):
    adapted, stats = adapt_stages(spec.stages, p, batch, rng, first_order=first_order,
                                  state=state, remat=spec.remat, trajectory=spec.multi_step)
    seen.update(final=adapted, state=stats.get('model_state'), path=stats.pop('trajectory',
                                                                              None))
    return adapted, stats

  def outer(adapted):
    if spec.multi_step:
      return _multi_step_outer(spec, seen['final'], adapted, seen['path'], seen['state'],
                               batch, outer_rng, weights)
    return call_loss(spec.outer_loss, adapted, seen['state'], batch, outer_rng)[0]

  grads, loss, adapted, stats = mode_fn(spec, mode)(params, adapt, outer)
  new_state = stats.pop('model_state', None)
  metrics = dict(stats, outer_loss=loss)
  metrics.update(after_losses(spec.stages, adapted, batch, rng, new_state))
  return grads, metrics, new_state


def task_objective(spec: MetaSpec, params: Params, batch: PyTree, rng: jax.Array, *,
                   state: Any = None, weights: Optional[jax.Array] = None) -> jax.Array:
  """ONE task's outer loss after the full differentiable adaptation (the function whose
  gradient mode 'exact' computes); for 'implicit', after the proximal adaptation."""
  stages = spec.stages
  if spec.mode == IMPLICIT:
    stage = stages[0]
    stages = (implicit.proximal_stage(stage, get_group(params, stage), spec.implicit_lam),)
  adapted, stats = adapt_stages(stages, params, batch, rng, state=state, remat=spec.remat,
                                trajectory=spec.multi_step)
  outer_rng = jax.random.fold_in(rng, RNG_OUTER)
  new_state = stats.get('model_state')
  if spec.multi_step:
    return _multi_step_outer(spec, adapted, adapted, stats['trajectory'], new_state, batch,
                             outer_rng, weights)
  return call_loss(spec.outer_loss, adapted, new_state, batch, outer_rng)[0]


__all__ = ['mode_fn', 'task_objective', 'task_stage_gradient']
