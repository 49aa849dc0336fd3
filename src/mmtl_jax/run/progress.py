"""Progress that reads well in a terminal and in a log file (clu's periodic report is the model).

A run is `units` units of work (fold-runs, grid points, utterances to featurise...), each of
some steps. One `Progress` follows them::

  from mmtl_jax.run import progress

  with progress.log_to(os.path.join(workdir, 'train.log')):   # optional: a log file too
    p = progress.Progress('fold-run', units=len(jobs), every_s=progress.interval(config))
    for name, steps in jobs:
      if finished(name):
        p.read_back(name)                 # a unit whose result was already on disk
        continue
      p.start(name, steps, done=resumed_step)
      for step in range(resumed_step + 1, steps + 1):
        loss = train_step(step)
        p.update(step, loss=loss)         # cheap: prints only when a line is due
      p.finish()
      p.line(f'{name}: test UA ...')      # a line for the reader, in the log file too
    p.close()

(`Progress.track(iterable, name, total)` does start / update / finish around an iterable;
few-shot training uses it the same way: one unit per (system, seed), `update(iteration,
loss=...)` in its loop.)

What is printed depends on where stdout goes:

- a terminal: tqdm bars, the unit's and (several units) one over all units, as before;
- anything else (nohup, SLURM, a pipe, a file): one plain line every `every_s` seconds
  (config.train.report_every_s, default 30; 0: at every update), e.g.
  ``[fold-run 3/15 mmtl Ses02] step 40/150 loss 1.234 2.1 steps/s ETA fold 52 s, run 6 min 10 s``.

Every line, bars or not, also goes to the files opened by `log_to`, with the time in front.

The ETAs are measured, never guessed: the rate of a unit counts from its first update, so a
warm-up (compilation, numba's first call in librosa) before it does not enter the rate; until
a unit has two updates its ETA is '?'. The run's ETA is the unit's plus the units still to
work (`pending`; units read back take no time) times the mean duration of the units finished
so far (the first one, which compiled, left out once there are two); before any unit has
finished it is extrapolated from the current unit's steps alone and marked '~' ('~6 min'):
per-unit work outside the steps (evaluation, tests) is not in it yet, and later units (other
models) may step at another rate.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import os
import sys
import threading
import time
from typing import Any, Callable, Iterable, Iterator, Optional, TextIO

import tqdm

from mmtl_jax.run import errors
from mmtl_jax.run import files

DEFAULT_EVERY_S = 30.0
# The files of the enclosing `log_to` blocks (innermost last): every line goes to each.
_LOGS: list[TextIO] = []
_LOCK = threading.RLock()


def interval(config: Any, default: float = DEFAULT_EVERY_S) -> float:
  """config.train.report_every_s (seconds between progress lines), or `default` where the
  config has no such field (or no config is given)."""
  train = config.get('train') if hasattr(config, 'get') else None
  value = train.get('report_every_s') if hasattr(train, 'get') else None
  return float(default if value is None else value)


def format_duration(seconds: Optional[float]) -> str:
  """'?' for None; '52 s', '6 min 10 s', '2 h 05 min' (rounded to the unit shown)."""
  if seconds is None:
    return '?'
  s = max(0, int(round(seconds)))
  if s < 60:
    return f'{s} s'
  if s < 3600:
    return f'{s // 60} min {s % 60} s'
  return f'{s // 3600} h {(s % 3600) // 60:02d} min'


@contextlib.contextmanager
def log_to(path: str) -> Iterator[None]:
  """While inside, every line of every `Progress` (and `line`) is appended to `path` too,
  each after the local time; the file is created with its directory.

  Raises:
    files.PathError: `path` is a symbolic link: appending through it would write to a file
      outside the run's directory.
  """
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fd = files.open_no_follow(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
  with os.fdopen(fd, 'a', encoding='utf-8') as f:
    with _LOCK:
      _LOGS.append(f)
    try:
      yield
    finally:
      with _LOCK:
        _LOGS.remove(f)


def _to_logs(text: str) -> None:
  stamp = datetime.datetime.now().isoformat(sep=' ', timespec='seconds')
  for f in _LOGS:
    f.write(''.join(f'{stamp} {l}\n' for l in text.splitlines() or ['']))
    f.flush()


def line(text: str, stream: Optional[TextIO] = None, to_stream: bool = True) -> None:
  """Writes `text` (one or more lines) to `stream` (default: sys.stdout at call time; through
  tqdm.write, so open bars stay intact) and to the `log_to` files."""
  with _LOCK:
    if to_stream:
      tqdm.tqdm.write(text, file=stream or sys.stdout)
      (stream or sys.stdout).flush()
    _to_logs(text)


@dataclasses.dataclass
class _Unit:
  """The unit being worked: its name, steps, when it started, its first and latest update
  ((step, time); the rate counts between them) and the scalars of the latest."""
  name: str
  total: int
  started: float
  done: int
  first: Optional[tuple[int, float]] = None
  last: Optional[tuple[int, float]] = None
  scalars: dict = dataclasses.field(default_factory=dict)
  bar: Any = None


class Progress:
  """Progress of `units` units of work; see the module docstring.

  Args:
    what: the kind of unit in every line ('fold-run', 'features', 'sweep point').
    units: how many units the run has (read-back ones included).
    every_s: seconds between lines where stdout is no terminal (0: every update).
    unit: the name of a step in lines ('step', 'utt').
    pending: how many of the units will do work (the rest are read back); default all.
    stream: where lines and bars go (default: sys.stdout at each write).
    tty: show tqdm bars instead of lines; default: whether `stream` is a terminal.
    clock: seconds, monotonic (tests pass a fake one).
    enabled: False: nothing is shown or logged (e.g. JAX processes other than 0).
    heartbeat: a daemon thread also writes the line when one is due and no update came (a
      long compilation, a single long computation); not with a fake clock.
    announce: write a line when a unit starts (units that are long and few: grid points).
  """

  def __init__(self, what: str, units: int = 1, *, every_s: float = DEFAULT_EVERY_S,
               unit: str = 'step', pending: Optional[int] = None,
               stream: Optional[TextIO] = None, tty: Optional[bool] = None,
               clock: Callable[[], float] = time.monotonic, enabled: bool = True,
               heartbeat: bool = False, announce: bool = False):
    self.what, self.units, self.every_s, self.unit = what, int(units), float(every_s), unit
    self.pending = self.units if pending is None else int(pending)
    self._stream, self._clock, self.enabled, self._announce = stream, clock, enabled, announce
    out = stream or sys.stdout
    self.tty = bool(tty if tty is not None else getattr(out, 'isatty', lambda: False)())
    self.index = 0  # ordinal of the latest unit started or read back
    self.worked = 0  # units started (not read back)
    self.read_back_count = 0
    self.durations: list[float] = []  # seconds of each finished worked unit
    self._unit: Optional[_Unit] = None
    self._last_line = clock()
    self._overall = None
    self._stop = threading.Event()
    self._thread = None
    if enabled and heartbeat and self.every_s > 0:
      self._thread = threading.Thread(target=self._beat, daemon=True,
                                      name=f'mmtl-progress-{what}')
      self._thread.start()

  # ---- the units ---------------------------------------------------------------------------

  def start(self, name: str, total: int, done: int = 0) -> None:
    """Unit `name` starts with `total` steps, `done` of them already done (a resumed one);
    control characters in `name` are shown escaped (`errors.printable`)."""
    with _LOCK:
      self.index += 1
      self.worked += 1
      now = self._clock()
      # Unit names hold names from files (a fold is named after its speakers): escaped, so
      # that no control character reaches the terminal or the bars.
      self._unit = _Unit(errors.printable(str(name)), int(total), now, int(done))
      if not self.enabled:
        return
      if self.tty and not self._announce:
        self._open_bars()
      if self._announce:
        self._write(self._prefix() + ' started' + (
            f', ETA run {self._run_text()}' if self.durations else ''))
        self._last_line = now

  def update(self, step: int, **scalars: float) -> None:
    """The current unit is at step `step` (of its total); `scalars` (e.g. loss) are shown."""
    with _LOCK:
      u = self._unit
      if u is None:
        raise ValueError('Progress.update before Progress.start')
      now = self._clock()
      u.last = (int(step), now)
      if u.first is None:
        u.first = u.last
      u.scalars.update({k: float(v) for k, v in scalars.items()})
      if not self.enabled:
        return
      if u.bar is not None:
        u.bar.update(int(step) - u.bar.n)
        if u.scalars:
          u.bar.set_postfix({k: f'{v:.3f}' for k, v in u.scalars.items()}, refresh=False)
      self._tick(now)

  def finish(self, note: str = '') -> float:
    """The current unit is done: writes '[what i/n name] done in <duration>[: note]' and
    returns the duration in seconds."""
    with _LOCK:
      u = self._unit
      if u is None:
        raise ValueError('Progress.finish before Progress.start')
      seconds = self._clock() - u.started
      self.durations.append(seconds)
      if u.bar is not None:
        u.bar.close()
      if self.enabled:
        self._write(f'{self._prefix()} done in {format_duration(seconds)}'
                    + (f': {note}' if note else ''))
      self._unit = None
      self._advance_overall()
      return seconds

  def read_back(self, name: str, note: str = '') -> None:
    """Unit `name` was done before (its result read back): counted, never timed; its line
    (name and `note`) has control characters escaped."""
    with _LOCK:
      self.index += 1
      self.read_back_count += 1
      if not self.enabled:
        return
      if self.tty and self._overall is None and self.units > 1:
        self._open_overall()
      self._write(errors.printable(f'{self._prefix(str(name))} read back'
                                   + (f': {note}' if note else '')))
      self._advance_overall()

  def track(self, iterable: Iterable[Any], name: str, total: int) -> Iterator[Any]:
    """Yields the items of `iterable` as unit `name` of `total` steps (one per item)."""
    self.start(name, total)
    for i, item in enumerate(iterable, 1):
      yield item
      self.update(i)
    self.finish()

  def line(self, text: str) -> None:
    """A line for the reader: to the stream (above any bars) and the log files."""
    if self.enabled:
      line(text, self._stream)

  def close(self) -> None:
    """Stops the heartbeat and closes the bars. Idempotent."""
    self._stop.set()
    if self._thread is not None:
      self._thread.join(timeout=5)
      self._thread = None
    with _LOCK:
      if self._unit is not None and self._unit.bar is not None:
        self._unit.bar.close()
      if self._overall is not None:
        self._overall.close()
        self._overall = None

  def __enter__(self) -> 'Progress':
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()

  # ---- the arithmetic ----------------------------------------------------------------------

  def rate(self) -> Optional[float]:
    """Steps per second of the current unit since its first update (None: not measurable)."""
    u = self._unit
    if u is None or u.first is None or u.last is None:
      return None
    steps, seconds = u.last[0] - u.first[0], u.last[1] - u.first[1]
    return steps / seconds if steps > 0 and seconds > 0 else None

  def unit_eta(self) -> Optional[float]:
    """Seconds left in the current unit (0 once at its total; None: unknown)."""
    u = self._unit
    if u is None:
      return None
    step = u.last[0] if u.last is not None else u.done
    if step >= u.total:
      return 0.0
    rate = self.rate()
    return None if rate is None else (u.total - step) / rate

  def run_eta(self) -> tuple[Optional[float], bool]:
    """(seconds left in the run, whether that is a rough extrapolation from the current
    unit's steps); (None, _): unknown.

    The units still to work after the current one take the mean duration of the finished
    ones (without the first, which compiled, once there are two); the current one its own
    ETA, or that mean less its time so far where it has no rate yet. Before any unit has
    finished, the current unit's step rate stands for every unit (rough).
    """
    after = max(0, self.pending - self.worked)  # units to work after the current one
    durations = self.durations[1:] if len(self.durations) > 1 else self.durations
    per_unit = sum(durations) / len(durations) if durations else None
    u = self._unit
    unit_left = self.unit_eta() if u is not None else 0.0
    if unit_left is None and per_unit is not None:
      unit_left = max(0.0, per_unit - (self._clock() - u.started))
    if unit_left is None:
      return None, False
    if after == 0:
      return unit_left, False
    if per_unit is not None:
      return unit_left + after * per_unit, False
    rate = self.rate()
    if rate is None:
      return None, False
    return unit_left + after * u.total / rate, True

  def _run_text(self) -> str:
    seconds, rough = self.run_eta()
    return ('~' if rough and seconds is not None else '') + format_duration(seconds)

  def status(self) -> str:
    """The line of the current unit: where it is, its scalars, its rate and the ETAs."""
    u = self._unit
    if u is None:
      return f'{self._prefix()} ETA run {self._run_text()}'
    step = u.last[0] if u.last is not None else u.done
    parts = [self._prefix()]
    if u.total > 1:  # a unit of one step (a grid point, one computation) has no steps to show
      parts.append(f'{self.unit} {step}/{u.total}')
    parts += [f'{k} {v:.3f}' for k, v in u.scalars.items()]
    rate = self.rate()
    if rate is not None:
      parts.append(f'{rate:.3g} {self.unit}s/s' if rate >= 0.1 else
                   f'{1.0 / rate:.3g} s/{self.unit}')
    else:  # before two updates: how long it has been busy (compiling, warming up)
      parts.append(f'elapsed {format_duration(self._clock() - u.started)}')
    eta = f'ETA {self.what} {format_duration(self.unit_eta())}' if u.total > 1 else 'ETA'
    if self.units > 1:
      eta += f'{"," if u.total > 1 else ""} run {self._run_text()}'
    return ' '.join(parts + ([eta] if eta != 'ETA' else []))

  # ---- output ------------------------------------------------------------------------------

  def _prefix(self, name: Optional[str] = None) -> str:
    if name is None:
      name = self._unit.name if self._unit is not None else ''
    count = f' {self.index}/{self.units}' if self.units > 1 else ''
    return f'[{self.what}{count}' + (f' {name}]' if name else ']')

  def _tick(self, now: float) -> None:
    """Writes the status line when `every_s` has passed since the last one (always to the
    log files; to the stream where there are no bars)."""
    if now - self._last_line >= self.every_s:
      self._last_line = now
      self._write(self.status(), to_stream=not self.tty or self._announce)
    if self._overall is not None:
      self._overall.set_postfix_str(f'ETA {self._run_text()}', refresh=False)

  def _beat(self) -> None:
    while not self._stop.wait(min(1.0, self.every_s)):
      with _LOCK:
        if self._unit is not None:
          self._tick(self._clock())

  def _write(self, text: str, to_stream: bool = True) -> None:
    line(text, self._stream, to_stream)

  def _open_overall(self) -> None:
    self._overall = tqdm.tqdm(total=self.units, desc=f'{self.what}s', unit=self.what,
                              file=self._stream or sys.stdout, dynamic_ncols=True,
                              initial=self.index - 1)

  def _open_bars(self) -> None:
    u = self._unit
    if self._overall is None and self.units > 1:
      self._open_overall()
    desc = self._prefix()[1:-1]
    u.bar = tqdm.tqdm(total=u.total, initial=u.done, desc=desc, unit=self.unit, leave=False,
                      file=self._stream or sys.stdout, dynamic_ncols=True)

  def _advance_overall(self) -> None:
    if self._overall is not None:
      self._overall.update(1)


__all__ = ['DEFAULT_EVERY_S', 'format_duration', 'interval', 'line', 'log_to', 'Progress']
