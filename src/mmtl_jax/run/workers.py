"""Worker processes that never outlive the process that started them.

`map_in_pool` runs a function over jobs in a process pool whose workers die with their
parent however it ends: SIGKILL included (Linux's parent-death signal, and a watchdog thread
everywhere), and on any exception in the parent (KeyboardInterrupt; SystemExit from SIGTERM
inside `sigterm_raises`) they are killed at once instead of finishing the queued jobs.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time
from typing import Any, Callable, Iterator, Optional

from mmtl_jax.run import progress

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def start_method() -> str:
  """'fork' where safe, else 'spawn'.

  Fork is fast and works from any __main__ (stdin, notebooks), but copying a process that
  runs JAX's threads is unsafe: once JAX is imported, spawn fresh interpreters instead.
  """
  return 'spawn' if ('jax' in sys.modules or os.name != 'posix') else 'fork'


def _watch_parent(parent: int) -> None:
  """Worker thread: exits the worker once its parent is gone (it is re-parented)."""
  while os.getppid() == parent:
    time.sleep(1.0)
  os._exit(1)  # pylint: disable=protected-access


def die_with_parent(parent: int) -> None:
  """Pool worker initializer: the worker dies with the process that started it, however
  that one ends (SIGKILL included), so no orphan keeps computing.

  On Linux the kernel sends SIGKILL when the parent dies (prctl PR_SET_PDEATHSIG); everywhere
  a daemon thread polls os.getppid() as a fallback. A parent that died before this ran is
  caught by the first getppid check.
  """
  if sys.platform.startswith('linux'):
    try:
      ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    except (OSError, AttributeError):
      pass  # no prctl in this libc: the polling thread still works
  if os.getppid() != parent:
    os._exit(1)  # pylint: disable=protected-access
  threading.Thread(target=_watch_parent, args=(parent,), daemon=True,
                   name='mmtl-feature-worker-watchdog').start()


def stop_workers(pool: concurrent.futures.ProcessPoolExecutor) -> None:
  """Kills the pool's workers now (no waiting for queued jobs) and reaps them."""
  processes = list((getattr(pool, '_processes', None) or {}).values())
  for p in processes:
    p.kill()
  pool.shutdown(wait=False, cancel_futures=True)
  for p in processes:
    p.join(timeout=5)


def map_in_pool(fn: Callable[[Any], Any], jobs: list, workers: int, method: str, desc: str,
                unit: str = 'utt', reporter: Optional[progress.Progress] = None) -> list:
  """[fn(job) for job in jobs], computed in a pool of `workers` processes started by
  `method` ('fork' | 'spawn'; see `start_method`), reported as unit `desc` of `reporter`
  (default: a `progress.Progress` of its own: a bar on a terminal, else a line every 30 s; its
  rate and ETA count from the first result, after the workers' warm-up).

  The workers die with this process; on any exception (KeyboardInterrupt, SystemExit from
  SIGTERM) they are killed at once. `fn` must be picklable (a module-level function).

  Raises:
    concurrent.futures.process.BrokenProcessPool: a worker died (e.g. a spawned worker
      re-ran a __main__ script without an `if __name__ == '__main__':` guard).
  """
  pool = concurrent.futures.ProcessPoolExecutor(
      min(workers, len(jobs)), multiprocessing.get_context(method),
      initializer=die_with_parent, initargs=(os.getpid(),))
  try:
    chunk = max(1, min(16, len(jobs) // (4 * workers)))
    own = reporter is None
    reporter = progress.Progress('work', unit=unit) if own else reporter
    try:
      results = list(reporter.track(pool.map(fn, jobs, chunksize=chunk), desc, len(jobs)))
    finally:
      if own:
        reporter.close()
  except BaseException:
    stop_workers(pool)
    raise
  pool.shutdown()
  return results


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
  """While inside, SIGTERM raises SystemExit(143) instead of ending the process at once, so
  `finally` blocks run (temporary files are removed, `map_in_pool` stops its workers).

  Only in the main thread and only where SIGTERM has its default action: a handler the
  application installed is left alone.
  """
  if (threading.current_thread() is not threading.main_thread()
      or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL):
    yield
    return

  def handler(signum, frame):
    del frame
    raise SystemExit(128 + signum)

  signal.signal(signal.SIGTERM, handler)
  try:
    yield
  finally:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


__all__ = ['die_with_parent', 'map_in_pool', 'sigterm_raises', 'start_method', 'stop_workers']
