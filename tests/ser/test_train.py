"""End-to-end experiment loop on a tiny config: results schema, kill-and-resume, NaN guard,
prediction on wav files."""

import json
import os
import shutil

import numpy as np
import pytest
import soundfile as sf

from mmtl_jax.run import checkpoint as ckpt_lib
from mmtl_jax.ser import predict
from mmtl_jax.ser import train
from mmtl_jax.data import sampler as sampler_lib

from helpers import assert_trees_close


# Every test here runs the demo loop (end-to-end), hence slow.
pytestmark = pytest.mark.slow

MODELS = ('mmtl', 'cnn_lstm', 'cnn_lstm_mtl')
FOLD = 'Ses01-testSes01M'


@pytest.fixture(scope='module')
def trained(tiny_config, corpus_root, tmp_path_factory):
  """(workdir, output) of one run of the tiny config: 3 models x 2 protocols, 4 steps."""
  workdir = str(tmp_path_factory.mktemp('trained') / 'run')
  return workdir, train.train_and_evaluate(tiny_config(corpus_root), workdir)


@pytest.fixture(scope='module')
def corpus_wav(corpus_root):
  return os.path.join(corpus_root, 'Session1', 'sentences', 'wav', 'Ses01F_impro01',
                      'Ses01F_impro01_F001.wav')


@pytest.fixture(scope='module')
def predicted(trained, corpus_wav, tmp_path_factory):
  """The workdir's Predictor and its results on [a corpus wav, a corrupt file, a 44.1 kHz
  stereo file], in that order."""
  d = tmp_path_factory.mktemp('wavs')
  stereo = str(d / 'stereo44k.wav')
  t = np.arange(int(1.2 * 44100)) / 44100
  sf.write(stereo, np.stack([np.sin(2 * np.pi * 220 * t)] * 2, axis=1) * 0.1, 44100)
  corrupt = str(d / 'corrupt.wav')
  with open(corrupt, 'wb') as f:
    f.write(b'RIFF\x00\x00\x00\x00WAVEjunk')
  predictor = predict.Predictor(trained[0])
  return predictor, predictor.predict_files([corpus_wav, corrupt, stereo])


def test_results_cover_every_model_protocol_and_fold(trained):
  runs = {(r['model'], r['protocol']): r for r in trained[1]['runs']}
  assert set(runs) == {(m, p) for m in MODELS for p in ('paper', 'strict')}
  for run in runs.values():
    assert 0.0 <= run['pooled']['UA'] <= 1.0 and 0.0 <= run['pooled']['WA'] <= 1.0
    assert [f['fold'] for f in run['folds']] == [FOLD]
    assert np.asarray(run['confusion']['counts']).sum() == run['pooled']['n']


def test_cnn_lstm_uses_no_test_label_under_either_protocol(trained):
  runs = {(r['model'], r['protocol']): r for r in trained[1]['runs']}
  assert runs[('cnn_lstm', 'paper')]['pooled'] == runs[('cnn_lstm', 'strict')]['pooled']


def test_results_table_and_confusion_plots_are_written(trained):
  workdir = trained[0]
  assert os.path.exists(os.path.join(workdir, 'results.md'))
  assert os.path.exists(os.path.join(workdir, 'confusion', 'mmtl__strict.png'))


def test_metrics_log_reaches_the_last_step(trained):
  log = os.path.join(trained[0], 'mmtl', FOLD, 'logs', 'metrics.jsonl')
  with open(log, encoding='utf-8') as f:
    steps = [json.loads(line)['step'] for line in f]
  assert max(steps) == 4


def test_predict_a_corpus_wav_and_a_44k_stereo_file(predicted, corpus_wav):
  _, results = predicted
  for r in (results[0], results[2]):
    assert r['emotion'] in ('neu', 'ang', 'hap', 'sad')
    assert abs(sum(r['posteriors'].values()) - 1.0) < 1e-5
  wave, rate = sf.read(corpus_wav, dtype='float32')
  assert rate == 16000 and results[0]['segments'] == int(np.ceil(len(wave) / rate / 1.0))


