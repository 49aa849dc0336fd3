"""Wall time and peak memory of a block of work, as the few-shot records report them.

Peak memory is the peak resident set size (RSS) of this process while the block runs,
sampled by a background thread with psutil (every `interval` seconds); it includes what was
resident before the block (Python, XLA, the rendered alphabet), so compare records of one run
with each other rather than across machines. On an accelerator it does not see device memory.
"""

import threading
import time

import psutil


class PeakRSS:
  """Context manager: `with PeakRSS() as m: ...` then m.peak_mb (MiB) and m.wall_s."""

  def __init__(self, interval: float = 0.02):
    self.interval = interval
    self.peak_mb = 0.0
    self.wall_s = 0.0
    self._process = psutil.Process()
    self._stop = threading.Event()
    self._thread = None
    self._start = 0.0

  def _sample(self) -> None:
    rss = self._process.memory_info().rss / 2 ** 20
    self.peak_mb = max(self.peak_mb, rss)

  def _watch(self) -> None:
    while not self._stop.wait(self.interval):
      self._sample()

  def __enter__(self) -> 'PeakRSS':
    self._start = time.perf_counter()
    self._sample()
    self._thread = threading.Thread(target=self._watch, daemon=True)
    self._thread.start()
    return self

  def __exit__(self, *exc) -> None:
    self._stop.set()
    self._thread.join()
    self._sample()
    self.wall_s = time.perf_counter() - self._start


__all__ = ['PeakRSS']
