"""One run per workdir: an exclusive lock that names its holder.

  with lock.WorkdirLock(workdir):   # WorkdirLockedError naming pid, host, start, command
    ...                             # of the process that holds it

The lock is `fcntl.flock` on `<workdir>/.mmtl_jax.lock`. The kernel releases it when the
holding process exits, however it dies (kill -9 included), so a crash never leaves a stale
lock to delete by hand. The file itself is left in place (unlinking it would let a third
process lock a fresh inode while a second still holds the old one); while held it contains
the holder as JSON: {'pid', 'host', 'started' (ISO 8601), 'command'}. flock is per open file,
so a second lock from the same process is refused as well. On network file systems flock is
only as reliable as the file system's lock support (NFSv4 emulates it with POSIX locks).
"""

from __future__ import annotations

import datetime
import fcntl
import json
import os
import shlex
import socket
import sys
from typing import Any, Optional

from mmtl_jax.run import errors
from mmtl_jax.run import files

LOCK_NAME = '.mmtl_jax.lock'


class WorkdirLockedError(errors.ExpectedError, RuntimeError):
  """Another process holds the workdir's lock; `holder` is its JSON record (or {})."""

  def __init__(self, message: str, holder: dict[str, Any]):
    super().__init__(message)
    self.holder = holder


def holder_record() -> dict[str, Any]:
  """{'pid', 'host', 'started', 'command'} of the calling process."""
  return {'pid': os.getpid(), 'host': socket.gethostname(),
          'started': datetime.datetime.now(datetime.timezone.utc).isoformat(
              timespec='seconds'),
          'command': shlex.join([sys.executable] + sys.argv)}


def _read_holder(fd: int) -> dict[str, Any]:
  """The JSON record in the lock file; {} while the holder is between truncate and write."""
  os.lseek(fd, 0, os.SEEK_SET)
  text = os.read(fd, 1 << 16).decode('utf-8', errors='replace')
  try:
    record = json.loads(text)
  except ValueError:
    return {}
  return record if isinstance(record, dict) else {}


class WorkdirLock:
  """Exclusive, non-blocking lock on a workdir (see the module docstring).

  Args:
    workdir: the experiment directory (created if missing).
  """

  def __init__(self, workdir: str | os.PathLike):
    self.path = os.path.join(os.path.abspath(os.fspath(workdir)), LOCK_NAME)
    self._fd: Optional[int] = None

  def acquire(self) -> 'WorkdirLock':
    """Takes the lock and writes this process's record into it.

    Raises:
      WorkdirLockedError: another process (or another WorkdirLock of this one) holds it.
      files.PathError: the lock file's name is a symbolic link (nothing is written).
    """
    if self._fd is not None:
      raise RuntimeError(f'{self.path}: already acquired by this WorkdirLock')
    os.makedirs(os.path.dirname(self.path), exist_ok=True)
    # The umask applies; a symbolic link planted at the lock's name is refused (PathError),
    # never followed: truncating the record would empty the file it points at.
    fd = files.open_no_follow(self.path, os.O_RDWR | os.O_CREAT)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = _read_holder(fd)
      os.close(fd)
      raise WorkdirLockedError(self._message(holder), holder) from None
    os.ftruncate(fd, 0)
    os.write(fd, (json.dumps(holder_record()) + '\n').encode('utf-8'))
    os.fsync(fd)
    self._fd = fd
    return self

  def _message(self, holder: dict[str, Any]) -> str:
    who = (f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}, started "
           f"{holder.get('started', '?')}, command: {holder.get('command', '?')}")
    return (f'{os.path.dirname(self.path)} is in use by another run ({who}). Wait for it to '
            f'finish or stop it, or use another --workdir. (Lock file: {self.path}; it is '
            'released automatically when that process exits.)')

  def release(self) -> None:
    """Empties the record and drops the lock (a no-op when not held)."""
    if self._fd is None:
      return
    fd, self._fd = self._fd, None
    try:
      os.ftruncate(fd, 0)
    finally:
      os.close(fd)  # closing the last descriptor releases the flock

  def __enter__(self) -> 'WorkdirLock':
    return self.acquire()

  def __exit__(self, *exc_info) -> None:
    self.release()


__all__ = ['holder_record', 'LOCK_NAME', 'WorkdirLock', 'WorkdirLockedError']