def test_a_fold_bundle_says_its_fold_protocol_and_dev_ua(predicted, trained):
  """The bundle's own bundle.json says what predict's header shows (it holds without the
  fold's result.json beside it): fold, speakers, the 'strict' protocol, its dev UA."""
  predictor, _ = predicted
  info = ckpt_lib.read_bundle_info(predictor.bundle)['info']
  with open(os.path.join(trained[0], 'mmtl', FOLD, 'result.json'), encoding='utf-8') as f:
    strict = json.load(f)['records']['strict']
  assert info['fold'] == FOLD and info['protocol'] == 'strict'
  assert (info['dev_UA'], info['selected_step']) == (strict['dev_UA'], strict['selected_step'])
  line = predictor.header()[1]
  assert f"fold: {FOLD} (test speaker {info['test_speaker']}" in line
  assert f"dev UA: {100 * strict['dev_UA']:.2f}% (step {strict['selected_step']})" in line
  assert predict.SYNTHETIC_WARNING in predictor.header()[-1]  # the demo corpus


def test_predict_reports_a_corrupt_wav_and_goes_on(predicted):
  _, results = predicted
  assert 'error' in results[1] and 'corrupt.wav' in results[1]['path']
  assert 'error' not in results[2] and 'emotion' in results[2]  # the file after it


def test_legacy_bundle_without_model_name_predicts_the_same(predicted, corpus_wav, tmp_path):
  """A bundle written before models were chosen by name (no model.name) still predicts the
  same (on a copy: the workdir's bundle stays as it is for the other tests)."""
  predictor, results = predicted
  bundle = str(tmp_path / 'legacy_bundle')
  shutil.copytree(predictor.bundle, bundle)
  with open(os.path.join(bundle, 'config.json'), encoding='utf-8') as f:
    old_config = json.load(f)
  del old_config['model']['name']
  with open(os.path.join(bundle, 'config.json'), 'w', encoding='utf-8') as f:
    json.dump(old_config, f)
  assert predict.Predictor(bundle).predict_file(corpus_wav)['posteriors'] == (
      results[0]['posteriors'])


def test_killed_run_resumes_to_the_same_result(tiny_config, corpus_root, tmp_path, monkeypatch):
  config = tiny_config(corpus_root, models=('mmtl',), steps=6)
  uninterrupted = train.train_and_evaluate(config, str(tmp_path / 'a'))

  original = sampler_lib.TaskSampler.batch

  def dies_at_step_5(self, step):
    if step == 5:
      raise KeyboardInterrupt('simulated kill')
    return original(self, step)

  monkeypatch.setattr(sampler_lib.TaskSampler, 'batch', dies_at_step_5)
  with pytest.raises(KeyboardInterrupt):
    train.train_and_evaluate(config, str(tmp_path / 'b'))
  ckpt_dir = tmp_path / 'b' / 'mmtl' / 'Ses01-testSes01M' / 'checkpoints'
  assert sorted(int(p.name) for p in ckpt_dir.iterdir() if p.name.isdigit())[-1] == 4
  monkeypatch.setattr(sampler_lib.TaskSampler, 'batch', original)
  resumed = train.train_and_evaluate(config, str(tmp_path / 'b'))

  for a, b in zip(uninterrupted['runs'], resumed['runs']):
    assert a['pooled'] == b['pooled'] and a['folds'] == b['folds']
  params_a = predict.Predictor(str(tmp_path / 'a')).params
  params_b = predict.Predictor(str(tmp_path / 'b')).params
  assert_trees_close(params_b, params_a, rtol=0, atol=0)


def test_nan_loss_stops_with_clear_error_and_keeps_checkpoint(tiny_config, corpus_root, tmp_path,
                                                              monkeypatch):
  config = tiny_config(corpus_root, models=('cnn_lstm',), steps=6)
  original = sampler_lib.TaskSampler.batch

  def nan_at_step_3(self, step):
    batch = original(self, step)
    if step == 3:
      batch['x'][:] = np.nan
    return batch

  monkeypatch.setattr(sampler_lib.TaskSampler, 'batch', nan_at_step_3)
  with pytest.raises(train.NonFiniteLossError, match='step 3') as err:
    train.train_and_evaluate(config, str(tmp_path / 'nan'))
  assert 'last good checkpoint (step 2)' in str(err.value)
  fold_dir = tmp_path / 'nan' / 'cnn_lstm' / 'Ses01-testSes01M'
  assert not (fold_dir / 'result.json').exists()
  assert (fold_dir / 'checkpoints' / '2').exists()


