"""A workdir never returns results computed under another config (mmtl_jax.ser.fingerprint)."""

import json
import os
import shutil

import pytest

from mmtl_jax.run import checkpoint as ckpt_lib
from mmtl_jax.ser import fingerprint
from mmtl_jax.ser import fold as fold_lib
from mmtl_jax.ser import train


def test_differences_and_fields_that_cannot_change_a_result(tiny_config, corpus_root):
  config = tiny_config(corpus_root)
  base = fingerprint.fingerprint(config, 'mmtl', 'abc')
  assert base['meta.mode'] == 'first_order' and base['feature_store'] == 'abc'
  assert 'compilation_cache_dir' not in base and 'folds.which' not in base
  config.train.log_every, config.folds.which = 3, (1,)  # where/what is run, not how
  config.train.report_every_s = 0.0  # how often progress is shown
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


@pytest.mark.slow  # end-to-end: three demo-loop runs
def test_changed_config_stops_before_training_and_restart_moves_aside(tiny_config, corpus_root,
                                                                      tmp_path):
  workdir = str(tmp_path / 'work')
  config = tiny_config(corpus_root, models=('mmtl',), steps=2)
  first = train.train_and_evaluate(config, workdir)
  fold_dir = os.path.join(workdir, 'mmtl', first['runs'][0]['folds'][0]['fold'])
  again = train.train_and_evaluate(config, workdir)  # same config: read back
  assert again['runs'] == first['runs'] and again['config'] == first['config']
  assert again['provenance']['started'] > first['provenance']['started']  # this run's own

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


def test_result_json_fingerprint_is_compared_too(tmp_path):
  fold = tmp_path / 'fold'
  fingerprint.write(str(fold), {'a': 1})
  (fold / 'result.json').write_text(json.dumps({'fingerprint': {'a': 0}}))
  # fingerprint.json agrees, the result inside was computed under another config.
  assert fingerprint.stale_fields(str(fold), {'a': 1}) == ['result.json: a: 0 -> 1']
  (fold / 'result.json').write_text(json.dumps({'records': {}}))  # older result: no key
  assert fingerprint.stale_fields(str(fold), {'a': 1}) is None


def test_check_checkpoint():
  fingerprint.check_checkpoint({'step': 4}, {'a': 1}, '/c')  # older checkpoint: no key
  fingerprint.check_checkpoint({'step': 4, 'fingerprint': {'a': 1}}, {'a': 1}, '/c')
  with pytest.raises(fingerprint.StaleRunError,
                     match=r'checkpoint /c \(step 4\) was written under another config'
                           r'(.|\n)*  a: 1 -> 2'):
    fingerprint.check_checkpoint({'step': 4, 'fingerprint': {'a': 1}}, {'a': 2}, '/c')


@pytest.mark.slow  # end-to-end: a demo-loop run
def test_result_json_and_checkpoints_store_the_fingerprint(tiny_config, corpus_root, tmp_path):
  workdir = str(tmp_path / 'work')
  config = tiny_config(corpus_root, models=('cnn_lstm',), steps=2)
  out = train.train_and_evaluate(config, workdir)
  fold_dir = os.path.join(workdir, 'cnn_lstm', out['runs'][0]['folds'][0]['fold'])
  with open(os.path.join(fold_dir, fingerprint.FILENAME), encoding='utf-8') as f:
    expected = json.load(f)
  assert expected['model.lstm_hidden'] == 4 and expected['system'] == 'cnn_lstm'
  assert 'feature_store' in expected and 'mmtl_jax_version' in expected
  with open(os.path.join(fold_dir, 'result.json'), encoding='utf-8') as f:
    assert json.load(f)['fingerprint'] == expected
  with ckpt_lib.Checkpointer(os.path.join(fold_dir, 'checkpoints')) as ckpt:
    _, extra = ckpt.restore()
    assert extra['fingerprint'] == expected and extra['step'] == 2
    # A checkpoint of another config is refused before any array is read (the state below
    # has no arrays at all).
    empty = fold_lib.TrainState(params={}, opt_state={}, best={}, best_dev={}, step=0,
                             sampler_position=0, seed=0)
    with pytest.raises(train.StaleRunError, match='model.lstm_hidden: 4 -> 16'):
      fold_lib.restore_state(ckpt, empty, lambda t: t, fold_dir,
                          dict(expected, **{'model.lstm_hidden': 16}))
  assert out['provenance']['command'] and out['provenance']['backend']
