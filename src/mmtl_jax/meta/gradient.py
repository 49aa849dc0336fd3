"""The meta-gradient of a `MetaSpec` over a meta-batch of tasks, under every task strategy.

  out = meta_gradient(spec, params, task_batch, rng, state=None, step=None)
  out.grads, out.metrics, out.state          # one return shape, whatever the options

The engine: the spec's estimator's `schedule` picks, for the outer step, the estimator the
task axis runs and the MAML++ multi-step weights (derivative-order annealing compiles both
estimators into one program and `lax.cond` on the outer step picks one: a jitted step
compiles once); then each task's direction is `estimator.direction(params, Task(...))`,
summed over tasks by the task axis (meta/_tasks.py). Task t always uses the key
fold_in(rng, t), so every strategy ('vmap', 'map', 'loop', 'sharded') gives the same result
up to float reassociation. Under 'sharded' there is one shard_map, at the top, whose body is
the device-local sum with the real task count passed in.
"""

from typing import Any, Dict, NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp

from mmtl_jax.meta import _tasks
from mmtl_jax.meta._adaptation import adapt_stages, after_losses, call_loss, get_group, put_group
from mmtl_jax.meta._checks import check_params
from mmtl_jax.meta._estimators import Estimator, multi_step_weights
from mmtl_jax.meta.spec import RNG_OUTER, MetaSpec, Params, PyTree

Metrics = Dict[str, jax.Array]


class MetaGradient(NamedTuple):
  """What `meta_gradient` returns.

  grads: shaped like params, reduced over tasks by spec.task_reduce (the estimator's
    direction, e.g. the Reptile direction with `Reptile()`).
  metrics: means over tasks: '{stage}_loss_before', '{stage}_loss_after' (stages with
    log_after), 'outer_loss' and the estimator's own (e.g. iMAML's 'cg_residual').
  state: the mean over tasks of each task's adapted model state (None without state).
  """
  grads: Params
  metrics: Metrics
  state: Any


def _multi_step_outer(spec, params_final, adapted, path, state, batch, rng, weights):
  """sum_s w_s outer(adapted with the last stage's group at step s).

  The group at step s is path[s] + (adapted - final): equal to path[s] in value, it carries
  the gradient of `adapted` whatever the estimator did to it (first order: d/d adapted = I
  for every s), and in exact mode adapted is final, so each path[s] keeps its own dependence.
  """
  stage = spec.stages[-1]
  shift = jax.tree.map(jnp.subtract, get_group(adapted, stage), get_group(params_final, stage))

  def one(sub):
    sub = jax.tree.map(jnp.add, sub, shift)
    return call_loss(spec.outer_loss, put_group(adapted, stage, sub), state, batch, rng)[0]

  losses = jax.lax.map(one, path)
  return jnp.sum(weights.astype(losses.dtype) * losses)


class Task:
  """One task as an estimator sees it (meta/_estimators.py's contract).

  spec, batch (no task axis), rng (the task's key), state (model state or None), weights
  (the multi-step loss weights [steps of the last stage], or None: the plain outer loss).
  adapt(params, first_order) -> (adapted, stats) runs the spec's stages; outer(adapted) ->
  scalar is the outer loss with the model state and trajectory of the latest adapt call.
  """

  def __init__(self, spec: MetaSpec, batch: PyTree, rng: jax.Array, state: Any = None,
               weights: Optional[jax.Array] = None):
    self.spec, self.batch, self.rng, self.state, self.weights = spec, batch, rng, state, weights
    self._outer_rng = jax.random.fold_in(rng, RNG_OUTER)
    self._seen = {}  # what the last adapt() returned: read by outer() in the same trace

  def adapt(self, params: Params, first_order: bool) -> Tuple[Params, Dict[str, Any]]:
    spec = self.spec
    adapted, stats = adapt_stages(spec.stages, params, self.batch, self.rng,
                                  first_order=first_order, state=self.state, remat=spec.remat,
                                  trajectory=self.weights is not None)
    self._seen.update(final=adapted, state=stats.get('model_state'),
                      path=stats.pop('trajectory', None))
    return adapted, stats

  def outer(self, adapted: Params) -> jax.Array:
    seen = self._seen
    if self.weights is not None:
      return _multi_step_outer(self.spec, seen['final'], adapted, seen['path'], seen['state'],
                               self.batch, self._outer_rng, self.weights)
    return call_loss(self.spec.outer_loss, adapted, seen['state'], self.batch,
                     self._outer_rng)[0]


def task_direction(spec: MetaSpec, params: Params, batch: PyTree, rng: jax.Array, *,
                   state: Any = None, weights: Optional[jax.Array] = None,
                   estimator: Optional[Estimator] = None) -> Tuple[Params, Metrics, Any]:
  """Outer direction of ONE task; `rng` is already the task's key.

  weights: [steps of the last stage] multi-step loss weights, or None.
  estimator: overrides spec.estimator (its schedule picks e.g. `FirstOrder()` early on).
  Returns (direction shaped like params, metrics of scalars, the adapted model state or None).
  """
  estimator = estimator or spec.estimator
  task = Task(spec, batch, rng, state, weights)
  grads, loss, adapted, stats = estimator.direction(params, task)
  new_state = stats.pop('model_state', None)
  metrics = dict(stats, outer_loss=loss)
  metrics.update(after_losses(spec.stages, adapted, batch, rng, new_state))
  return grads, metrics, new_state


def _mean_state(state: Any, n: int) -> Any:
  return jax.tree.map(lambda s: (s / n).astype(s.dtype), state)


