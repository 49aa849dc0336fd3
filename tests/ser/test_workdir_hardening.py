"""A workdir as a hostile user leaves it: damaged JSON names its file and how to recover, a
fold directory emptied mid-run is 'incomplete' (not 'an older mmtl_jax'), temporaries of a
killed write are removed by the next run, a read-only finished run is read back without the
lock, --workdir naming a file and results.json a
directory are refused before any work, a diverging run stops at the loss guard."""

import errno
import json
import os
import types

import numpy as np
import pytest

from mmtl_jax.configs import demo
from mmtl_jax.run import errors
from mmtl_jax.run import files
from mmtl_jax.ser import fingerprint
from mmtl_jax.ser import results
from mmtl_jax.ser import train

GARBLED = '{"model": '


def _fold(tmp_path, **contents):
  fold_dir = tmp_path / 'work' / 'mmtl' / 'fold0'
  fold_dir.mkdir(parents=True)
  for name, text in contents.items():
    (fold_dir / name.replace('_json', '.json')).write_text(text)
  return str(fold_dir)


def test_damaged_fingerprint_json_names_file_and_recovery(tmp_path):
  fold_dir = _fold(tmp_path, fingerprint_json=GARBLED, result_json='{}')
  with pytest.raises(files.DamagedFileError) as err:
    fingerprint.stale_fields(fold_dir, {'a': 1})
  line = errors.expected_line(err.value)
  assert os.path.join(fold_dir, 'fingerprint.json') in line and '\n' not in line
  assert 'on_changed_config=restart' in line


def test_damaged_result_json_names_file_and_recovery(tmp_path):
  fold_dir = _fold(tmp_path, fingerprint_json=json.dumps({'a': 1}), result_json=GARBLED)
  with pytest.raises(files.DamagedFileError) as err:
    fingerprint.stale_fields(fold_dir, {'a': 1})
  assert os.path.join(fold_dir, 'result.json') in str(err.value)
  assert 'on_changed_config=restart' in str(err.value)


def test_damaged_results_json_names_file_and_recovery(tmp_path):
  (tmp_path / 'results.json').write_bytes(b'\xff\xfe garbage')
  with pytest.raises(files.DamagedFileError, match='results.json') as err:
    results.load_results(tmp_path)
  assert str(tmp_path / 'results.json') in str(err.value) and 'again' in str(err.value)


def test_fold_emptied_mid_run_is_incomplete_not_older(tmp_path):
  fold_dir = _fold(tmp_path)  # fingerprint.json gone with the directory, checkpoints remade
  os.makedirs(os.path.join(fold_dir, 'checkpoints'))
  diffs = fingerprint.stale_fields(fold_dir, {'a': 1})
  assert diffs and 'fold incomplete' in diffs[0] and 'older' not in ' '.join(diffs)
  fold_dir2 = _fold(tmp_path / 'old', result_json='{"records": {}}')  # a finished old fold
  assert 'older mmtl_jax' in fingerprint.stale_fields(fold_dir2, {'a': 1})[0]


def test_temporaries_of_killed_writes_are_removed(tmp_path):
  config = demo.get_config()
  config.train.models = ('mmtl',)
  store = types.SimpleNamespace(manifest={'config_hash': '0' * 16})
  folds = [types.SimpleNamespace(index=0, name='Ses01-testSes01M')]
  fold_dir = tmp_path / 'mmtl' / 'Ses01-testSes01M'
  (fold_dir / files.temp_name('bundle') / 'params').mkdir(parents=True)
  (fold_dir / files.temp_name('result.json', keep_extension=True)).write_text('{"rec')
  results_tmp = tmp_path / files.temp_name('results.json', keep_extension=True)
  results_tmp.write_text('{')
  train.check_fold_dirs(config, store, folds, (0,), str(tmp_path))
  assert sorted(os.listdir(fold_dir)) == ['fingerprint.json']  # not stale: nothing computed
  assert not results_tmp.exists()


def test_workdir_naming_a_file_is_refused_before_work(tmp_path):
  path = tmp_path / 'a_file'
  path.write_text('x')
  with pytest.raises(errors.ExpectedError, match='--workdir') as err:
    train.train_and_evaluate(demo.get_config(), str(path))
  assert str(path) in str(err.value)


def test_results_json_a_directory_is_refused_before_training(tmp_path):
  (tmp_path / 'results.json').mkdir()
  with pytest.raises(errors.ExpectedError, match='results.json') as err:
    train.train_and_evaluate(demo.get_config(), str(tmp_path))
  assert 'directory' in str(err.value)
  assert sorted(os.listdir(tmp_path)) == ['results.json']  # no lock, no features, no corpus


@pytest.mark.slow
def test_diverging_run_stops_at_the_loss_guard(tiny_config, corpus_root, tmp_path,
                                                monkeypatch):
  """Parameters that turn non-finite on a step whose loss (taken before the update) is still
  finite: the guard stops before dev evaluation sees them."""
  config = tiny_config(corpus_root, models=('cnn_lstm',), steps=4)
  config.train.eval_every = 1
  real_jit = train.jax.jit

  def poisoned_jit(fn, **kw):
    step = real_jit(fn, **kw)
    if kw.get('donate_argnums') != (0, 1):  # only the train step (jax.jit is global)
      return step

    def wrapped(params, opt_state, batch, rng):
      params, opt_state, metrics = step(params, opt_state, batch, rng)
      return train.jax.tree.map(lambda p: p * np.nan, params), opt_state, metrics
    return wrapped

  monkeypatch.setattr(train.jax, 'jit', poisoned_jit)
  with pytest.raises(train.NonFiniteLossError, match='lower the learning rates'):
    train.train_and_evaluate(config, str(tmp_path / 'diverge'))


def _finished_workdir(path, config):
  recs = [results.fold_record('mmtl', 'paper', 'f0', [0, 1], [0, 1])]
  results.write_results(path, config, results.aggregate_runs(recs, ['a', 'b']))
  return str(path)


def test_read_only_finished_run_is_read_back_without_the_lock(tmp_path, monkeypatch):
  config = demo.get_config()
  workdir = _finished_workdir(tmp_path / 'done', config)

  def read_only(self):
    raise OSError(errno.EROFS, 'Read-only file system', self.path)

  monkeypatch.setattr(train.lock_lib.WorkdirLock, 'acquire', read_only)
  config.train.log_every = 7  # fields that do not change results may differ
  content = train.train_and_evaluate(config, workdir)
  assert content['runs'][0]['model'] == 'mmtl'
  config.train.steps = 1  # another run's config: the refusal names the read-only workdir
  with pytest.raises(OSError) as err:
    train.train_and_evaluate(config, workdir)
  assert errors.expected_line(err.value).startswith('read-only file system, ')
  assert '.mmtl_jax.lock' not in os.listdir(workdir)
