"""predict against hostile inputs: moved-aside (stale) folds are never a bundle candidate and
the choice among several is stated; overflowing audio and non-finite posteriors give no
label; long files run in batches of segments."""

import json
import os
import shutil

import numpy as np
import pytest
import soundfile as sf

from mmtl_jax.ser import predict

RATE = 16000


@pytest.fixture(scope='module')
def bundle(tmp_path_factory, tiny_config, tiny_bundle):
  """An (untrained) MMTL bundle of the tiny config."""
  return tiny_bundle(tmp_path_factory.mktemp('b') / 'bundle', tiny_config('unused'))


def _wav(path, wave):
  sf.write(str(path), np.asarray(wave, np.float32), RATE, subtype='FLOAT')
  return str(path)


def test_stale_folds_are_never_candidates(bundle, tmp_path):
  work = tmp_path / 'work'
  for fold in ('Ses01-a.stale-1', 'Ses01-a', 'Ses02-b', 'Ses02-b.stale-2'):
    shutil.copytree(bundle, work / 'mmtl' / fold / 'bundle')
  assert predict.find_bundle(str(work)) == str(work / 'mmtl' / 'Ses01-a' / 'bundle')
  choice = predict.Predictor(str(work)).choice
  assert 'first of 2 mmtl fold bundles' in choice
  assert 'stale' in choice  # says that moved-aside folds were passed over
  only_stale = tmp_path / 'only_stale'
  shutil.copytree(bundle, only_stale / 'mmtl' / 'Ses01-a.stale-1' / 'bundle')
  with pytest.raises(FileNotFoundError, match='stale'):
    predict.find_bundle(str(only_stale))
  with pytest.raises(FileNotFoundError):  # a stale fold named directly is refused as well
    predict.find_bundle(str(only_stale / 'mmtl' / 'Ses01-a.stale-1'))


def test_overflowing_audio_gets_no_label(bundle, tmp_path):
  rng = np.random.default_rng(0)
  path = _wav(tmp_path / 'huge.wav', rng.normal(0, 1, RATE) * 1e20)
  result = predict.Predictor(bundle).predict_file(path)
  assert result['emotion'] is None and result['posteriors'] is None
  assert 'non-finite' in result['warning']
  json.dumps(result, allow_nan=False)  # strict JSON: no NaN written


def test_non_finite_posteriors_are_not_a_label(bundle, tmp_path):
  predictor = predict.Predictor(bundle)
  path = _wav(tmp_path / 'speech.wav', np.random.default_rng(0).normal(0, 0.1, RATE))
  predictor._posteriors = lambda p, x, lengths: np.full((x.shape[0], 4), np.nan, np.float32)
  result = predictor.predict_file(path)
  assert result['emotion'] is None and result['posteriors'] is None
  assert 'non-finite posteriors' in result['warning']


def test_long_files_run_in_batches_of_segments(bundle, tmp_path):
  rng = np.random.default_rng(1)
  path = _wav(tmp_path / 'long.wav', rng.normal(0, 0.1, 12 * RATE))
  whole = predict.Predictor(bundle).predict_file(path)
  predictor = predict.Predictor(bundle, batch_segments=3)
  sizes, posteriors = [], predictor._posteriors

  def spy(p, x, lengths):
    sizes.append(x.shape[0])
    return posteriors(p, x, lengths)

  predictor._posteriors = spy
  batched = predictor.predict_file(path)
  assert whole['segments'] == batched['segments'] > 3
  assert max(sizes) == 3 and len(sizes) == -(-batched['segments'] // 3)
  for c in predictor.classes:
    assert batched['posteriors'][c] == pytest.approx(whole['posteriors'][c], abs=1e-5)
  with pytest.raises(ValueError, match='batch_segments'):
    predict.Predictor(bundle, batch_segments=0)
