"""Where a SER run's arrays go: the task mesh of strategy 'sharded' and the placement of
params, optimiser state and task batches on it, through the meta library's own
`default_mesh`, `replicate` and `shard_task_batch`.

Strategy 'sharded' (config.meta.strategy) trains over one 1-D mesh of all devices of all
hosts (after jax.distributed.initialize()): params and optimiser state are replicated on it,
every task batch is sharded on its task axis. Every other strategy leaves arrays where they
are and needs a single process.
"""

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


__all__ = ['placement', 'task_mesh']
