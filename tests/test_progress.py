"""The periodic progress reporter (run/progress.py): its lines where stdout is no terminal,
its ETA arithmetic on a fake clock, the log file, and the TPU-probe filter."""

import io
import logging

import pytest

from mmtl_jax.run import errors
from mmtl_jax.run import progress


class FakeClock:

  def __init__(self):
    self.t = 0.0

  def __call__(self):
    return self.t


def make(units=3, every_s=0.0, **kwargs):
  clock, out = FakeClock(), io.StringIO()
  p = progress.Progress('fold-run', units, every_s=every_s, stream=out, tty=False, clock=clock,
                        **kwargs)
  return p, clock, out


def test_durations_are_written_in_the_unit_a_reader_wants():
  assert [progress.format_duration(s) for s in (None, 0.4, 52, 370, 7500)] == [
      '?', '0 s', '52 s', '6 min 10 s', '2 h 05 min']


def test_eta_excludes_the_warm_up_and_is_a_lower_bound_until_a_unit_finished():
  p, clock, out = make()
  p.start('mmtl Ses01', 10)
  clock.t = 30.0  # the first step compiled for 30 s: not part of the rate
  p.update(1, loss=2.0)
  assert p.unit_eta() is None and p.run_eta() == (None, False)
  clock.t = 34.0  # then 2 steps/s
  p.update(9, loss=1.5)
  assert p.rate() == pytest.approx(2.0)
  assert p.unit_eta() == pytest.approx(0.5)
  # 2 more units of 10 steps at 2 steps/s, evaluation not counted yet: a lower bound
  assert p.run_eta() == (pytest.approx(10.5), True)
  lines = out.getvalue().splitlines()
  assert lines[0] == '[fold-run 1/3 mmtl Ses01] step 1/10 loss 2.000 busy 30 s ETA fold-run ?, run ?'
  assert lines[1] == ('[fold-run 1/3 mmtl Ses01] step 9/10 loss 1.500 2 steps/s '
                      'ETA fold-run 0 s, run >= 10 s')


def test_run_eta_uses_finished_units_and_drops_the_compiling_one():
  p, clock, _ = make(units=4)
  for started, seconds in ((0.0, 40.0), (40.0, 10.0)):
    p.start('u', 5)
    clock.t = started + seconds
    p.update(5)
    assert p.finish() == pytest.approx(seconds)
  p.start('u', 5)  # the third of four: no rate yet, 1 s into it
  clock.t = 51.0
  # mean of the finished units without the first: 10 s; this one has 9 s left, one more 10
  assert p.run_eta() == (pytest.approx(19.0), False)


def test_read_back_units_take_no_time_and_are_labelled():
  p, clock, out = make(units=3, pending=1)
  p.read_back('mmtl Ses01', 'test UA 0.5')
  p.read_back('mmtl Ses02')
  p.start('mmtl Ses03', 4)
  p.update(2)
  clock.t = 2.0
  p.update(4)
  assert p.run_eta() == (0.0, False)  # the last unit to train, at its end
  assert p.read_back_count == 2 and p.worked == 1
  assert out.getvalue().splitlines()[:2] == ['[fold-run 1/3 mmtl Ses01] read back: test UA 0.5',
                                             '[fold-run 2/3 mmtl Ses02] read back']


def test_lines_come_every_interval_not_every_update():
  p, clock, out = make(units=1, every_s=30.0)
  p.start('f', 100)
  for step in range(1, 101):
    clock.t = step * 1.0
    p.update(step)
  lines = out.getvalue().splitlines()
  assert len(lines) == 3  # at 30, 60 and 90 s
  assert lines[0].startswith('[fold-run f] step 30/100') and 'ETA fold-run 1 min 10 s' in lines[0]


def test_log_file_receives_the_lines_with_the_time(tmp_path):
  path = tmp_path / 'logs' / 'train.log'
  with progress.log_to(str(path)):
    p, _, out = make(units=1)
    p.start('f', 2)
    p.update(1)
    p.line('summary')
  progress.line('after the block: not logged', stream=io.StringIO())
  logged = path.read_text().splitlines()
  assert [l.split(' ', 2)[2] for l in logged] == out.getvalue().splitlines()
  assert logged[-1].endswith(' summary')


def test_interval_from_config():
  import ml_collections
  c = ml_collections.ConfigDict({'train': {'report_every_s': 0}})
  assert progress.interval(c) == 0.0
  assert progress.interval(ml_collections.ConfigDict({'train': {}})) == 30.0
  assert progress.interval(None) == 30.0


def _record(msg, level=logging.INFO):
  return logging.LogRecord('jax._src.xla_bridge', level, 'xla_bridge.py', 1, msg, (), None)


def test_tpu_probe_line_is_dropped_only_where_libtpu_is_absent():
  f = errors.QuietBackendProbe()
  absent = ("Unable to initialize backend 'tpu': INTERNAL: Failed to open libtpu.so: libtpu.so: "
            'cannot open shared object file: No such file or directory')
  assert not f.filter(_record(absent))
  # A TPU host whose TPU fails (busy, driver) keeps the line, as does anything else
  assert f.filter(_record("Unable to initialize backend 'tpu': ABORTED: The TPU is already in use"))
  assert f.filter(_record(absent, logging.WARNING))
  assert f.filter(_record('Unable to initialize backend \'cuda\': no GPU'))
