"""The JAX process a run lives in: its device mesh, where arrays go, whether it is the
primary process, and the persistent compilation cache.

Strategy 'sharded' (config.meta.strategy) trains over one 1-D mesh of all devices of all
hosts (after jax.distributed.initialize()): params and optimiser state are replicated on it,
every task batch is sharded on its task axis. Every other strategy leaves arrays where they
are and needs a single process. Process 0 is the one that writes shared files.
"""

import os
from typing import Any, Callable, Optional, Tuple

import jax
import ml_collections

from mmtl_jax import meta


def task_mesh(config: ml_collections.ConfigDict) -> Optional[jax.sharding.Mesh]:
  """The 1-D mesh of strategy 'sharded' (all devices of all hosts); None otherwise.

  Raises:
    ValueError: several JAX processes with another strategy (each would train alone).
  """
  if str(config.meta.get('strategy', 'auto')) == 'sharded':
    return meta.default_mesh()
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
  return (lambda tree: meta.replicate(tree, mesh),
          lambda batch: meta.shard_task_batch(batch, mesh))


def is_primary() -> bool:
  """True in the process that writes results and bundles (process 0; always on one host)."""
  return jax.process_index() == 0


def enable_compilation_cache(config: ml_collections.ConfigDict) -> None:
  """Turns on JAX's persistent compilation cache (config.compilation_cache_dir; '' = off)."""
  path = config.get('compilation_cache_dir', '')
  if path:
    jax.config.update('jax_compilation_cache_dir', os.path.expanduser(path))
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.5)
