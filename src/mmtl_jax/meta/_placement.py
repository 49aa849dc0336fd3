"""Device placement for strategy 'sharded': the task mesh and global arrays on it.

  mesh = default_mesh()                          # 1-D, axis 'tasks', all (global) devices
  params = replicate(params, mesh)               # whole on every device
  batch = shard_task_batch(batch, mesh)          # split on the leading task axis

Separate from the task axis (meta/_tasks.py), which only computes over tasks: placement moves
arrays, the task axis never does.
"""

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

PyTree = Any

TASK_AXIS = 'tasks'


def default_mesh() -> Mesh:
  """A 1-D mesh over all (global) devices, axis name 'tasks'.

  On one host these are its local devices; after `jax.distributed.initialize()` they are the
  devices of every process, in the same order on each.
  """
  return Mesh(np.array(jax.devices()), (TASK_AXIS,))


def mesh_axis(mesh: Mesh) -> str:
  """The one axis name of a 1-D mesh.

  Raises:
    ValueError: a mesh that is not 1-D.
  """
  if len(mesh.axis_names) != 1:
    raise ValueError(f'sharded strategy needs a 1-D mesh, got axes {mesh.axis_names}')
  return mesh.axis_names[0]


def _num_tasks(task_batch: PyTree) -> int:
  sizes = {leaf.shape[0] for leaf in jax.tree.leaves(task_batch)}
  if len(sizes) != 1:
    raise ValueError(f'task_batch leaves must share one leading task axis, got sizes {sizes}')
  return sizes.pop()


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
    (NamedSharding P()): the sharded strategy pads it inside the jit (meta/_tasks.py).

  Raises:
    ValueError: a mesh that is not 1-D, or leaves disagreeing on n.
  """
  axis = mesh_axis(mesh)
  even = _num_tasks(task_batch) % mesh.devices.size == 0
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


__all__ = ['TASK_AXIS', 'default_mesh', 'mesh_axis', 'replicate', 'shard_task_batch']
