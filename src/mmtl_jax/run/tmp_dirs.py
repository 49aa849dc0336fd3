"""Temporary directories that name the process building them: `.tmp-<key>-<host>-<pid>`.

A build writes into such a directory and renames it when complete, so a crash leaves no half
result under the final name. One left behind by a killed process is recognised by its name
(this host, a pid that no longer runs, or runs but started later) and removed by the next
build (`remove_stale_tmp`). `<key>` is 16 hex digits (the cache key of what is built).
"""

from __future__ import annotations

import os
import re
import shutil
import socket

import psutil

_TMP = re.compile(r'^\.tmp-(?P<key>[0-9a-f]{16})-(?P<host>.+)-(?P<pid>\d+)$')


def host_name() -> str:
  """This machine's name as it goes into temporary directory names ([A-Za-z0-9_.] only)."""
  return re.sub(r'[^A-Za-z0-9_.]', '_', socket.gethostname()) or 'host'


def tmp_dir_name(key: str) -> str:
  """`.tmp-<key>-<host>-<pid>` of this process; `key` is 16 hex digits."""
  return f'.tmp-{key}-{host_name()}-{os.getpid()}'


def _running_since(pid: int, before: float) -> bool:
  """Whether process `pid` runs and started before time `before` (so it is not a later
  process that reuses the pid of a dead one)."""
  try:
    process = psutil.Process(pid)
    return process.status() != psutil.STATUS_ZOMBIE and process.create_time() <= before + 1.0
  except psutil.AccessDenied:
    return True  # someone else's live process: not ours to judge
  except psutil.NoSuchProcess:  # ZombieProcess included
    return False


def remove_stale_tmp(root: str) -> list[str]:
  """Removes the `.tmp-<key>-<host>-<pid>` directories under `root` left by processes of this
  host that are gone (killed while building); returns the removed paths.

  A directory of a live process (same pid, started before the directory was last written) is
  kept: it is still being built. Directories of other hosts (a shared file system) are kept.
  """
  removed = []
  for name in os.listdir(root) if os.path.isdir(root) else ():
    match = _TMP.match(name)
    if not match or match['host'] != host_name() or int(match['pid']) == os.getpid():
      continue
    path = os.path.join(root, name)
    try:
      modified = os.stat(path).st_mtime
    except FileNotFoundError:
      continue  # its owner just renamed or removed it
    if not _running_since(int(match['pid']), modified):
      shutil.rmtree(path, ignore_errors=True)
      removed.append(path)
  return removed
