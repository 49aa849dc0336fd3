"""The pretrained EmoDB bundle shipped with the package, npz bundle storage (float16 too), the
figures a LOSO study gives the model card, and the fit on all speakers that makes a bundle."""

import glob
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
import soundfile as sf

from mmtl_jax import pretrained as pretrained_lib
from mmtl_jax.run import checkpoint as ckpt_lib
from mmtl_jax.ser import predict
from mmtl_jax.ser import pretrained

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EMODB_WAV = '/work/shared/data/emodb/wav'
RATE = 16000


@pytest.fixture(scope='module')
def speech(tmp_path_factory):
  """Up to 4 EmoDB clips (one per class: neutral, anger, happiness, sadness of speaker 03)
  when the corpus is on this machine, else 2 s of speech-like noise."""
  found = [p for c in 'NWFT' for p in sorted(glob.glob(os.path.join(EMODB_WAV, f'03*{c}*.wav')))[:1]]
  if found:
    return found
  path = str(tmp_path_factory.mktemp('wav') / 'noise.wav')
  wave = np.random.default_rng(0).normal(0, 0.1, 2 * RATE) * np.hanning(2 * RATE)
  sf.write(path, wave.astype(np.float32), RATE, subtype='FLOAT')
  return [path]


@pytest.fixture(scope='module')
def shipped():
  return predict.Predictor(pretrained='emodb')


def test_shipped_emodb_model_says_what_it_is_and_predicts(shipped, speech):
  header = '\n'.join(shipped.header())
  assert 'the pretrained \'emodb\' model shipped with mmtl_jax' in header
  assert 'EmoDB' in header and 'German' in shipped.description['language']
  assert 'classes: neutral, anger, happiness, sadness' in header
  assert 'fold: none: trained on all 10 speakers' in header
  assert 'protocol: strict' in header and 'dev UA: none (no dev speaker)' in header
  assert 'leave-one-speaker-out study of this recipe: test UA' in header
  assert predict.SYNTHETIC_WARNING not in header  # real speech
  for r in shipped.predict_files(speech):
    assert r['emotion'] in shipped.classes and 'warning' not in r, r
    assert sum(r['posteriors'].values()) == pytest.approx(1.0, abs=1e-5)
  card = open(os.path.join(shipped.bundle, pretrained.CARD), encoding='utf-8').read()
  info = ckpt_lib.read_bundle_info(shipped.bundle)['info']
  assert f"{100 * info['study']['mean_UA']:.1f}%" in card  # the card quotes the study
  assert 'make_pretrained.py' in ' '.join(info['command'])  # and records how it was made


def test_float16_storage_keeps_posteriors_within_1e_3(shipped, speech, tmp_path):
  """The shipped parameters stored as float16 give posteriors within 1e-3 of float32's."""
  half = ckpt_lib.save_inference_bundle(str(tmp_path / 'half'), shipped.params, shipped.config,
                                        storage='npz', storage_dtype='float16')
  assert os.path.getsize(os.path.join(half, 'params.npz')) < 0.6 * os.path.getsize(
      os.path.join(shipped.bundle, 'params.npz'))
  low = predict.Predictor(half)
  assert all(x.dtype == np.float32 for x in jax.tree.leaves(low.params))  # cast back
  for a, b in zip(shipped.predict_files(speech), low.predict_files(speech)):
    diff = max(abs(a['posteriors'][c] - b['posteriors'][c]) for c in shipped.classes)
    assert diff < 1e-3, (a['path'], diff)


def test_npz_bundles_round_trip_and_refuse_what_they_cannot_hold(tmp_path):
  params = {'theta': {'conv': {'kernel': np.arange(6, dtype=np.float32).reshape(2, 3) / 7,
                               'bias': np.ones(3, np.float32)}}, 'phi': {'n': np.arange(2)}}
  path = ckpt_lib.save_inference_bundle(str(tmp_path / 'b'), params, {'x': [1, 2]},
                                        info={'fold': 'all'}, storage='npz')
  loaded, config = ckpt_lib.load_inference_bundle(path)
  assert jax.tree.all(jax.tree.map(np.array_equal, loaded, params))
  assert config.x == (1, 2) and loaded['phi']['n'].dtype == params['phi']['n'].dtype
  marker = ckpt_lib.read_bundle_info(path)
  assert marker['version'] == 2 and marker['info'] == {'fold': 'all'}
  assert not os.path.exists(os.path.join(path, 'params'))  # no orbax directory
  with pytest.raises(ValueError, match='plain string keys'):
    ckpt_lib.save_inference_bundle(str(tmp_path / 'c'), {'a/b': np.ones(1)}, {}, storage='npz')
  with pytest.raises(ValueError, match='storage'):
    ckpt_lib.save_inference_bundle(str(tmp_path / 'd'), params, {}, storage_dtype='float16')


