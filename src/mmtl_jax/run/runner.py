"""One resumable experiment runner: units of work keyed by a fingerprint of their config,
one record per finished unit, never dropped, read back instead of recomputed.

  units = [runner.Unit(name='maml 5-way seed 0', key={'method': 'maml', 'seed': 0},
                       config={...everything that decides its result...})]
  with runner.Runner(workdir) as held:      # the workdir's lock
    records = held.run(units, compute, what='record')
    # compute(unit, reporter) -> the unit's record (a JSON-able dict)

Layout::

  <workdir>/records/<fingerprint>.json   one file per finished unit: {'name', 'key',
                                         'fingerprint', 'config', 'finished', 'record'}
  <workdir>/.mmtl_jax.lock               held while a run uses the workdir (run/lock.py)

Guarantees:
* A unit's fingerprint is a hash of its key and config (`fingerprint`): the same unit under
  the same config is read back, never recomputed; under a changed config it is a new unit,
  and the record of the old config stays beside it (tables pick the records whose
  fingerprint matches what they show: `Store.matching`).
* Each record is written atomically (run/files.py) when its unit finishes and nothing ever
  deletes or rewrites one: a rerun with a subset of the units, or with another config,
  leaves every other record in place.
* One run per workdir: a second one is refused with `lock.WorkdirLockedError` (an
  `ExpectedError`: one line naming the holder) before any unit starts.
* An interrupt (KeyboardInterrupt, or SIGTERM, which raises SystemExit while the runner
  runs) loses only the unit in progress.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

from mmtl_jax.run import files
from mmtl_jax.run import lock as lock_lib
from mmtl_jax.run import progress as progress_lib
from mmtl_jax.run import workers

RECORDS_DIR = 'records'
FINGERPRINT_CHARS = 16  # 64 bits of sha256: no collision among one workdir's units


def fingerprint(value: Any) -> str:
  """A stable hash of a JSON-able value (configs, tuples and numpy values are converted by
  `files.to_jsonable`; dict keys are sorted, so their order does not count)."""
  text = json.dumps(files.to_jsonable(value), sort_keys=True, separators=(',', ':'))
  return hashlib.sha256(text.encode('utf-8')).hexdigest()[:FINGERPRINT_CHARS]


@dataclasses.dataclass(frozen=True)
class Unit:
  """One unit of work.

  Attributes:
    name: how progress lines name it ('maml 5-way 1-shot seed 0').
    key: its identity in the table (JSON-able), e.g. {'method', 'way', 'shot', 'seed'}.
    config: everything that decides its result (JSON-able after `files.to_jsonable`).
    steps: its length in progress steps (the compute function reports them).
  """
  name: str
  key: Mapping[str, Any]
  config: Any
  steps: int = 1

  @property
  def fingerprint(self) -> str:
    return fingerprint({'key': self.key, 'config': self.config})


class Store:
  """The records of a workdir: <workdir>/records/<fingerprint>.json, written once each."""

  def __init__(self, workdir: str | os.PathLike):
    self.directory = os.path.join(os.fspath(workdir), RECORDS_DIR)

  def path(self, unit: Unit) -> str:
    return os.path.join(self.directory, f'{unit.fingerprint}.json')

  def get(self, unit: Unit) -> Optional[Dict[str, Any]]:
    """The unit's record if it has finished under this fingerprint, else None."""
    path = self.path(unit)
    if not os.path.isfile(path):
      return None
    return self._read(path)['record']

  def put(self, unit: Unit, record: Mapping[str, Any]) -> Dict[str, Any]:
    """Writes the unit's record (atomically: a killed write leaves no file) and returns it
    as JSON reads it back (tuples as lists, NaN as None)."""
    entry = files.to_jsonable({
        'name': unit.name, 'key': unit.key, 'fingerprint': unit.fingerprint,
        'config': unit.config, 'record': record,
        'finished': datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec='seconds')})
    os.makedirs(self.directory, exist_ok=True)
    files.atomic_write_json(self.path(unit), entry)
    return entry['record']

  def entries(self) -> List[Dict[str, Any]]:
    """Every stored entry, oldest first (then by file name, for a stable order)."""
    if not os.path.isdir(self.directory):
      return []
    names = sorted(n for n in os.listdir(self.directory)
                   if n.endswith('.json') and not n.startswith('.'))
    entries = [self._read(os.path.join(self.directory, n)) for n in names]
    return sorted(entries, key=lambda e: e.get('finished', ''))

  def matching(self, fingerprint_of: Callable[[Mapping[str, Any]], Optional[str]]
               ) -> List[Dict[str, Any]]:
    """The stored records whose fingerprint is `fingerprint_of(key)` (what the current
    config gives that unit; None: a key the caller does not know), oldest first."""
    return [e['record'] for e in self.entries()
            if fingerprint_of(e['key']) == e['fingerprint']]

  def _read(self, path: str) -> Dict[str, Any]:
    return files.read_json(path, recover='move it aside: its unit is then computed again')


