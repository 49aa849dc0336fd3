"""Optional dependencies: which extra a part of the package needs, said in one line.

`pip install mmtl_jax` installs the core (jax, jaxlib, flax, optax, numpy): `mmtl_jax.meta`,
`mmtl_jax.models` and `mmtl_jax.examples`. The speech-emotion application, the few-shot
study, the tools and the entry points in experiments/ need the `ser` extra
(`pip install 'mmtl_jax[ser]'`). The packages that import them call `require('ser', ...)`
first, so a core-only install fails with one line naming the extra, not a traceback deep in
an import chain. Imports none of its siblings.
"""

import importlib.util
import sys
from typing import Dict, NoReturn, Tuple

# extra -> (import name, distribution name) of every package it adds that the code imports.
EXTRAS: Dict[str, Tuple[Tuple[str, str], ...]] = {
    'ser': (('absl', 'absl-py'), ('ml_collections', 'ml-collections'),
            ('orbax.checkpoint', 'orbax-checkpoint'), ('etils', 'etils'), ('scipy', 'scipy'),
            ('librosa', 'librosa'), ('soundfile', 'soundfile'),
            ('tensorboardX', 'tensorboardX'), ('tqdm', 'tqdm'),
            ('matplotlib', 'matplotlib'), ('psutil', 'psutil')),
}


class MissingExtraError(ImportError):
  """A part of mmtl_jax was imported without the extra that installs its dependencies."""


def _importable(module: str) -> bool:
  try:
    return importlib.util.find_spec(module) is not None
  except (ImportError, ValueError):  # a parent package missing, or a broken stub
    return False


def missing(extra: str) -> Tuple[str, ...]:
  """The distributions of `extra` that cannot be imported here (() when all can)."""
  if extra not in EXTRAS:
    raise ValueError(f'unknown extra {extra!r}; known: {sorted(EXTRAS)}')
  return tuple(dist for module, dist in EXTRAS[extra] if not _importable(module))


def require(extra: str, what: str) -> None:
  """Raises MissingExtraError (one line: what needs which extra, the missing packages and the
  install command) unless every package of `extra` is importable."""
  absent = missing(extra)
  if absent:
    raise MissingExtraError(
        f"{what} needs the '{extra}' extra (missing: {', '.join(absent)}): "
        f"pip install 'mmtl_jax[{extra}]' (in a clone: pip install -e '.[{extra}]')")


def require_or_exit(extra: str, what: str) -> None:
  """`require` for entry points: prints the one line as 'error: ...' and exits with 2."""
  try:
    require(extra, what)
  except MissingExtraError as e:
    print(f'error: {e}', file=sys.stderr)
    raise SystemExit(2) from None


__all__ = ['EXTRAS', 'MissingExtraError', 'missing', 'require', 'require_or_exit']
