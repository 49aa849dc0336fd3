"""The stage-based meta-gradient over a meta-batch of tasks, under every task strategy.

  grads, metrics = stage_meta_gradient(spec, params, task_batch, rng)            # no state
  grads, metrics, state = stage_meta_gradient(spec, params, task_batch, rng, state=state)

Task t always uses the key fold_in(rng, t), so every strategy ('vmap', 'map', 'loop',
'sharded') gives the same result up to float reassociation. With derivative-order annealing
(spec.first_order_until = k) both the first-order and the exact meta-gradient are compiled
into one program and `lax.cond` on the outer step picks one: a jitted step compiles once.
"""

from typing import Any, Optional, Tuple

import jax
import jax.numpy as jnp

from mmtl_jax.meta import strategy as strategy_lib
from mmtl_jax.meta.spec import MetaSpec
from mmtl_jax.meta.task import Metrics, task_objective, task_stage_gradient
from mmtl_jax.types import Params, PyTree


def task_rng(rng: jax.Array, task_index: jax.Array) -> jax.Array:
  """The key of task `task_index` (its position on the task axis of the meta-batch)."""
  return jax.random.fold_in(rng, task_index)


def multi_step_weights(step: Any, steps: int, anneal: int) -> jax.Array:
  """MAML++'s multi-step loss weights [steps] at outer step `step` (may be traced).

  Uniform 1/steps at step 0; over `anneal` outer steps every non-final weight decays
  linearly to 0.03/steps and the final one grows to 1 - 0.03 (steps-1)/steps (the schedule of
  Antoniou et al.'s reference code, counted in outer steps instead of epochs).
  """
  t = jnp.asarray(step, jnp.float32)
  decay = 1.0 / steps / anneal
  low = 0.03 / steps
  non_final = jnp.maximum(1.0 / steps - t * decay, low)
  final = jnp.minimum(1.0 / steps + t * (steps - 1) * decay, 1.0 - (steps - 1) * low)
  return jnp.concatenate([jnp.full((steps - 1,), non_final), final[None]])


def _weights(spec: MetaSpec, step: Any) -> Optional[jax.Array]:
  return (multi_step_weights(step, spec.stages[-1].steps, spec.multi_step_anneal)
          if spec.multi_step else None)


def _mean_state(state: Any, n: int) -> Any:
  return jax.tree.map(lambda s: (s / n).astype(s.dtype), state)


def _over_tasks(spec: MetaSpec, mode: str, params: Params, task_batch: PyTree, rng: jax.Array,
                state: Any, weights: Optional[jax.Array], mesh) -> Tuple[Params, Metrics, Any]:
  """(grads reduced by task_reduce, mean metrics, mean adapted state) for one mode."""
  if (strategy_lib.resolve(spec.strategy) == 'sharded'
      and not strategy_lib.in_task_shard(mesh)):
    # params, state and weights enter the shard_map as explicit (replicated) inputs.
    def local(inputs, batch, r):
      p, st, w = inputs
      grads, metrics, new_state = _over_tasks(spec, mode, p, batch, r, st, w, mesh)
      return grads, (metrics, new_state)

    grads, (metrics, new_state) = strategy_lib.on_task_shards(local, mesh, spec.task_reduce)(
        (params, state, weights), task_batch, rng)
    return grads, metrics, new_state

  def per_task(batch, task_index):
    return task_stage_gradient(spec, params, batch, task_rng(rng, task_index), state=state,
                               weights=weights, mode=mode)

  n = strategy_lib.num_tasks(task_batch)
  grads, metrics, new_state = strategy_lib.sum_over_tasks(per_task, task_batch, spec.strategy,
                                                          spec.task_chunk, mesh,
                                                          spec.task_groups)
  scale = 1.0 if spec.task_reduce == 'sum' else 1.0 / n
  grads = jax.tree.map(lambda g: g * jnp.asarray(scale, g.dtype), grads)
  return grads, jax.tree.map(lambda m: m / n, metrics), _mean_state(new_state, n)


def stage_meta_gradient(spec: MetaSpec, params: Params, task_batch: PyTree, rng: jax.Array, *,
                        state: Any = None, step: Any = None,
                        mesh: Optional[jax.sharding.Mesh] = None):
  """Meta-gradient of `spec` over a meta-batch (pure; jit it).

  Args:
    spec: a `MetaSpec`.
    params: dict of named groups (including learned-rate groups).
    task_batch: pytree whose leaves share a leading task axis.
    rng: this meta-iteration's key; task t uses fold_in(rng, t).
    state: model state shared by all tasks at the start (None: losses take no state).
    step: the outer step (int or traced int32); required by multi_step and
      first_order_until.
    mesh: for strategy 'sharded' (default: all devices).

  Returns:
    (grads, metrics) or, when state is given, (grads, metrics, new_state): grads shaped like
    params and reduced over tasks by spec.task_reduce; metrics means over tasks
    ('{stage}_loss_before', '{stage}_loss_after', 'outer_loss'); new_state the mean over tasks
    of each task's adapted model state (float leaves; e.g. BatchNorm running averages).
  """
  if spec.needs_step and step is None:
    raise ValueError('this MetaSpec (multi_step / first_order_until) needs the outer step')
  weights = _weights(spec, step)
  run = lambda mode: _over_tasks(spec, mode, params, task_batch, rng, state, weights, mesh)
  if spec.first_order_until:
    out = jax.lax.cond(jnp.asarray(step) < spec.first_order_until,
                       lambda: run('first_order'), lambda: run(spec.mode))
  else:
    out = run(spec.mode)
  return out if state is not None else out[:2]


def stage_objective(spec: MetaSpec, params: Params, task_batch: PyTree, rng: jax.Array, *,
                    state: Any = None, step: Any = None) -> jax.Array:
  """The scalar whose gradient 'exact' computes: mean (or sum) over tasks of the outer loss
  (multi-step weighted) after the full, differentiable adaptation; for 'implicit', after the
  proximal adaptation. Tasks mapped sequentially; for finite-difference checks."""
  weights = _weights(spec, step)

  def one(args):
    batch, task_index = args
    return task_objective(spec, params, batch, task_rng(rng, task_index), state=state,
                          weights=weights)

  n = strategy_lib.num_tasks(task_batch)
  losses = jax.lax.map(one, (task_batch, jnp.arange(n)))
  return losses.sum() if spec.task_reduce == 'sum' else losses.mean()


__all__ = ['multi_step_weights', 'stage_meta_gradient', 'stage_objective', 'task_rng']