class Runner:
  """A workdir held for one run: its lock taken on entry (SIGTERM raises SystemExit inside,
  so `finally` blocks and the lock's release run), its `Store`, and `run`.

    with runner.Runner(workdir) as r:       # lock.WorkdirLockedError if another run holds it
      records = r.run(units, compute)
      ... write the tables from `records` (or r.store.matching(...)) while still locked

  workdir None: nothing is stored or locked (every unit is computed).
  """

  def __init__(self, workdir: Optional[str]):
    self.workdir = workdir
    self.store = Store(workdir) if workdir else None
    self._lock = lock_lib.WorkdirLock(workdir) if workdir else None
    self._sigterm = None

  def __enter__(self) -> 'Runner':
    if self._lock is not None:
      self._lock.acquire()
    self._sigterm = workers.sigterm_raises()
    self._sigterm.__enter__()
    return self

  def __exit__(self, *exc_info) -> None:
    try:
      self._sigterm.__exit__(*exc_info)
    finally:
      if self._lock is not None:
        self._lock.release()

  def run(self, units: Sequence[Unit], compute: Callable[[Unit, Any], Mapping[str, Any]], *,
          what: str = 'unit', note: Callable[[Mapping[str, Any]], str] = lambda record: '',
          on_record: Optional[Callable[[List[Dict[str, Any]]], None]] = None,
          make_progress: Optional[Callable[[int, int], Any]] = None) -> List[Dict[str, Any]]:
    """[the record of each unit], in unit order: read back when the unit finished before,
    else `compute(unit, reporter)` (reporter: the run's progress, its current unit this
    one), stored at once.

    Args:
      what: the units' kind in progress lines ('record', 'sweep point').
      note: the text after 'done' / 'read back' in a unit's progress line.
      on_record: called with the records so far after each unit (partial tables).
      make_progress: (units, pending) -> a `progress.Progress`; default: lines every 30 s.
    """
    make_progress = make_progress or (lambda n, pending: progress_lib.Progress(
        what, n, pending=pending))
    store = self.store
    done = [store.get(u) if store else None for u in units]
    records: List[Dict[str, Any]] = []
    with make_progress(len(units), sum(d is None for d in done)) as reporter:
      for unit, record in zip(units, done):
        if record is not None:
          reporter.read_back(unit.name, note(record))
        else:
          reporter.start(unit.name, unit.steps)
          record = compute(unit, reporter)
          record = store.put(unit, record) if store else dict(record)
          reporter.finish(note(record))
        records.append(record)
        if on_record is not None:
          on_record(records)
    return records


def run_units(workdir: Optional[str], units: Sequence[Unit],
              compute: Callable[[Unit, Any], Mapping[str, Any]], **kwargs: Any
              ) -> List[Dict[str, Any]]:
  """`Runner(workdir).run(units, compute, **kwargs)` under the workdir's lock.

  Raises:
    lock.WorkdirLockedError: another run holds `workdir` (nothing was done).
  """
  with Runner(workdir) as held:
    return held.run(units, compute, **kwargs)


__all__ = [
    'fingerprint', 'FINGERPRINT_CHARS', 'RECORDS_DIR', 'run_units', 'Runner', 'Store', 'Unit',
]
