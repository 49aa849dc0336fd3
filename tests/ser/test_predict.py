"""predict: missing files, digital silence, clips too short for one segment, damaged bundles,
fewer classes than outputs, the header that says what the model is; through the library and
through experiments/predict.py."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from mmtl_jax.data import features
from mmtl_jax.ser import predict

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RATE = 16000


@pytest.fixture(scope='module')
def bundle(tmp_path_factory, tiny_config, tiny_bundle):
  """An (untrained) MMTL bundle of the tiny config: 16 frames of 32 ms, 3 conv blocks."""
  return tiny_bundle(tmp_path_factory.mktemp('b') / 'bundle', tiny_config('unused'))


@pytest.fixture(scope='module')
def wavs(tmp_path_factory):
  """{name: path} of 16 kHz clips: speech-like noise (0.3 s and 1 s), silence, near silence
  (peak 5e-5), and 0.05 s of noise."""
  d = tmp_path_factory.mktemp('wavs')
  rng = np.random.default_rng(0)
  clips = {'speech': rng.normal(0, 0.1, RATE), 'short_ok': rng.normal(0, 0.1, int(0.3 * RATE)),
           'zeros': np.zeros(RATE), 'near_silent': rng.uniform(-5e-5, 5e-5, RATE),
           'too_short': rng.normal(0, 0.1, int(0.05 * RATE))}
  out = {}
  for name, wave in clips.items():
    out[name] = str(d / f'{name}.wav')
    sf.write(out[name], wave.astype(np.float32), RATE, subtype='FLOAT')
  return out


def test_min_frames_from_the_config(tiny_config):
  config = tiny_config('unused')
  assert predict.min_frames(config) == 8  # 3 pools need 8 frames; a quarter of 16 is 4
  config.features.n_frames = 300
  assert predict.min_frames(config) == 75  # the paper's 300 frames: 0.75 s


def test_missing_file_silence_and_short_clips(bundle, wavs, tmp_path):
  predictor = predict.Predictor(bundle)
  names = ['speech', 'short_ok', 'zeros', 'near_silent', 'too_short']
  missing = str(tmp_path / 'nope.wav')
  results = predictor.predict_files([missing] + [wavs[n] for n in names])
  assert results[0] == {'path': missing, 'error': 'file not found'}
  r = dict(zip(names, results[1:]))
  for name in ('speech', 'short_ok'):  # 0.3 s = 10 frames >= 8: still labelled
    assert r[name]['emotion'] in predictor.classes and 'warning' not in r[name]
  for name in ('zeros', 'near_silent'):
    assert r[name]['emotion'] is None and 'digital silence' in r[name]['warning']
  assert r['too_short']['emotion'] is None and 'too short' in r['too_short']['warning']
  for name in ('zeros', 'near_silent', 'too_short'):  # no label, so no number to misread
    assert r[name]['posteriors'] is None
  assert '2 frames < 8' in r['too_short']['warning']  # 800 samples, 512 hop: 2 frames


def test_damaged_bundles_raise_one_line_errors(bundle, tmp_path):
  def damaged(name, damage):
    path = str(tmp_path / name)
    shutil.copytree(bundle, path)
    damage(path)
    with pytest.raises(predict.BundleError, match='damaged inference bundle') as err:
      predict.Predictor(path)
    assert '\n' not in str(err.value)
    return str(err.value)

  def garble_config(path):
    with open(os.path.join(path, 'config.json'), 'w') as f:
      f.write('{"model": ')

  def widen_lstm(path):  # the config no longer describes the saved parameters
    with open(os.path.join(path, 'config.json')) as f:
      config = json.load(f)
    config['model']['lstm_hidden'] = 7
    with open(os.path.join(path, 'config.json'), 'w') as f:
      json.dump(config, f)

  assert 'JSONDecodeError' in damaged('garbled', garble_config)
  damaged('no_params', lambda p: shutil.rmtree(os.path.join(p, 'params')))
  damaged('mismatch', widen_lstm)
  with pytest.raises(FileNotFoundError, match='no inference bundle'):
    predict.Predictor(str(tmp_path / 'nowhere'))


def _edited_copy(bundle, path, edit):
  """A copy of `bundle` whose config.json `edit(config)` has changed."""
  shutil.copytree(bundle, path)
  with open(os.path.join(path, 'config.json'), encoding='utf-8') as f:
    config = json.load(f)
  edit(config)
  with open(os.path.join(path, 'config.json'), 'w', encoding='utf-8') as f:
    json.dump(config, f)
  return str(path)


def test_fewer_classes_than_outputs_use_the_first_outputs(bundle, wavs, tmp_path):
  """Two classes on the 4-output head (shared with the aux bins): the posteriors are over the
  head's first 2 outputs, as ser/evaluate.py scores them; fewer outputs than classes is a
  damaged bundle."""
  def two_classes(config):
    config['classes'] = config['data']['classes'] = ['neu', 'ang']

  def one_output(config):
    two_classes(config)
    config['model']['num_outputs'] = 1

  two = predict.Predictor(_edited_copy(bundle, tmp_path / 'two', two_classes))
  r = two.predict_file(wavs['speech'])
  assert set(r['posteriors']) == {'neu', 'ang'} and r['emotion'] in ('neu', 'ang')
  assert sum(r['posteriors'].values()) == pytest.approx(1.0, abs=1e-6)
  with pytest.raises(predict.BundleError, match='1 outputs for 2 classes'):
    predict.Predictor(_edited_copy(bundle, tmp_path / 'one', one_output))


def test_header_says_what_the_model_is(bundle, tmp_path):
  """A fold bundle written before bundle.json carried its info: fold, protocol and dev UA come
  from the fold's result.json beside it; a synthetic-corpus model is warned about."""
  fold_dir = tmp_path / 'work' / 'mmtl' / 'Ses01-testSes01M'
  shutil.copytree(bundle, fold_dir / 'bundle')
  with open(fold_dir / 'result.json', 'w', encoding='utf-8') as f:
    json.dump({'name': 'Ses01-testSes01M', 'test_speaker': 'Ses01M', 'dev_speaker': 'Ses01F',
               'records': {'paper': {'dev_UA': 0.9, 'selected_step': 2},
                           'strict': {'dev_UA': 0.5625, 'selected_step': 4}}}, f)
  header = '\n'.join(predict.Predictor(str(fold_dir)).header())
  assert 'fold: Ses01-testSes01M (test speaker Ses01M, dev speaker Ses01F)' in header
  assert 'dev UA: 56.25% (step 4)' in header and 'protocol: strict' in header
  assert 'classes: neu, ang, hap, sad' in header and 'synthetic audio' in header
  assert predict.SYNTHETIC_WARNING in header
  bare = predict.Predictor(bundle).header()  # nothing beside it: said to be unknown
  assert 'fold: unknown' in bare[1] and 'dev UA: unknown' in bare[1]


