"""The task axis: how per-task results are computed and summed over a meta-batch. Pure
functions: the real task count is an explicit argument, nothing is kept between calls.
Placing inputs on a device mesh is meta/_placement.py's (`replicate`, `shard_task_batch`).

  vmap:    all tasks at once under jax.vmap. Best on accelerators. Vmapping per-task
           adapted weights turns lax convolutions into grouped convolutions, which XLA:CPU
           runs far below its usual rate; models/conv.py's convolutions have a vmap rule
           that loops over the tasks instead (a model of your own with plain lax
           convolutions does not get it). On CPU the tasks are also split into
           `task_groups` vmapped groups (default: two per core), unrolled in the jit: one
           vmap makes every pool, BiLSTM step and loss a single operation that XLA:CPU runs
           on one core, while independent groups run side by side (docs/PERFORMANCE.md).
  map:     one task at a time under lax.scan inside the jit, accumulating the sum, so only
           one task's activations are alive at once; compile time independent of the number
           of tasks. On XLA:CPU somewhat slower than 'loop', but it compiles fastest and uses
           the least memory.
  loop:    one task at a time, as a Python loop over one nested jit of the per-task function
           (traced once, inlined n times by XLA): the fastest on XLA:CPU; XLA's compile time
           grows with the number of tasks.
  sharded: tasks split over a 1-D device mesh with shard_map (params replicated, task batch
           sharded on its leading axis); each device computes its own tasks as 'auto' would
           on its backend (or vmap in chunks with task_chunk), then a psum over devices.
           The default mesh spans jax.devices(), i.e. every host's devices after
           jax.distributed.initialize(); place the inputs with `replicate` and
           `shard_task_batch` so that the jitted step receives global arrays.
           `meta_gradient` runs ONE shard_map (`on_task_shards`) whose body is the
           device-local sum (`local_sum`) with the real task count passed in; it hands the
           params to the shard_map as explicit inputs: closed-over arrays placed on a mesh are
           rejected inside shard_map.
  auto:    'loop' on CPU, 'vmap' elsewhere.
`task_chunk` > 0 (vmap / sharded) processes that many tasks at a time, accumulating the sum
(sequentially, to bound memory; `task_groups` then does not apply).
All strategies give the same sums up to float reassociation.

Padding ('sharded'): n tasks that are not a multiple of the d devices are padded, inside the
jitted function, with copies of task 0 up to the next multiple of d. Each padded task's
outputs are multiplied by 0 before the device-local sum and the psum (`local_sum`'s `real`
argument: task ids >= real are padding), so every sum is over the n real tasks only, and
callers still divide by n (`num_tasks` of the batch they passed). `on_task_shards` rescales
the per-device means of its body accordingly. The padded tasks cost compute (up to d - 1 extra
tasks), nothing else.
"""

import os
from typing import Any, Callable, Iterator, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, PartitionSpec as P

from mmtl_jax.meta._checks import task_count
from mmtl_jax.meta._placement import default_mesh, mesh_axis

PyTree = Any

TaskFn = Callable[[PyTree, jax.Array], PyTree]  # (one task's batch, task index) -> outputs


def resolve_strategy(strategy: str) -> str:
  """Replaces 'auto' by the fastest strategy for the default backend: CPU lacks fast grouped
  convolutions, so it loops; accelerators have them, so they vmap."""
  if strategy == 'auto':
    return 'loop' if jax.default_backend() == 'cpu' else 'vmap'
  return strategy


def num_tasks(task_batch: PyTree) -> int:
  """Size of the leading task axis, checked to agree across all leaves (shapes only).

  Raises:
    MetaInputError (a ValueError): no leaves, a scalar leaf (no task axis), leaves
      disagreeing on the task count, or 0 tasks.
  """
  return task_count(task_batch)


