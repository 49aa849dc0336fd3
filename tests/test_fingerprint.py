"""A workdir never returns results computed under another config (mmtl_jax.ser.fingerprint)."""

import json
import os
import shutil

import pytest

from mmtl_jax.ser import fingerprint
from mmtl_jax.ser import train


def test_differences_and_fields_that_cannot_change_a_result(tiny_config, corpus_root):
  config = tiny_config(corpus_root)
  base = fingerprint.fingerprint(config, 'mmtl', 'abc')
  assert base['meta.mode'] == 'first_order' and base['feature_store'] == 'abc'
  assert 'compilation_cache_dir' not in base and 'folds.which' not in base
  config.train.log_every, config.folds.which = 3, (1,)  # where/what is run, not how
  assert fingerprint.fingerprint(config, 'mmtl', 'abc') == base
  config.meta.gamma = 0.5
  assert fingerprint.differences(base, fingerprint.fingerprint(config, 'mmtl', 'xyz')) == [
      'feature_store: "abc" -> "xyz"', 'meta.gamma: 0.003 -> 0.5']


def test_stale_fields_of_new_legacy_and_changed_dirs(tmp_path):
  fold = tmp_path / 'fold'
  assert fingerprint.stale_fields(str(fold), {'a': 1}) is None  # not there yet
  fingerprint.write(str(fold), {'a': 1})
  assert fingerprint.stale_fields(str(fold), {'a': 2}) is None  # nothing computed in it yet
  (fold / 'result.json').write_text('{}')
  assert fingerprint.stale_fields(str(fold), {'a': 1}) is None
  assert fingerprint.stale_fields(str(fold), {'a': 2}) == ['a: 1 -> 2']
  os.remove(fold / fingerprint.FILENAME)
  assert 'missing' in fingerprint.stale_fields(str(fold), {'a': 1})[0]


def test_changed_config_stops_before_training_and_restart_moves_aside(tiny_config, corpus_root,
                                                                      tmp_path):
  workdir = str(tmp_path / 'work')
  config = tiny_config(corpus_root, models=('mmtl',), steps=2)
  first = train.train_and_evaluate(config, workdir)
  fold_dir = os.path.join(workdir, 'mmtl', first['runs'][0]['folds'][0]['fold'])
  assert train.train_and_evaluate(config, workdir) == first  # same config: read back

  changed = tiny_config(corpus_root, models=('mmtl',), steps=2)
  changed.meta.mode = 'exact'
  changed.seed = 1
  with pytest.raises(train.StaleRunError) as e:
    train.train_and_evaluate(changed, workdir)
  assert 'meta.mode: "first_order" -> "exact"' in str(e.value)
  assert 'seed: 0 -> 1' in str(e.value) and 'on_changed_config=restart' in str(e.value)
  assert os.path.exists(os.path.join(fold_dir, 'result.json'))  # nothing lost

  # An unfinished fold (checkpoints, no result) is held to the same rule.
  os.remove(os.path.join(fold_dir, 'result.json'))
  changed.meta.mode, changed.seed = 'first_order', 0
  changed.train.steps = 3
  with pytest.raises(train.StaleRunError, match='train.steps: 2 -> 3'):
    train.train_and_evaluate(changed, workdir)

  changed.train.on_changed_config = 'restart'
  out = train.train_and_evaluate(changed, workdir)
  assert os.path.isdir(fold_dir + '.stale-1')  # the old fold, kept
  assert os.path.exists(os.path.join(fold_dir, 'result.json'))
  with open(os.path.join(fold_dir, fingerprint.FILENAME), encoding='utf-8') as f:
    assert json.load(f)['train.steps'] == 3
  assert out['runs'][0]['folds'][0]['selected_step'] <= 3
  shutil.rmtree(fold_dir + '.stale-1')