def _task_means(spec: MetaSpec, estimator: Estimator, inputs: Tuple, batch: PyTree,
                ids: jax.Array, strategy: str, real: Optional[int]
                ) -> Tuple[Params, Metrics, Any]:
  """(grads reduced by task_reduce, mean metrics, mean adapted state) over the tasks of
  `batch` (global ids `ids`; ids >= real are padding); inputs = (params, rng, state,
  weights)."""
  params, rng, state, weights = inputs

  def per_task(task, task_index):
    return task_direction(spec, params, task, jax.random.fold_in(rng, task_index),
                          state=state, weights=weights, estimator=estimator)

  n = _tasks.num_tasks(batch)
  grads, metrics, new_state = _tasks.local_sum(per_task, batch, ids, strategy,
                                               spec.task_chunk, real, spec.task_groups)
  scale = 1.0 if spec.task_reduce == 'sum' else 1.0 / n
  grads = jax.tree.map(lambda g: g * jnp.asarray(scale, g.dtype), grads)
  return grads, jax.tree.map(lambda m: m / n, metrics), _mean_state(new_state, n)


def _over_tasks(spec: MetaSpec, estimator: Estimator, inputs: Tuple, task_batch: PyTree,
                mesh) -> Tuple[Params, Metrics, Any]:
  """`_task_means` over the whole meta-batch; under 'sharded' in ONE shard_map whose inputs
  (params, rng, state, weights) enter explicitly, replicated."""
  strategy = _tasks.resolve_strategy(spec.strategy)
  if strategy != 'sharded':
    ids = jnp.arange(_tasks.num_tasks(task_batch), dtype=jnp.int32)
    return _task_means(spec, estimator, inputs, task_batch, ids, strategy, None)
  local_strategy = _tasks.shard_local_strategy(spec.task_chunk)

  def body(replicated, batch, ids, real):
    grads, metrics, new_state = _task_means(spec, estimator, replicated, batch, ids,
                                            local_strategy, real)
    return grads, (metrics, new_state)

  grads, (metrics, new_state) = _tasks.on_task_shards(body, inputs, task_batch, mesh,
                                                      spec.task_reduce)
  return grads, metrics, new_state


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
    step: the outer step (int or traced int32); needed when spec.needs_step (`MultiStep`,
      `Exact(first_order_until=k)`).
    mesh: for strategy 'sharded' (default: all devices, axis 'tasks').

  Returns:
    `MetaGradient(grads, metrics, state)`. A non-finite loss in any task (e.g. a NaN in its
    batch) makes grads non-finite: checking them is the caller's (`meta.all_finite(grads)`);
    `make_step` does it for its step.

  Raises:
    MetaInputError (a ValueError), at trace time, before any computation: params not a dict
      of groups, a stage's group missing from params, a task batch without a shared leading
      task axis or with 0 tasks.
  """
  check_inputs(spec, params, task_batch)
  if spec.needs_step and step is None:
    raise ValueError('this MetaSpec (multi-step loss / first_order_until) needs the outer '
                     'step')
  run = lambda estimator, weights: _over_tasks(spec, estimator, (params, rng, state, weights),
                                               task_batch, mesh)
  return MetaGradient(*spec.estimator.schedule(spec, step, run))


def check_inputs(spec: MetaSpec, params: Params, task_batch: PyTree) -> None:
  """MetaInputError unless params is a dict holding every group the spec's stages name and
  task_batch's leaves share a leading task axis of >= 1 tasks (shapes only: trace time)."""
  check_params(params, spec.stages)
  _tasks.num_tasks(task_batch)


def _task_objective(spec: MetaSpec, estimator: Estimator, params: Params, batch: PyTree,
                    rng: jax.Array, state: Any, weights: Optional[jax.Array]) -> jax.Array:
  """ONE task's outer loss after the full differentiable adaptation by the estimator's inner
  stages (iMAML: the proximal ones)."""
  stages = estimator.inner_stages(spec, params)
  adapted, stats = adapt_stages(stages, params, batch, rng, state=state, remat=spec.remat,
                                trajectory=weights is not None)
  outer_rng = jax.random.fold_in(rng, RNG_OUTER)
  new_state = stats.get('model_state')
  if weights is not None:
    return _multi_step_outer(spec, adapted, adapted, stats['trajectory'], new_state, batch,
                             outer_rng, weights)
  return call_loss(spec.outer_loss, adapted, new_state, batch, outer_rng)[0]


def meta_objective(spec: MetaSpec, params: Params, task_batch: PyTree, rng: jax.Array, *,
                   state: Any = None, step: Any = None) -> jax.Array:
  """The scalar whose gradient `Exact()` computes: mean (or sum) over tasks of the outer loss
  (multi-step weighted under `MultiStep`) after the full, differentiable adaptation; for
  `Implicit`, after the proximal adaptation. Tasks mapped sequentially; for finite-difference
  checks. Inputs are checked as `meta_gradient` checks them (MetaInputError)."""
  check_inputs(spec, params, task_batch)

  def run(estimator, weights):
    def one(args):
      batch, task_index = args
      return _task_objective(spec, estimator, params, batch,
                             jax.random.fold_in(rng, task_index), state, weights)

    n = _tasks.num_tasks(task_batch)
    losses = jax.lax.map(one, (task_batch, jnp.arange(n)))
    return losses.sum() if spec.task_reduce == 'sum' else losses.mean()

  return spec.estimator.schedule(spec, step, run)


__all__ = ['MetaGradient', 'Task', 'check_inputs', 'meta_gradient', 'meta_objective',
           'multi_step_weights', 'task_direction']