def padded_num_tasks(n: int, mesh: Mesh) -> int:
  """n rounded up to a multiple of the mesh's device count (the padded task count)."""
  d = mesh.devices.size
  return -(-n // d) * d


def pad_tasks(task_batch: PyTree, size: int) -> PyTree:
  """task_batch with copies of task 0 appended on the leading axis up to `size` tasks.

  The copies are real data (finite losses), so weighting their outputs by 0 gives exact 0s.
  """
  n = num_tasks(task_batch)
  if size == n:
    return task_batch
  if size < n:
    raise ValueError(f'cannot pad {n} tasks down to {size}')
  return jax.tree.map(
      lambda x: jnp.concatenate([x, jnp.broadcast_to(x[:1], (size - n,) + x.shape[1:])]),
      task_batch)


def _zero_padded(fn: TaskFn, real: Optional[int]) -> TaskFn:
  """fn whose outputs are multiplied by 0 for task indices >= real (the padded tasks)."""
  if real is None:
    return fn

  def weighted(batch, task_index):
    keep = task_index < real
    return jax.tree.map(lambda o: o * keep.astype(o.dtype), fn(batch, task_index))

  return weighted


def shard_local_strategy(task_chunk: int) -> str:
  """How one device computes its own tasks under 'sharded': as 'auto' would (CPU devices
  loop: no grouped convolutions), but vmap in chunks when task_chunk is set."""
  return 'vmap' if task_chunk > 0 else resolve_strategy('auto')


def _tree_sum0(tree: PyTree) -> PyTree:
  return jax.tree.map(lambda x: x.sum(axis=0), tree)


def _scan_sum(fn: TaskFn, batch: PyTree, ids: jax.Array) -> PyTree:
  """Sum over the leading axis of fn(batch[i], ids[i]), sequentially."""
  first = jax.tree.map(lambda x: x[0], batch)
  zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype),
                       jax.eval_shape(fn, first, ids[0]))

  def body(acc, xs):
    return jax.tree.map(jnp.add, acc, fn(*xs)), None

  return jax.lax.scan(body, zeros, (batch, ids))[0]


def _loop_sum(fn: TaskFn, batch: PyTree, ids: jax.Array) -> PyTree:
  """Sum over the leading axis of fn(batch[i], ids[i]), traced task by task.

  fn goes through one nested jax.jit, so it is traced once and called n times (XLA inlines
  the calls): tracing and lowering once instead of n times cuts the cost of a persistent-cache
  hit, which is mostly trace + lower.
  """
  fn = jax.jit(fn)
  return _add_all(fn(jax.tree.map(lambda x, i=i: x[i], batch), ids[i])
                  for i in range(ids.shape[0]))


def _add_all(outputs: Iterator[PyTree]) -> PyTree:
  """The sum of a non-empty sequence of same-shaped pytrees, in order."""
  total = None
  for out in outputs:
    total = out if total is None else jax.tree.map(jnp.add, total, out)
  return total


def _cpu_cores() -> int:
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:  # not on Linux
    return os.cpu_count() or 1


def resolve_task_groups(task_groups: int, n: int) -> int:
  """How many vmapped groups 'vmap' splits n tasks into.

  task_groups > 0 is taken as it is; 0 (auto) is two per CPU core on the CPU backend (what
  was fastest against one per core, or more, at the bench shape: docs/PERFORMANCE.md, "What
  each choice bought", item 10) and 1 (one vmap over all tasks) on accelerators, where one
  wide batch is what they run best. The result is capped at n.
  """
  if task_groups == 0:
    task_groups = 2 * _cpu_cores() if jax.default_backend() == 'cpu' else 1
  return max(1, min(n, task_groups))


def _grouped_vmap_sum(fn: TaskFn, batch: PyTree, ids: jax.Array, groups: int) -> PyTree:
  """Sum of fn over the leading axis as `groups` vmaps over near-equal consecutive slices.

  The groups are independent chains of operations in one jit (their sums are added at the
  end), so XLA's executor can run them at once. One nested jax.jit per group size, as in
  `_loop_sum`, so that each size is traced once.
  """
  group_sum = jax.jit(lambda b, i: _tree_sum0(jax.vmap(fn)(b, i)))
  bounds = np.linspace(0, ids.shape[0], groups + 1).round().astype(int)
  return _add_all(group_sum(jax.tree.map(lambda x, a=a, b=b: x[a:b], batch), ids[a:b])
                  for a, b in zip(bounds[:-1], bounds[1:]))