def test_unknown_pretrained_name_lists_the_known_ones():
  with pytest.raises(pretrained_lib.UnknownPretrainedError, match='known: emodb'):
    predict.Predictor(pretrained='iemocap')
  with pytest.raises(ValueError, match='one of checkpoint and pretrained'):
    predict.Predictor('runs/x', pretrained='emodb')


def _results(ua_by_fold_seed, steps):
  folds = [{'fold': f'test{s}', 'test_speaker': s, 'seed': seed, 'UA': ua, 'WA': ua,
            'dev_UA': 0.5, 'selected_step': step}
           for ((s, seed), ua), step in zip(ua_by_fold_seed.items(), steps)]
  run = {'model': 'mmtl', 'protocol': 'strict', 'seeds': [0, 1], 'folds': folds,
         'pooled': {'UA': 0.6, 'WA': 0.61}, 'mean': {'dev_UA': 0.5},
         'per_class_recall': {'a': 0.5}}
  return {'runs': [{'model': 'mmtl', 'protocol': 'paper'}, run]}


def test_study_summary_averages_seeds_per_speaker_and_picks_the_median_step():
  uas = {('03', 0): 0.5, ('03', 1): 0.7, ('08', 0): 0.8, ('08', 1): 0.8, ('09', 0): 0.2,
         ('09', 1): 0.4}
  s = pretrained.study_summary(_results(uas, [25, 150, 50, 75, 100, 125]))
  assert s['test_speakers'] == {'03': pytest.approx(0.6), '08': pytest.approx(0.8),
                                '09': pytest.approx(0.3)}
  assert s['mean_UA'] == pytest.approx(17 / 30) and s['folds'] == 3 and s['records'] == 6
  assert s['std_UA'] == pytest.approx(np.std([0.6, 0.8, 0.3], ddof=1))
  assert 0.3 - 1e-9 <= s['ci95_UA'][0] < s['mean_UA'] < s['ci95_UA'][1] <= 0.8 + 1e-9
  assert s['steps'] == 75  # the lower middle of 25 50 75 100 125 150: a step some fold chose
  assert pretrained.chosen_steps([100, 25, 50]) == 50
  with pytest.raises(pretrained.StudyError, match='selected_step'):
    pretrained.study_summary(_results(uas, [25, None, 50, 75, 100, 125]))
  with pytest.raises(pretrained.StudyError, match='no mmtl/strict run'):
    pretrained.study_summary({'runs': []})


@pytest.mark.slow  # compiles the MMTL step and builds a feature store
def test_fit_on_all_speakers_writes_a_bundle_that_says_so(tiny_config, corpus_root, tmp_path):
  """Two steps of MMTL with every speaker a task; the bundle's card and header carry the
  study's figures, and a synthetic-corpus model is warned about."""
  config = pretrained.study_config(tiny_config(corpus_root, models=('mmtl',)), [0])
  config.data.iemocap.sessions = (1,)  # 2 speakers: a small store and 2 tasks to compile
  params, store = pretrained.fit_all_speakers(config, str(tmp_path / 'fit'), str(tmp_path), 2)
  with open(tmp_path / 'fit' / 'logs' / 'metrics.jsonl', encoding='utf-8') as f:
    assert max(json.loads(line)['step'] for line in f) == 2
  summary = pretrained.study_summary(_results({('Ses01M', 0): 0.5, ('Ses01F', 0): 0.7},
                                              [2, 2]))
  about = dict(pretrained.EMODB, synthetic=True, corpus='the synthetic corpus')
  info = pretrained.bundle_info(summary, about, store, {'command': ['make.py', '--x=1']})
  out = pretrained.write_pretrained(str(tmp_path / 'bundle'), params, config, store, info)
  predictor = predict.Predictor(out)
  header = '\n'.join(predictor.header())
  assert 'fold: none: trained on all 2 speakers (Ses01F, Ses01M)' in header
  assert predict.SYNTHETIC_WARNING in header and 'test UA 60.0%' in header
  card = open(os.path.join(out, pretrained.CARD), encoding='utf-8').read()
  assert 'make.py --x=1' in card and '| 60.0% |' in card


@pytest.mark.slow  # a subprocess: the CLI
def test_cli_pretrained_emodb_json(speech):
  out = subprocess.run([sys.executable, os.path.join(ROOT, 'experiments', 'predict.py'),
                        '--pretrained=emodb', '--json', speech[0]], capture_output=True,
                       text=True, timeout=300, check=False, cwd='/')
  assert out.returncode == 0, out.stderr
  assert 'EmoDB' in out.stderr and 'protocol: strict' in out.stderr
  (r,) = json.loads(out.stdout)
  assert r['emotion'] in ('neutral', 'anger', 'happiness', 'sadness')
