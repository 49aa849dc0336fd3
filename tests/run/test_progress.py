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


def test_eta_excludes_the_warm_up_and_is_rough_until_a_unit_finished():
  p, clock, out = make()
  p.start('mmtl Ses01', 10)
  clock.t = 30.0  # the first step compiled for 30 s: not part of the rate
  p.update(1, loss=2.0)
  assert p.unit_eta() is None and p.run_eta() == (None, False)
  clock.t = 34.0  # then 2 steps/s
  p.update(9, loss=1.5)
  assert p.rate() == pytest.approx(2.0)
  assert p.unit_eta() == pytest.approx(0.5)
  # 2 more units of 10 steps at 2 steps/s, evaluation not counted yet: rough
  assert p.run_eta() == (pytest.approx(10.5), True)
  lines = out.getvalue().splitlines()
  assert lines[0] == '[fold-run 1/3 mmtl Ses01] step 1/10 loss 2.000 elapsed 30 s ETA fold-run ?, run ?'
  assert lines[1] == ('[fold-run 1/3 mmtl Ses01] step 9/10 loss 1.500 2 steps/s '
                      'ETA fold-run 0 s, run ~10 s')


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


def test_long_units_are_announced_and_the_heartbeat_speaks_while_nothing_updates():
  import time  # pylint: disable=g-import-not-at-top
  out = io.StringIO()
  with progress.Progress('gradients', 2, every_s=0.05, stream=out, tty=False, heartbeat=True,
                         announce=True) as p:
    p.start('initial parameters', 1)
    time.sleep(0.3)  # one long computation: no update comes
    p.finish()
    p.start('checkpoint 1/1', 1)
  lines = out.getvalue().splitlines()
  assert lines[0] == '[gradients 1/2 initial parameters] started'
  beats = [l for l in lines if l.startswith('[gradients 1/2 initial parameters] elapsed ')]
  assert len(beats) >= 2 and beats[0].endswith(' ETA run ?')
  assert any(l.startswith('[gradients 1/2 initial parameters] done in ') for l in lines)
  assert any(l.startswith('[gradients 2/2 checkpoint 1/1] started, ETA run ') for l in lines)


def test_a_terminal_gets_bars_of_the_unit_and_of_the_run_and_no_status_lines():
  out = io.StringIO()
  p = progress.Progress('fold-run', 2, every_s=0.0, stream=out, tty=True)
  p.read_back('a', 'x')
  p.start('b', 3)
  p.update(1, loss=1.5)
  p.update(3, loss=1.25)
  p.finish('ok')
  p.close()
  text = out.getvalue()
  assert 'fold-run 2/2 b:' in text and 'fold-runs: 100%' in text  # the unit's and the run's
  assert '[fold-run 1/2 a] read back: x' in text and '[fold-run 2/2 b] done in ' in text
  assert ' step 3/3' not in text  # the bars say it


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


# ---- end to end: experiments/train.py with stdout piped to a file ----------------------------

def _override_flags(config, default):
  """--config.<field>=<value> for every field where `config` differs from `default`."""
  from mmtl_jax.ser import fingerprint  # pylint: disable=g-import-not-at-top
  mine, theirs = (fingerprint.flatten(c.to_dict()) for c in (config, default))
  return [f'--config.{k}={v}' if isinstance(v, str) else f'--config.{k}={v!r}'
          for k, v in sorted(mine.items()) if theirs.get(k, object()) != v]


def _two_fold_config(tiny_config, corpus_root):
  """One model, two folds, 2 steps, the strict protocol only: the least that trains two
  fold-runs; a progress line at every step."""
  c = tiny_config(corpus_root, models=('cnn_lstm',), steps=2)
  c.folds.which = (0, 1)
  c.eval.protocols = ('strict',)
  c.train.report_every_s = 0.0
  return c


FOLDS = ('Ses01-testSes01M', 'Ses02-testSes02M')


@pytest.fixture(scope='module')
def piped_run(tiny_config, corpus_root, tmp_path_factory):
  """(workdir, stdout, stderr) of experiments/train.py on the two-fold config, its stdout a
  file (no terminal: the progress lines of nohup or SLURM)."""
  import os  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  from mmtl_jax.configs import demo  # pylint: disable=g-import-not-at-top
  root = tmp_path_factory.mktemp('piped')
  workdir, out_path = root / 'run', root / 'stdout.txt'
  flags = _override_flags(_two_fold_config(tiny_config, corpus_root), demo.get_config())
  script = os.path.join(os.path.dirname(__file__), '..', '..', 'experiments', 'train.py')
  with open(out_path, 'w') as out:
    done = subprocess.run([sys.executable, script, f'--workdir={workdir}', *flags], stdout=out,
                          stderr=subprocess.PIPE, text=True, timeout=600, check=False)
  assert done.returncode == 0, done.stderr[-3000:]
  return workdir, out_path.read_text(), done.stderr


