"""The task axis: how per-task results are computed and summed over a meta-batch, and how
inputs are placed on a device mesh (`replicate`, `shard_task_batch`).

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
           `meta_gradient` hands the params to the shard_map as explicit inputs
           (`on_task_shards`): closed-over arrays placed on a mesh are rejected inside
           shard_map.
  auto:    'loop' on CPU, 'vmap' elsewhere.
`task_chunk` > 0 (vmap / sharded) processes that many tasks at a time, accumulating the sum
(sequentially, to bound memory; `task_groups` then does not apply).
All strategies give the same sums up to float reassociation.

Padding ('sharded'): n tasks that are not a multiple of the d devices are padded, inside the
jitted function, with copies of task 0 up to the next multiple of d. Each padded task's
outputs are multiplied by 0 before the device-local sum and the psum, so every sum is over the
n real tasks only, and callers still divide by n (`num_tasks` of the batch they passed).
`on_task_shards` rescales the per-device means of its grad_fn accordingly. The padded tasks
cost compute (up to d - 1 extra tasks), nothing else.
"""

import contextlib
import os
import threading
from typing import Any, Callable, Iterator, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

PyTree = Any

TaskFn = Callable[[PyTree, jax.Array], PyTree]  # (one task's batch, task index) -> outputs

TASK_AXIS = 'tasks'


def resolve(strategy: str) -> str:
  """Replaces 'auto' by the fastest strategy for the default backend: CPU lacks fast grouped
  convolutions, so it loops; accelerators have them, so they vmap."""
  if strategy == 'auto':
    return 'loop' if jax.default_backend() == 'cpu' else 'vmap'
  return strategy


def num_tasks(task_batch: PyTree) -> int:
  """Size of the leading task axis, checked to agree across all leaves."""
  sizes = {leaf.shape[0] for leaf in jax.tree.leaves(task_batch)}
  if len(sizes) != 1:
    raise ValueError(f'task_batch leaves must share one leading task axis, got sizes {sizes}')
  return sizes.pop()


def default_mesh() -> Mesh:
  """A 1-D mesh over all (global) devices, axis name 'tasks'.

  On one host these are its local devices; after `jax.distributed.initialize()` they are the
  devices of every process, in the same order on each.
  """
  return Mesh(np.array(jax.devices()), (TASK_AXIS,))


def _mesh_axis(mesh: Mesh) -> str:
  if len(mesh.axis_names) != 1:
    raise ValueError(f'sharded strategy needs a 1-D mesh, got axes {mesh.axis_names}')
  return mesh.axis_names[0]


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


# The number of real tasks while a padded shard_map body is traced (None: no padding). Set by
# `_real_tasks` around the trace; read by `sum_over_tasks` on a device's shard.
_PADDING = threading.local()


@contextlib.contextmanager
def _real_tasks(n: Optional[int]) -> Iterator[None]:
  previous = getattr(_PADDING, 'n', None)
  _PADDING.n = n
  try:
    yield
  finally:
    _PADDING.n = previous


def _zero_padded(fn: TaskFn, real: Optional[int]) -> TaskFn:
  """fn whose outputs are multiplied by 0 for task indices >= real (the padded tasks)."""
  if real is None:
    return fn

  def weighted(batch, task_index):
    keep = task_index < real
    return jax.tree.map(lambda o: o * keep.astype(o.dtype), fn(batch, task_index))

  return weighted


def _global_array(value: Any, sharding: NamedSharding) -> jax.Array:
  """A global jax.Array from a value every process holds in full (host or replicated)."""
  if isinstance(value, jax.Array) and value.sharding == sharding:
    return value
  host = np.asarray(value)
  return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def shard_task_batch(task_batch: PyTree, mesh: Mesh) -> PyTree:
  """Places a task batch on `mesh`, split on its leading task axis (NamedSharding P('tasks')).

  Every process must pass the same full batch (our sampler is deterministic in
  (seed, step, task)); each process only copies the slices of its own devices, via
  `jax.make_array_from_callback`, so this works on one host and across hosts alike.

  Args:
    task_batch: pytree of host arrays (numpy, or fully replicated jax arrays) with a
      leading task axis of size n on every leaf.
    mesh: 1-D mesh (e.g. `default_mesh()`).

  Returns:
    The same pytree of global jax.Arrays; task t lives on mesh device t // (n // devices).
    When n is not a multiple of the number of devices, the batch is replicated instead
    (NamedSharding P()): the sharded step pads it inside the jit (module docstring).

  Raises:
    ValueError: a mesh that is not 1-D, or leaves disagreeing on n.
  """
  axis = _mesh_axis(mesh)
  even = num_tasks(task_batch) % mesh.devices.size == 0
  sharding = NamedSharding(mesh, P(axis) if even else P())
  return jax.tree.map(lambda leaf: _global_array(leaf, sharding), task_batch)


def replicate(tree: PyTree, mesh: Mesh) -> PyTree:
  """Places every array leaf of `tree` (params, optimiser state) whole on every device of
  `mesh` (NamedSharding P()), as global jax.Arrays built with `jax.make_array_from_callback`.

  Every process must pass the same values. Leaves already replicated on `mesh` are returned
  as they are (no copy).
  """
  sharding = NamedSharding(mesh, P())
  return jax.tree.map(lambda leaf: _global_array(leaf, sharding), tree)


def _shard_local(task_chunk: int) -> str:
  """How one device computes its own tasks under 'sharded': as 'auto' would (CPU devices
  loop: no grouped convolutions), but vmap in chunks when task_chunk is set."""
  return 'vmap' if task_chunk > 0 else resolve('auto')


