"""The JAX process a run lives in: its device mesh, where arrays go, whether it is the
primary process, and the persistent compilation cache.

Strategy 'sharded' (config.meta.strategy) trains over one 1-D mesh of all devices of all
hosts (after jax.distributed.initialize()), axis 'tasks' (the axis the meta library's
'sharded' strategy splits tasks on): params and optimiser state are replicated on it, every
task batch is sharded on its task axis. Every other strategy leaves arrays where they are and
needs a single process. Process 0 is the one that writes shared files.

run/ does not import the meta library: the mesh and the placement are built here with plain
jax.sharding, the same as `meta.default_mesh`, `meta.replicate` and `meta.shard_task_batch`
(tests/meta/test_meta_sharded.py checks that they agree).
"""

import os
from typing import Any, Callable, Optional, Tuple

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

TASK_AXIS = 'tasks'  # the axis name of meta's 'sharded' strategy (meta.default_mesh)


def task_mesh(config: ml_collections.ConfigDict) -> Optional[jax.sharding.Mesh]:
  """The 1-D mesh of strategy 'sharded' (all devices of all hosts); None otherwise.

  Raises:
    ValueError: several JAX processes with another strategy (each would train alone).
  """
  if str(config.meta.get('strategy', 'auto')) == 'sharded':
    return Mesh(np.array(jax.devices()), (TASK_AXIS,))
  if jax.process_count() > 1:
    raise ValueError(f"{jax.process_count()} JAX processes need config.meta.strategy='sharded'"
                     f', got {config.meta.get("strategy", "auto")!r}')
  return None


def placement(mesh: Optional[jax.sharding.Mesh]) -> Tuple[Callable[[Any], Any],
                                                          Callable[[Any], Any]]:
  """(place_state, place_batch): replicate / shard on the task axis over `mesh`, or
  identities without a mesh (every strategy other than 'sharded': nothing is moved)."""
  if mesh is None:
    return (lambda tree: tree), (lambda tree: tree)
  replicated = NamedSharding(mesh, P())

  def place_batch(batch):
    # Split on the task axis; a task count that is not a multiple of the devices goes
    # replicated (the sharded strategy pads it inside the jit).
    sizes = {leaf.shape[0] for leaf in jax.tree.leaves(batch)}
    if len(sizes) != 1:
      raise ValueError(f'task batch leaves must share one leading task axis, got {sizes}')
    even = sizes.pop() % mesh.devices.size == 0
    sharding = NamedSharding(mesh, P(TASK_AXIS)) if even else replicated
    return jax.tree.map(lambda leaf: _global_array(leaf, sharding), batch)

  return (lambda tree: jax.tree.map(lambda leaf: _global_array(leaf, replicated), tree),
          place_batch)


def _global_array(value: Any, sharding: NamedSharding) -> jax.Array:
  """A global jax.Array from a value every process holds in full (host or replicated); each
  process copies only its own devices' slices."""
  if isinstance(value, jax.Array) and value.sharding == sharding:
    return value
  host = np.asarray(value)
  return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def is_primary() -> bool:
  """True in the process that writes results and bundles (process 0; always on one host)."""
  return jax.process_index() == 0


def enable_compilation_cache(config: ml_collections.ConfigDict) -> None:
  """Turns on JAX's persistent compilation cache (config.compilation_cache_dir; '' = off)."""
  path = config.get('compilation_cache_dir', '')
  if path:
    jax.config.update('jax_compilation_cache_dir', os.path.expanduser(path))
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.5)


__all__ = ['enable_compilation_cache', 'is_primary', 'placement', 'TASK_AXIS', 'task_mesh']
