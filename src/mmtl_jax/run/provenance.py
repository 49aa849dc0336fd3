"""What produced a run's result files: package versions, the mmtl_jax git commit, the JAX
backend and devices, the command, and the run's start and end. Domain-free: any run can
store `provenance(...)` next to its results (ser/results.py puts it in results.json).

  {"packages": {distribution: version | null}, "python": str,
   "git_commit": str | null, "git_dirty": bool | null, "backend": str, "devices": [str],
   "process_count": int, "command": [str] (sys.argv), "started": ISO 8601,
   "ended": ISO 8601, "seconds": float}
"""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import subprocess
import sys
from typing import Any

PROVENANCE_PACKAGES = ('mmtl_jax', 'jax', 'jaxlib', 'flax', 'optax', 'orbax-checkpoint',
                       'numpy', 'librosa')


def _package_version(name: str) -> str | None:
  try:
    return importlib.metadata.version(name)
  except importlib.metadata.PackageNotFoundError:
    return None


def git_state(directory: str) -> tuple[str | None, bool | None]:
  """(HEAD commit, whether tracked files differ from it) of the git checkout holding
  `directory`'s own files; (None, None) when they are not tracked by git (an installed
  copy, even one inside some repository's ignored venv) or git is unavailable."""
  def git(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(['git', '-C', directory, *args], capture_output=True, text=True,
                          timeout=10, check=False)
  try:
    if git('ls-files', '--error-unmatch', '__init__.py').returncode != 0:
      return None, None
    head = git('rev-parse', 'HEAD')
    if head.returncode != 0:
      return None, None
    return head.stdout.strip(), git('diff', '--quiet', 'HEAD', '--', '.').returncode != 0
  except (OSError, subprocess.SubprocessError):
    return None, None


def _iso(timestamp: float) -> str:
  return datetime.datetime.fromtimestamp(timestamp, datetime.timezone.utc).isoformat()


def provenance(started: float, ended: float) -> dict[str, Any]:
  """What produced a run's results: package versions, the mmtl_jax git commit (None outside
  a git checkout), the JAX backend and devices, sys.argv, and start / end times.

  Args:
    started, ended: time.time() values of the run's start and end.
  """
  import jax  # pylint: disable=g-import-not-at-top  (only when called: importing stays cheap)
  commit, dirty = git_state(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  return {'packages': {name: _package_version(name) for name in PROVENANCE_PACKAGES},
          'python': sys.version.split()[0], 'git_commit': commit, 'git_dirty': dirty,
          'backend': jax.default_backend(), 'devices': [str(d) for d in jax.devices()],
          'process_count': jax.process_count(), 'command': list(sys.argv),
          'started': _iso(started), 'ended': _iso(ended), 'seconds': ended - started}


__all__ = ['git_state', 'provenance', 'PROVENANCE_PACKAGES']