def in_task_shard(mesh: Optional[Mesh] = None) -> bool:
  """True when traced inside a shard_map over the task axis of `mesh` (default mesh)."""
  axis = _mesh_axis(mesh or default_mesh())
  return axis in jax.sharding.get_abstract_mesh().manual_axes


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


def resolve_groups(task_groups: int, n: int) -> int:
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


def _local_sum(fn: TaskFn, batch: PyTree, ids: jax.Array, strategy: str, chunk: int,
               real: Optional[int] = None, groups: int = 0) -> PyTree:
  """Sum of fn over this device's tasks; tasks with ids >= real (padding) contribute 0."""
  fn = _zero_padded(fn, real)
  n = ids.shape[0]
  if strategy == 'map':
    return _scan_sum(fn, batch, ids)
  if strategy == 'loop':
    return _loop_sum(fn, batch, ids)
  if chunk <= 0 or chunk >= n:
    groups = resolve_groups(groups, n)
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

  With 'sharded', called inside a shard_map over `mesh` (e.g. from `on_task_shards`),
  task_batch holds this device's n tasks only: the result is the sum over them, indexed
  globally (device d's task i is task d * n + i), and the reduction over devices is left to
  the caller.

  Args:
    fn: pure function of (one task's batch without the task axis, int32 task index); its
      outputs must be summable pytrees of arrays (e.g. (grads, metrics)).
    task_batch: pytree with a leading task axis of size n on every leaf.
    strategy: 'auto' | 'vmap' | 'map' | 'loop' | 'sharded'.
    task_chunk: tasks per chunk for 'vmap' and 'sharded' (per device); 0 = all at once.
    mesh: 1-D mesh for 'sharded' (default: `default_mesh()`, all global devices).
    task_groups: for 'vmap' without task_chunk, the number of vmapped groups the tasks are
      split into (0: `resolve_groups`' default for the backend; 1: one vmap over all).
  """
  strategy = resolve(strategy)
  n = num_tasks(task_batch)
  ids = jnp.arange(n, dtype=jnp.int32)
  if strategy in ('vmap', 'map', 'loop'):
    return _local_sum(fn, task_batch, ids, strategy, task_chunk, groups=task_groups)
  if strategy != 'sharded':
    raise ValueError(f'unknown task strategy {strategy!r}')
  mesh = mesh or default_mesh()
  axis = _mesh_axis(mesh)
  local_strategy = _shard_local(task_chunk)
  if in_task_shard(mesh):  # already on one device's shard (of a batch padded by the caller)
    global_ids = jax.lax.axis_index(axis) * n + ids
    return _local_sum(fn, task_batch, global_ids, local_strategy, task_chunk,
                      getattr(_PADDING, 'n', None), task_groups)
  padded = padded_num_tasks(n, mesh)
  real = n if padded != n else None

  def local(batch, local_ids):
    return jax.lax.psum(
        _local_sum(fn, batch, local_ids, local_strategy, task_chunk, real, task_groups), axis)

  sharded = jax.shard_map(local, mesh=mesh, in_specs=(P(axis), P(axis)), out_specs=P(),
                          check_vma=False)
  return sharded(pad_tasks(task_batch, padded), jnp.arange(padded, dtype=jnp.int32))


def on_task_shards(grad_fn: Callable[..., Tuple[PyTree, PyTree]], mesh: Optional[Mesh] = None,
                   task_reduce: str = 'mean') -> Callable[..., Tuple[PyTree, PyTree]]:
  """Runs grad_fn(params, task_batch, rng) -> (grads, metrics) once per device of `mesh`.

  params and rng enter the shard_map as replicated inputs, task_batch split on its leading
  task axis; grad_fn (e.g. `meta_gradient` with strategy 'sharded') sees its device's tasks
  and reduces over them, then the per-device results are combined: grads by their mean
  (task_reduce='mean': equal shards, so the mean over all tasks) or sum ('sum'), metrics by
  their mean. Unlike `sum_over_tasks` alone, nothing is closed over inside the shard_map:
  closed-over arrays placed on the mesh (e.g. by `replicate`, or the previous jitted step's
  output) are rejected inside shard_map, so params must come in as explicit inputs.

  n tasks not a multiple of the d devices are padded to m (module docstring): grad_fn's
  per-task sums then hold the real tasks only, and its means (sums / (m / d)) are rescaled
  by m / n, which assumes grad_fn's outputs are its task sums divided by its own task count
  (or, for 'sum', the sums), as `meta_gradient`'s are.
  """

  def wrapped(params, task_batch, rng):
    m = mesh or default_mesh()
    axis = _mesh_axis(m)
    n = num_tasks(task_batch)
    padded = padded_num_tasks(n, m)
    real = n if padded != n else None
    reduce_grads = jax.lax.psum if task_reduce == 'sum' else jax.lax.pmean
    grad_scale = 1.0 if task_reduce == 'sum' else padded / n

    def local(params, task_batch, rng):
      with _real_tasks(real):
        grads, metrics = grad_fn(params, task_batch, rng)
      return reduce_grads(grads, axis), jax.lax.pmean(metrics, axis)

    grads, metrics = jax.shard_map(local, mesh=m, in_specs=(P(), P(axis), P()), out_specs=P(),
                                   check_vma=False)(params, pad_tasks(task_batch, padded), rng)
    if real is None:
      return grads, metrics
    # Integer leaves (counters in a model state) are not means: left as they are.
    scale = lambda s: (lambda x: x * jnp.asarray(s, x.dtype)
                       if jnp.issubdtype(x.dtype, jnp.inexact) else x)
    return jax.tree.map(scale(grad_scale), grads), jax.tree.map(scale(padded / n), metrics)

  return wrapped
