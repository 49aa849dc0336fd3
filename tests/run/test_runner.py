"""run/runner.py: finished units are read back, not recomputed; records are never dropped by
a rerun (a subset of units, a changed config); a second run on a held workdir is refused in
one line; an interrupt (KeyboardInterrupt, SIGTERM) loses only the unit in progress."""

import os
import signal

import pytest

from mmtl_jax.run import errors
from mmtl_jax.run import lock
from mmtl_jax.run import runner


def _units(names, lr=0.1):
  return [runner.Unit(name=n, key={'name': n}, config={'lr': lr, 'name': n}) for n in names]


class _Compute:
  def __init__(self, fail_on=None, fail=KeyboardInterrupt):
    self.calls, self.fail_on, self.fail = [], fail_on, fail

  def __call__(self, unit, reporter):
    if unit.name == self.fail_on:
      if self.fail == 'sigterm':
        os.kill(os.getpid(), signal.SIGTERM)
      raise self.fail
    self.calls.append(unit.name)
    return {'name': unit.name, 'value': len(self.calls)}


def test_finished_units_are_read_back_not_recomputed(tmp_path):
  first = _Compute()
  records = runner.run_units(str(tmp_path), _units('abc'), first)
  assert first.calls == ['a', 'b', 'c'] and [r['value'] for r in records] == [1, 2, 3]
  again = _Compute()
  assert runner.run_units(str(tmp_path), _units('abc'), again) == records
  assert again.calls == []


def test_a_subset_or_a_changed_config_drops_no_record(tmp_path):
  runner.run_units(str(tmp_path), _units('ab'), _Compute())
  runner.run_units(str(tmp_path), _units('a'), _Compute())  # a subset
  changed = _Compute()
  runner.run_units(str(tmp_path), _units('a', lr=0.2), changed)  # a's config changed
  assert changed.calls == ['a']
  store = runner.Store(str(tmp_path))
  assert len(store.entries()) == 3  # a (lr 0.1), b, a (lr 0.2)
  current = {u.key['name']: u.fingerprint for u in _units('ab', lr=0.2)}
  assert [r['name'] for r in store.matching(lambda k: current.get(k['name']))] == ['a']
  old = {u.key['name']: u.fingerprint for u in _units('ab')}
  assert sorted(r['name'] for r in store.matching(lambda k: old.get(k['name']))) == ['a', 'b']


@pytest.mark.parametrize('fail', [KeyboardInterrupt, 'sigterm'])
def test_an_interrupt_loses_only_the_unit_in_progress(tmp_path, fail):
  with pytest.raises(KeyboardInterrupt if fail is KeyboardInterrupt else SystemExit):
    runner.run_units(str(tmp_path), _units('abc'), _Compute(fail_on='b', fail=fail))
  assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # restored
  resumed = _Compute()
  records = runner.run_units(str(tmp_path), _units('abc'), resumed)
  assert resumed.calls == ['b', 'c'] and records[0]['value'] == 1


def test_a_second_run_on_a_held_workdir_is_refused_in_one_line(tmp_path):
  with runner.Runner(str(tmp_path)):
    with pytest.raises(lock.WorkdirLockedError) as err:
      runner.run_units(str(tmp_path), _units('a'), _Compute())
  line = errors.expected_line(err.value)
  assert '\n' not in line and 'in use by another run' in line
  assert isinstance(err.value, errors.ExpectedError)
  assert runner.run_units(str(tmp_path), _units('a'), _Compute())  # released


def test_fingerprint_is_stable_and_order_free():
  assert runner.fingerprint({'a': 1, 'b': (1, 2)}) == runner.fingerprint({'b': [1, 2], 'a': 1})
  assert runner.fingerprint({'a': 1}) != runner.fingerprint({'a': 2})
