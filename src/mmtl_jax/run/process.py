"""The JAX process a run lives in: whether it is the primary process (process 0, the one
that writes shared files), and the persistent compilation cache. (Where a run's arrays go,
its task mesh and placement, is the SER layer's: ser/placement.py, through the meta
library.)
"""

import os

import jax
import ml_collections


def is_primary() -> bool:
  """True in the process that writes results and bundles (process 0; always on one host)."""
  return jax.process_index() == 0


def enable_compilation_cache(config: ml_collections.ConfigDict) -> None:
  """Turns on JAX's persistent compilation cache (config.compilation_cache_dir; '' = off)."""
  path = config.get('compilation_cache_dir', '')
  if path:
    jax.config.update('jax_compilation_cache_dir', os.path.expanduser(path))
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.5)


__all__ = ['enable_compilation_cache', 'is_primary']