def test_several_seeds_give_mean_and_std_over_folds_and_seeds(tiny_config, corpus_root, tmp_path):
  config = tiny_config(corpus_root, models=('cnn_lstm',), steps=2)
  config.train.seeds = (0, 1)
  out = train.train_and_evaluate(config, str(tmp_path / 'seeds'))
  run = out['runs'][0]
  assert sorted((f['fold'], f['seed']) for f in run['folds']) == [
      ('Ses01-testSes01M', 0), ('Ses01-testSes01M', 1)]
  assert run['std']['UA'] is not None
  assert (tmp_path / 'seeds' / 'cnn_lstm' / 'seed1' / 'Ses01-testSes01M' / 'bundle').exists()


def test_resolved_config_is_saved_at_the_workdir_root(trained):
  # Issue 21 item 4: <workdir>/config.json, the same config as results.json's (and what
  # --print_config prints, run.errors.config_json).
  with open(os.path.join(trained[0], 'config.json'), encoding='utf-8') as f:
    saved = json.load(f)
  assert saved == trained[1]['config']
  assert saved['train']['steps'] == 4 and saved['folds']['which'] == [0]


def test_compare_gradients_docstring_example_runs_on_a_training_checkpoint(trained, tmp_path):
  # Issue 21 item 8: the documented --checkpoints gave 'No structure could be identified' /
  # KeyError 'theta' on what training writes, and relative paths were refused. The example of
  # experiments/compare_gradients.py's docstring, pointed at this workdir (relative, from its
  # parent directory): a step directory and a fold directory (its latest step).
  import ast  # pylint: disable=g-import-not-at-top
  import shlex  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  script = os.path.join(repo, 'experiments', 'compare_gradients.py')
  with open(script, encoding='utf-8') as f:
    doc = ast.get_docstring(ast.parse(f.read()))
  example = next(l for l in doc.splitlines() if '--checkpoints=runs/demo' in l)
  argv = shlex.split(example.replace('runs/demo', os.path.basename(trained[0]))
                     .replace('/checkpoints/150', '/checkpoints/4'))
  assert argv[:2] == ['python', 'experiments/compare_gradients.py']
  out_json = str(tmp_path / 'grads.json')
  small = ['--config.compare.tasks=1', '--config.compare.segments=2']  # test size
  out = subprocess.run([sys.executable, script, *argv[2:], *small, f'--json={out_json}'],
                       cwd=os.path.dirname(trained[0]), capture_output=True, text=True,
                       timeout=600, env=dict(os.environ, PYTHONPATH=os.path.join(repo, 'src')))
  assert out.returncode == 0, out.stderr[-2000:]
  with open(out_json, encoding='utf-8') as f:
    result = json.load(f)
  fold = os.path.join(trained[0], 'mmtl', FOLD)
  assert [c['path'] for c in result['checkpoints']] == [
      os.path.join(fold, 'checkpoints', '4')] * 2  # the fold directory: its latest step, 4
  for entry in result['checkpoints']:
    assert entry['finite_difference']['relative_error'] < 1e-4
  assert result['settings']['batch'] == [1, 2, 16, 32]  # the run's 16 frames, not 48


def test_compare_gradients_reads_what_training_writes(trained, monkeypatch):
  from mmtl_jax.run import files  # pylint: disable=g-import-not-at-top
  from mmtl_jax.tools import compare_gradients as tool  # pylint: disable=g-import-not-at-top
  from mmtl_jax.configs import compare_gradients as tool_config  # pylint: disable=g-import-not-at-top
  fold = os.path.join(trained[0], 'mmtl', FOLD)
  step4 = os.path.join(fold, 'checkpoints', '4')
  monkeypatch.chdir(trained[0])
  assert tool.locate(os.path.join('mmtl', FOLD)) == step4  # relative; a fold: latest step
  assert tool.locate(os.path.join(fold, 'checkpoints')) == step4
  config, params, located = tool.restore_all(tool_config.get_config(), [step4])
  assert located == [step4] and set(params[0]) == {'theta', 'phi'}
  assert tuple(config.model.conv_features) == (2, 3, 4) and config.model.dtype == 'float64'
  assert config.compare.num_aux == 3 and config.compare.frames == 16
  with pytest.raises(files.DamagedFileError, match="without MMTL's theta and phi"):
    tool.restore(os.path.join(trained[0], 'cnn_lstm', FOLD))  # a baseline has no phi
  with pytest.raises(files.MissingFileError, match='no checkpoint directory'):
    tool.locate('no/such/run')
