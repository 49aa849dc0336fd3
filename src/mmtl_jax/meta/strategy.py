"""Task-axis strategies: how per-task results are computed and summed over the meta-batch.

  vmap:    all tasks at once under jax.vmap. Best on accelerators. On XLA:CPU, vmapping
           per-task adapted weights turns convolutions into grouped convolutions, which run
           several times slower (DESIGN.md, "Measured so far").
  map:     one task at a time under lax.scan inside the jit, accumulating the sum, so only
           one task's activations are alive at once; compile time independent of the number
           of tasks. But XLA:CPU runs convolution gradients inside a while-loop body 10-40x
           slower than outside one (measured, jax 0.10.2), so on CPU prefer 'loop'.
  loop:    one task at a time, as a Python loop traced into the jit (no while loop): the
           fastest on XLA:CPU; compile time grows linearly with the number of tasks.
  sharded: tasks split over a 1-D device mesh with shard_map (params replicated, task batch
           sharded on its leading axis); each device vmaps over its local tasks, then a psum.
  auto:    'loop' on CPU, 'vmap' elsewhere.
`task_chunk` > 0 (vmap / sharded) processes that many tasks at a time, accumulating the sum.
All strategies give the same sums up to float reassociation.
"""

from typing import Any, Callable, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, PartitionSpec as P

PyTree = Any
TaskFn = Callable[[PyTree, jax.Array], PyTree]  # (one task's batch, task index) -> outputs

TASK_AXIS = 'tasks'


def resolve(strategy: str) -> str:
  """Replaces 'auto' by the strategy measured fastest on the default backend."""
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
  """A 1-D mesh over all local devices, axis name 'tasks'."""
  return Mesh(np.array(jax.local_devices()), (TASK_AXIS,))


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
  """Sum over the leading axis of fn(batch[i], ids[i]), traced task by task."""
  total = None
  for i in range(ids.shape[0]):
    out = fn(jax.tree.map(lambda x, i=i: x[i], batch), ids[i])
    total = out if total is None else jax.tree.map(jnp.add, total, out)
  return total


def _local_sum(fn: TaskFn, batch: PyTree, ids: jax.Array, strategy: str, chunk: int) -> PyTree:
  n = ids.shape[0]
  if strategy == 'map':
    return _scan_sum(fn, batch, ids)
  if strategy == 'loop':
    return _loop_sum(fn, batch, ids)
  if chunk <= 0 or chunk >= n:
    return _tree_sum0(jax.vmap(fn)(batch, ids))
  if n % chunk:
    raise ValueError(f'task_chunk={chunk} must divide the number of tasks ({n} here)')
  split = lambda x: x.reshape((n // chunk, chunk) + x.shape[1:])
  chunk_fn = lambda b, i: _tree_sum0(jax.vmap(fn)(b, i))
  return _scan_sum(chunk_fn, jax.tree.map(split, batch), split(ids))


def sum_over_tasks(fn: TaskFn, task_batch: PyTree, strategy: str = 'auto', task_chunk: int = 0,
                   mesh: Optional[Mesh] = None) -> PyTree:
  """Returns sum_t fn(task_batch[t], t) over the leading task axis, per `strategy`.

  Args:
    fn: pure function of (one task's batch without the task axis, int32 task index); its
      outputs must be summable pytrees of arrays (e.g. (grads, metrics)).
    task_batch: pytree with a leading task axis of size n on every leaf.
    strategy: 'auto' | 'vmap' | 'map' | 'loop' | 'sharded'.
    task_chunk: tasks per chunk for 'vmap' and 'sharded' (per device); 0 = all at once.
    mesh: 1-D mesh for 'sharded' (default: all local devices).
  """
  strategy = resolve(strategy)
  n = num_tasks(task_batch)
  ids = jnp.arange(n, dtype=jnp.int32)
  if strategy in ('vmap', 'map', 'loop'):
    return _local_sum(fn, task_batch, ids, strategy, task_chunk)
  if strategy != 'sharded':
    raise ValueError(f'unknown task strategy {strategy!r}')
  mesh = mesh or default_mesh()
  if len(mesh.axis_names) != 1:
    raise ValueError(f'sharded strategy needs a 1-D mesh, got axes {mesh.axis_names}')
  axis = mesh.axis_names[0]
  devices = mesh.devices.size
  if n % devices:
    raise ValueError(f'{n} tasks cannot be split evenly over {devices} devices')

  def local(batch, local_ids):
    return jax.lax.psum(_local_sum(fn, batch, local_ids, 'vmap', task_chunk), axis)

  sharded = jax.shard_map(local, mesh=mesh, in_specs=(P(axis), P(axis)), out_specs=P(),
                          check_vma=False)
  return sharded(task_batch, ids)
