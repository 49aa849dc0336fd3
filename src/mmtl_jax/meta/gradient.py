"""The meta-gradient of a `MetaSpec` over a meta-batch of tasks, under every task strategy.

  out = meta_gradient(spec, params, task_batch, rng, state=None, step=None)
  out.grads, out.metrics, out.state          # one return shape, whatever the options

Task t always uses the key fold_in(rng, t), so every strategy ('vmap', 'map', 'loop',
'sharded') gives the same result up to float reassociation. With derivative-order annealing
(spec.first_order_until = k) both the first-order and the exact meta-gradient are compiled
into one program and `lax.cond` on the outer step picks one: a jitted step compiles once.
"""

from typing import Any, Dict, NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp

from mmtl_jax.meta import _implicit, _tasks
from mmtl_jax.meta._adaptation import adapt_stages, after_losses, call_loss, get_group, put_group
from mmtl_jax.meta._estimators import MODES, Mode, first_order_through
from mmtl_jax.meta.spec import IMPLICIT, RNG_OUTER, MetaSpec, Params, PyTree

Metrics = Dict[str, jax.Array]


class MetaGradient(NamedTuple):
  """What `meta_gradient` returns.

  grads: shaped like params, reduced over tasks by spec.task_reduce (the mode's direction,
    e.g. the Reptile direction in mode 'reptile').
  metrics: means over tasks: '{stage}_loss_before', '{stage}_loss_after' (stages with
    log_after) and 'outer_loss'.
  state: the mean over tasks of each task's adapted model state (None without state).
  """
  grads: Params
  metrics: Metrics
  state: Any


def multi_step_weights(step: Any, steps: int, anneal: int) -> jax.Array:
  """MAML++'s multi-step loss weights [steps] at outer step `step` (may be traced), in the
  default float dtype (float64 under jax_enable_x64).

  Uniform 1/steps at step 0; over `anneal` outer steps every non-final weight decays
  linearly to 0.03/steps and the final one grows to 1 - 0.03 (steps-1)/steps (the schedule of
  Antoniou et al.'s reference code, counted in outer steps instead of epochs).
  """
  dtype = jnp.result_type(float)
  t = jnp.asarray(step, dtype)
  decay = jnp.asarray(1.0 / steps / anneal, dtype)
  low = jnp.asarray(0.03 / steps, dtype)
  non_final = jnp.maximum(1.0 / steps - t * decay, low)
  final = jnp.minimum(1.0 / steps + t * (steps - 1) * decay, 1.0 - (steps - 1) * low)
  return jnp.concatenate([jnp.full((steps - 1,), non_final, dtype), final[None]])


def _mode_fn(spec: MetaSpec, mode: str) -> Mode:
  if mode == 'first_order' and spec.learned_rates:
    return first_order_through
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


def task_direction(spec: MetaSpec, params: Params, batch: PyTree, rng: jax.Array, *,
                   state: Any = None, weights: Optional[jax.Array] = None,
                   mode: Optional[str] = None) -> Tuple[Params, Metrics, Any]:
  """Outer direction of ONE task; `rng` is already the task's key.

  weights: [steps of the last stage] multi-step loss weights (exactly when spec.multi_step).
  mode: overrides spec.mode (derivative-order annealing picks 'first_order' or 'exact').
  Returns (direction shaped like params, metrics of scalars, the adapted model state or None).
  """
  mode = mode or spec.mode
  if mode == IMPLICIT:
    return _implicit.task_gradient(spec, params, batch, rng, state=state)
  outer_rng = jax.random.fold_in(rng, RNG_OUTER)
  seen = {}  # what the last adapt() returned: read by outer() in the same trace

  def adapt(p, first_order):
    adapted, stats = adapt_stages(spec.stages, p, batch, rng, first_order=first_order,
                                  state=state, remat=spec.remat, trajectory=spec.multi_step)
    seen.update(final=adapted, state=stats.get('model_state'),
                path=stats.pop('trajectory', None))
    return adapted, stats

  def outer(adapted):
    if spec.multi_step:
      return _multi_step_outer(spec, seen['final'], adapted, seen['path'], seen['state'],
                               batch, outer_rng, weights)
    return call_loss(spec.outer_loss, adapted, seen['state'], batch, outer_rng)[0]

  grads, loss, adapted, stats = _mode_fn(spec, mode)(params, adapt, outer)
  new_state = stats.pop('model_state', None)
  metrics = dict(stats, outer_loss=loss)
  metrics.update(after_losses(spec.stages, adapted, batch, rng, new_state))
  return grads, metrics, new_state