@pytest.mark.slow  # subprocess: the demo loop, two fold-runs
def test_piped_train_prints_progress_lines_with_etas_and_a_summary(piped_run):
  workdir, out, err = piped_run
  lines = out.splitlines()
  progress_lines = [l for l in lines if l.startswith('[fold-run ') and ' step ' in l]
  assert [l.split(']')[0] for l in progress_lines] == [
      f'[fold-run {i}/2 cnn_lstm {f}' for i, f in ((1, FOLDS[0]), (2, FOLDS[1])) for _ in (1, 2)]
  assert all('ETA fold-run ' in l and ', run ' in l and ' loss ' in l for l in progress_lines)
  assert 'steps/s ETA fold-run 0 s' in progress_lines[1]  # rate measured after the warm-up
  assert any(l.startswith('[features ') and 'ETA features' in l for l in lines)
  assert any(l.startswith(f'[fold-run 2/2 cnn_lstm {FOLDS[1]}] done in ') for l in lines)
  # the summary table and where the rest is; not the per-fold tables of results.md
  assert any(l.split() == ['cnn_lstm', 'strict'] + l.split()[2:] for l in lines)
  assert '| Fold |' not in out and f'results.md    {workdir}/results.md' in out
  assert 'trained 2 fold-run(s)' in out and '[deliberate: ' in out
  # the same lines, timed, in the workdir's log; no TPU probe line on a CPU-only machine
  logged = (workdir / 'train.log').read_text()
  assert all(l in logged for l in progress_lines)
  assert 'Unable to initialize backend' not in err


@pytest.mark.slow  # reads the workdir that the subprocess trained
def test_tensorboard_runs_of_two_folds_overlay_and_carry_hparams(piped_run):
  import glob  # pylint: disable=g-import-not-at-top
  from tensorboardX.proto import plugin_hparams_pb2  # pylint: disable=g-import-not-at-top
  from helpers import plugin_tags, read_events, scalar_events  # pylint: disable=g-import-not-at-top
  workdir = piped_run[0]
  folds = {}
  for fold in FOLDS:
    (events,) = glob.glob(str(workdir / 'cnn_lstm' / fold / 'logs' / 'events.out.tfevents.*'))
    folds[fold] = events
    tags = {t for _, t, _ in scalar_events(events)}
    assert {'loss', 'dev_UA_strict', 'test_UA_strict'} <= tags  # the same names in every run
    assert '_hparams_/session_start_info' in plugin_tags(events)['hparams']
    assert plugin_tags(events)['text'] == ['config/text_summary']
  hparams = {}
  for fold, events in folds.items():
    (start,) = [v for e in read_events(events) for v in e.summary.value
                if v.tag == '_hparams_/session_start_info']
    hparams[fold] = plugin_hparams_pb2.HParamsPluginData.FromString(
        start.metadata.plugin_data.content).session_start_info.hparams
  assert {f: h['fold'].string_value for f, h in hparams.items()} == {f: f for f in FOLDS}
  assert hparams[FOLDS[0]]['system'].string_value == 'cnn_lstm'
  assert hparams[FOLDS[0]]['train.steps'].number_value == 2


@pytest.mark.slow  # the demo loop over the subprocess's workdir (nothing left to train)
def test_rerun_marks_folds_read_back_and_says_nothing_trained(piped_run, tiny_config,
                                                              corpus_root, capsys):
  from mmtl_jax.ser import train  # pylint: disable=g-import-not-at-top
  workdir = piped_run[0]
  train.train_and_evaluate(_two_fold_config(tiny_config, corpus_root), str(workdir))
  out = capsys.readouterr().out
  assert f'[fold-run 1/2 cnn_lstm {FOLDS[0]}] read back: test Ses01M' in out
  assert ' step ' not in out.split('cache: hit')[1]  # no fold-run trained a step
  assert f'nothing trained: all 2 fold-runs read back from {workdir}' in out
