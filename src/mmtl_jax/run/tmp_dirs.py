"""Temporary directories that name the process building them: `.tmp-<key>-<host>-<pid>`.

A build writes into such a directory and renames it when complete, so a crash leaves no half
result under the final name. `make_tmp_dir` creates it with an owner marker inside,
`.owner.json`: {'pid', 'host', 'started'} (the process's start time, as psutil reads it).
One left behind by a killed process is removed by the next build (`remove_stale_tmp`) only
when its owner is provably gone: the marker's host is this host and its pid does not run, or
runs with another start time (a later process that reuses the pid). Neither the directory's
age nor its modification time decides (a long build, a clock step or a file server's clock
would make a live build look old). A directory of another host (a shared file system) is
never removed, only reported: its owner cannot be checked from here. One without a marker
(killed between its creation and the marker, or made by an older release) is removed only
when the pid in its name runs on no process of this host. `<key>` is 16 hex digits (the
cache key of what is built).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import socket
from typing import Any, Optional

import psutil

_TMP = re.compile(r'^\.tmp-(?P<key>[0-9a-f]{16})-(?P<host>.+)-(?P<pid>\d+)$')
OWNER = '.owner.json'
# Start times of one process read twice agree to the clock tick; a pid reused by another
# process starts at least a scheduler's fork later, and far later in practice.
_SAME_START_S = 0.5


def host_name() -> str:
  """This machine's name as it goes into temporary directory names ([A-Za-z0-9_.] only)."""
  return re.sub(r'[^A-Za-z0-9_.]', '_', socket.gethostname()) or 'host'


def tmp_dir_name(key: str) -> str:
  """`.tmp-<key>-<host>-<pid>` of this process; `key` is 16 hex digits."""
  return f'.tmp-{key}-{host_name()}-{os.getpid()}'


def _process_start(pid: int) -> tuple[bool, Optional[float]]:
  """(whether process `pid` runs, its start time as psutil's create_time or None where it
  cannot be read). A zombie no longer runs: it only waits for its parent to reap it."""
  try:
    process = psutil.Process(pid)
    if process.status() == psutil.STATUS_ZOMBIE:
      return False, None
    return True, process.create_time()
  except psutil.AccessDenied:
    return True, None  # someone else's live process: its start time is not ours to read
  except psutil.NoSuchProcess:  # ZombieProcess included
    return False, None


def make_tmp_dir(root: str, key: str) -> str:
  """Creates `root`/`tmp_dir_name(key)` afresh (a leftover of this name is removed first: its
  owner had this pid, so it is not running any more) with this process's owner marker;
  returns its path. Remove the marker (`release`) before renaming the directory into place."""
  path = os.path.join(root, tmp_dir_name(key))
  shutil.rmtree(path, ignore_errors=True)
  os.makedirs(path)
  owner = {'pid': os.getpid(), 'host': host_name(), 'started': _process_start(os.getpid())[1]}
  with open(os.path.join(path, OWNER), 'x', encoding='utf-8') as f:
    json.dump(owner, f)
  return path


def release(path: str) -> None:
  """Removes the owner marker of `path` (before it is renamed into its final place; until the
  rename its name still names this live process, which keeps it from being removed)."""
  try:
    os.remove(os.path.join(path, OWNER))
  except FileNotFoundError:
    pass


def _read_owner(path: str) -> Optional[dict[str, Any]]:
  """The owner marker of `path`; None where it has none (or not a readable one)."""
  try:
    with open(os.path.join(path, OWNER), encoding='utf-8') as f:
      owner = json.load(f)
  except (OSError, ValueError):
    return None
  return owner if isinstance(owner, dict) and isinstance(owner.get('pid'), int) else None


def _owner_gone(path: str, name_pid: int) -> bool:
  """Whether the process that built `path` (a directory of this host) is gone: its pid runs
  no process, or one started at another time than the marker records. Without a marker, the
  pid of its name (its creator's) decides, by running or not alone."""
  owner = _read_owner(path)
  running, started = _process_start(name_pid if owner is None else owner['pid'])
  if not running:
    return True
  recorded = None if owner is None else owner.get('started')
  return (isinstance(recorded, (int, float)) and started is not None
          and abs(started - recorded) > _SAME_START_S)


def remove_stale_tmp(root: str) -> list[str]:
  """Removes the `.tmp-<key>-<host>-<pid>` directories under `root` whose owner process is
  gone (see the module docstring); returns the removed paths. Directories of live builds are
  kept; those of other hosts are kept and logged as a warning."""
  removed = []
  for name in sorted(os.listdir(root)) if os.path.isdir(root) else ():
    match = _TMP.match(name)
    if not match or int(match['pid']) == os.getpid() and match['host'] == host_name():
      continue
    path = os.path.join(root, name)
    host = (_read_owner(path) or {}).get('host', match['host'])
    if host != host_name():
      logging.warning('%s: a temporary build directory of host %s, not removed (its process '
                      'cannot be checked from here); delete it if no build runs there',
                      path, host)
    elif os.path.isdir(path) and _owner_gone(path, int(match['pid'])):
      shutil.rmtree(path, ignore_errors=True)
      removed.append(path)
  return removed


__all__ = ['host_name', 'make_tmp_dir', 'OWNER', 'release', 'remove_stale_tmp', 'tmp_dir_name']