def _mean_state(state: Any, n: int) -> Any:
  return jax.tree.map(lambda s: (s / n).astype(s.dtype), state)


def _over_tasks(spec: MetaSpec, mode: str, params: Params, task_batch: PyTree, rng: jax.Array,
                state: Any, weights: Optional[jax.Array], mesh) -> Tuple[Params, Metrics, Any]:
  """(grads reduced by task_reduce, mean metrics, mean adapted state) for one mode."""
  if (_tasks.resolve(spec.strategy) == 'sharded' and not _tasks.in_task_shard(mesh)):
    # params, state and weights enter the shard_map as explicit (replicated) inputs.
    def local(inputs, batch, r):
      p, st, w = inputs
      grads, metrics, new_state = _over_tasks(spec, mode, p, batch, r, st, w, mesh)
      return grads, (metrics, new_state)

    grads, (metrics, new_state) = _tasks.on_task_shards(local, mesh, spec.task_reduce)(
        (params, state, weights), task_batch, rng)
    return grads, metrics, new_state

  def per_task(batch, task_index):
    return task_direction(spec, params, batch, jax.random.fold_in(rng, task_index),
                          state=state, weights=weights, mode=mode)

  n = _tasks.num_tasks(task_batch)
  grads, metrics, new_state = _tasks.sum_over_tasks(per_task, task_batch, spec.strategy,
                                                    spec.task_chunk, mesh, spec.task_groups)
  scale = 1.0 if spec.task_reduce == 'sum' else 1.0 / n
  grads = jax.tree.map(lambda g: g * jnp.asarray(scale, g.dtype), grads)
  return grads, jax.tree.map(lambda m: m / n, metrics), _mean_state(new_state, n)


def _weights(spec: MetaSpec, step: Any) -> Optional[jax.Array]:
  if not spec.multi_step:
    return None
  return multi_step_weights(step, spec.stages[-1].steps, spec.multi_step_anneal)


def meta_gradient(spec: MetaSpec, params: Params, task_batch: PyTree, rng: jax.Array, *,
                  state: Any = None, step: Any = None,
                  mesh: Optional[jax.sharding.Mesh] = None) -> MetaGradient:
  """Meta-gradient of `spec` over a meta-batch (pure; jit it).

  Args:
    spec: a `MetaSpec`.
    params: dict of named groups (including learned-rate groups).
    task_batch: pytree whose leaves share a leading task axis.
    rng: this meta-iteration's key; task t uses fold_in(rng, t) (meta/spec.py).
    state: model state shared by all tasks at the start (None: losses take no state).
    step: the outer step (int or traced int32); needed by multi_step and first_order_until.
    mesh: for strategy 'sharded' (default: all devices, axis 'tasks').

  Returns:
    `MetaGradient(grads, metrics, state)`.
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
  return MetaGradient(*out)


def _task_objective(spec: MetaSpec, params: Params, batch: PyTree, rng: jax.Array,
                    state: Any, weights: Optional[jax.Array]) -> jax.Array:
  """ONE task's outer loss after the full differentiable adaptation (for 'implicit', after
  the proximal adaptation)."""
  stages = spec.stages
  if spec.mode == IMPLICIT:
    stages = _implicit.inner_stages(spec, params)
  adapted, stats = adapt_stages(stages, params, batch, rng, state=state, remat=spec.remat,
                                trajectory=spec.multi_step)
  outer_rng = jax.random.fold_in(rng, RNG_OUTER)
  new_state = stats.get('model_state')
  if spec.multi_step:
    return _multi_step_outer(spec, adapted, adapted, stats['trajectory'], new_state, batch,
                             outer_rng, weights)
  return call_loss(spec.outer_loss, adapted, new_state, batch, outer_rng)[0]


def meta_objective(spec: MetaSpec, params: Params, task_batch: PyTree, rng: jax.Array, *,
                   state: Any = None, step: Any = None) -> jax.Array:
  """The scalar whose gradient 'exact' computes: mean (or sum) over tasks of the outer loss
  (multi-step weighted) after the full, differentiable adaptation; for 'implicit', after the
  proximal adaptation. Tasks mapped sequentially; for finite-difference checks."""
  weights = _weights(spec, step)

  def one(args):
    batch, task_index = args
    return _task_objective(spec, params, batch, jax.random.fold_in(rng, task_index), state,
                           weights)

  n = _tasks.num_tasks(task_batch)
  losses = jax.lax.map(one, (task_batch, jnp.arange(n)))
  return losses.sum() if spec.task_reduce == 'sum' else losses.mean()


__all__ = ['MetaGradient', 'meta_gradient', 'meta_objective', 'multi_step_weights',
           'task_direction']