def _run_cli(*args):
  return subprocess.run([sys.executable, os.path.join(ROOT, 'experiments', 'predict.py'), *args],
                        capture_output=True, text=True, timeout=300, check=False)


@pytest.mark.slow  # subprocesses: the CLI
def test_cli_json_flags_and_errors(bundle, wavs, tmp_path):
  missing = str(tmp_path / 'missing.wav')
  out = _run_cli(f'--checkpoint={bundle}', '--json', wavs['speech'], wavs['zeros'], missing)
  assert out.returncode == 1, out.stderr  # one file failed
  speech, zeros, gone = json.loads(out.stdout)
  assert speech['emotion'] is not None and 'warning' not in speech
  assert zeros['emotion'] is None and 'digital silence' in zeros['warning']
  assert gone == {'path': missing, 'error': 'file not found'}

  broken = str(tmp_path / 'broken')
  shutil.copytree(bundle, broken)
  shutil.rmtree(os.path.join(broken, 'params'))
  out = _run_cli(f'--checkpoint={broken}', wavs['speech'])
  assert out.returncode == 2 and out.stdout == ''
  assert 'Traceback' not in out.stderr
  errors = [line for line in out.stderr.splitlines() if 'error' in line.lower()]
  assert len(errors) == 1 and errors[0].startswith('error: damaged inference bundle')