def local_sum(fn: TaskFn, batch: PyTree, ids: jax.Array, strategy: str, chunk: int = 0,
              real: Optional[int] = None, groups: int = 0) -> PyTree:
  """sum_i fn(batch[i], ids[i]) over the leading axis, on one device, by `strategy` ('vmap',
  'map' or 'loop'; resolved, not 'auto' or 'sharded'); tasks with ids >= real (padding,
  module docstring) contribute 0 (real None: no padding). chunk, groups: `sum_over_tasks`'
  task_chunk and task_groups."""
  fn = _zero_padded(fn, real)
  n = ids.shape[0]
  if strategy == 'map':
    return _scan_sum(fn, batch, ids)
  if strategy == 'loop':
    return _loop_sum(fn, batch, ids)
  if chunk <= 0 or chunk >= n:
    groups = resolve_task_groups(groups, n)
    if groups > 1:
      return _grouped_vmap_sum(fn, batch, ids, groups)
    return _tree_sum0(jax.vmap(fn)(batch, ids))
  if n % chunk:
    raise ValueError(f'task_chunk={chunk} must divide the number of tasks ({n} here)')
  split = lambda x: x.reshape((n // chunk, chunk) + x.shape[1:])
  chunk_fn = lambda b, i: _tree_sum0(jax.vmap(fn)(b, i))
  return _scan_sum(chunk_fn, jax.tree.map(split, batch), split(ids))


def sum_over_tasks(fn: TaskFn, task_batch: PyTree, strategy: str = 'auto', task_chunk: int = 0,
                   mesh: Optional[Mesh] = None, task_groups: int = 0) -> PyTree:
  """Returns sum_t fn(task_batch[t], t) over the leading task axis, per `strategy`.

  Args:
    fn: pure function of (one task's batch without the task axis, int32 task index); its
      outputs must be summable pytrees of arrays (e.g. (grads, metrics)). Under 'sharded' it
      is closed over inside a shard_map, so it must not close over arrays placed on a mesh
      (`on_task_shards` takes such inputs explicitly).
    task_batch: pytree with a leading task axis of size n on every leaf.
    strategy: 'auto' | 'vmap' | 'map' | 'loop' | 'sharded'.
    task_chunk: tasks per chunk for 'vmap' and 'sharded' (per device); 0 = all at once.
    mesh: 1-D mesh for 'sharded' (default: `default_mesh()`, all global devices).
    task_groups: for 'vmap' without task_chunk, the number of vmapped groups the tasks are
      split into (0: `resolve_task_groups`' default for the backend; 1: one vmap over all).
  """
  strategy = resolve_strategy(strategy)
  n = num_tasks(task_batch)
  if strategy in ('vmap', 'map', 'loop'):
    ids = jnp.arange(n, dtype=jnp.int32)
    return local_sum(fn, task_batch, ids, strategy, task_chunk, groups=task_groups)
  if strategy != 'sharded':
    raise ValueError(f'unknown task strategy {strategy!r}')
  local_strategy = shard_local_strategy(task_chunk)

  def body(_, batch, ids, real):
    return local_sum(fn, batch, ids, local_strategy, task_chunk, real, task_groups), ()

  return on_task_shards(body, None, task_batch, mesh, task_reduce='sum')[0]


def on_task_shards(body: Callable[..., Tuple[PyTree, PyTree]], replicated: PyTree,
                   task_batch: PyTree, mesh: Optional[Mesh] = None,
                   task_reduce: str = 'mean') -> Tuple[PyTree, PyTree]:
  """ONE shard_map over `mesh`: body(replicated, batch, ids, real) -> (grads, rest) per device.

  replicated (params, keys, ...) enters whole on every device as an explicit input (closed-
  over arrays placed on a mesh are rejected inside shard_map); task_batch, padded to a
  multiple of the device count (module docstring), and its global int32 task ids are split
  on the task axis; real is the number of real tasks when padded (ids >= real are padding),
  else None. The per-device results are combined: grads by their mean (task_reduce='mean':
  equal shards, so the mean over all tasks) or sum ('sum'), rest by their mean. With padding,
  the means (a device's sums over its real tasks divided by its m / d tasks) are rescaled by
  m / n, which assumes body's outputs are its task sums divided by its own task count (or,
  for 'sum' grads, the sums), as `meta_gradient`'s are; integer leaves are left as they are.
  """
  mesh = mesh or default_mesh()
  axis = mesh_axis(mesh)
  n = num_tasks(task_batch)
  padded = padded_num_tasks(n, mesh)
  real = n if padded != n else None
  reduce_grads = jax.lax.psum if task_reduce == 'sum' else jax.lax.pmean
  grad_scale = 1.0 if task_reduce == 'sum' else padded / n

  def local(replicated, batch, ids):
    grads, rest = body(replicated, batch, ids, real)
    return reduce_grads(grads, axis), jax.lax.pmean(rest, axis)

  grads, rest = jax.shard_map(local, mesh=mesh, in_specs=(P(), P(axis), P(axis)),
                              out_specs=P(), check_vma=False)(
                                  replicated, pad_tasks(task_batch, padded),
                                  jnp.arange(padded, dtype=jnp.int32))
  if real is None:
    return grads, rest
  scale = lambda s: (lambda x: x * jnp.asarray(s, x.dtype)
                     if jnp.issubdtype(x.dtype, jnp.inexact) else x)
  return jax.tree.map(scale(grad_scale), grads), jax.tree.map(scale(padded / n), rest)


__all__ = ['local_sum', 'num_tasks', 'on_task_shards', 'pad_tasks', 'padded_num_tasks',
           'resolve_strategy', 'resolve_task_groups', 'shard_local_strategy',
           'sum_over_tasks']
