"""Tests of mmtl_jax.ser.results: aggregation, results.json schema, markdown, gather."""

import json
import os
import subprocess
import sys

import ml_collections
import numpy as np
import pytest

from mmtl_jax.run import files
from mmtl_jax.ser import results

CLASSES = ('neu', 'ang', 'hap', 'sad')
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _config(aux=('valence', 'activation', 'dominance'), mode='reptile'):
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.data = ml_collections.ConfigDict({'aux_tasks': aux, 'classes': CLASSES})
  c.meta = ml_collections.ConfigDict({'mode': mode, 'alpha': 0.01})
  return c


def _records():
  # Fold 1: 4 utterances, 3 right. Fold 2: 6 utterances, 3 right.
  f1 = results.fold_record('mmtl', 'paper', 1, [0, 1, 2, 3], [0, 1, 2, 0], dev_ua=0.5,
                           dev_wa=0.6, utt_ids=['a', 'b', 'c', 'd'], step=200)
  f2 = results.fold_record('mmtl', 'paper', 2, [0, 0, 0, 0, 3, 3], [0, 0, 0, 1, 1, 1],
                           dev_ua=0.7, dev_wa=0.8, utt_ids=['e', 'f', 'g', 'h', 'i', 'j'],
                           step=400)
  b1 = results.fold_record('cnn_lstm', 'strict', 1, [0, 1], [0, 0])
  return [f1, f2, b1]


def test_aggregate_runs_values():
  runs = results.aggregate_runs(_records(), CLASSES)
  assert [(r['model'], r['protocol']) for r in runs] == [('mmtl', 'paper'),
                                                         ('cnn_lstm', 'strict')]
  run = runs[0]
  # Fold 1: recalls neu 1, ang 1, hap 1, sad 0 -> UA .75, WA .75.
  # Fold 2: recalls neu 3/4, sad 0 -> UA .375, WA .5.
  assert [f['UA'] for f in run['folds']] == pytest.approx([0.75, 0.375])
  assert [f['WA'] for f in run['folds']] == pytest.approx([0.75, 0.5])
  assert run['mean']['UA'] == pytest.approx(0.5625)
  assert run['std']['UA'] == pytest.approx(np.std([0.75, 0.375], ddof=1))
  assert run['mean']['dev_UA'] == pytest.approx(0.6)
  # Pooled over the 10 utterances: neu 4/5, ang 1/1, hap 1/1, sad 0/3 -> UA .7, WA .6.
  assert run['pooled']['UA'] == pytest.approx((0.8 + 1 + 1 + 0) / 4)
  assert run['pooled']['WA'] == pytest.approx(0.6)
  assert run['pooled']['n'] == 10
  assert run['confusion']['counts'] == [[4, 1, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0],
                                        [1, 2, 0, 0]]
  assert run['confusion']['normalised'][3] == pytest.approx([1 / 3, 2 / 3, 0, 0])
  assert run['folds'][1]['step'] == 400
  assert run['per_class_recall']['sad'] == 0.0
  # No dev metrics on the baseline -> None, not a made-up number.
  assert runs[1]['mean']['dev_UA'] is None
  assert runs[1]['std']['UA'] is None  # one fold: no spread, not 0


def test_aggregate_runs_several_seeds():
  recs = [results.fold_record('m', 'p', f, [0, 1], [0, s % 2], seed=s)
          for s in (0, 1) for f in (1, 2)]
  (run,) = results.aggregate_runs(recs, ['x', 'y'])
  assert run['seeds'] == [0, 1]
  assert run['n_folds'] == 2
  assert [p['WA'] for p in run['pooled_by_seed']] == pytest.approx([0.5, 1.0])
  assert run['pooled']['WA'] == pytest.approx(0.75)
  assert run['pooled']['n'] == 4
  assert run['mean']['WA'] == pytest.approx(0.75)


def test_aggregate_runs_rejects_bad_records():
  r = results.fold_record('m', 'p', 1, [0], [0])
  with pytest.raises(ValueError, match='Duplicate'):
    results.aggregate_runs([r, r], ['x', 'y'])
  with pytest.raises(ValueError, match='more than one fold'):
    results.aggregate_runs([results.fold_record('m', 'p', 1, [0], [0], utt_ids=['u']),
                            results.fold_record('m', 'p', 2, [1], [1], utt_ids=['u'])],
                           ['x', 'y'])
  with pytest.raises(ValueError, match='fold=3.*outside'):
    results.aggregate_runs([results.fold_record('m', 'p', 3, [0, 5], [0, 1])], ['x', 'y'])
  with pytest.raises(ValueError, match='reserved'):
    results.fold_record('m', 'p', 1, [0], [0], UA=1.0)
  with pytest.raises(ValueError, match='no fold records'):
    results.aggregate_runs([], ['x'])


def test_write_results_schema_and_files(tmp_path):
  runs = results.aggregate_runs(_records(), CLASSES)
  paths = results.write_results(tmp_path, _config(), runs, notes='Synthetic corpus.')
  data = json.loads((tmp_path / 'results.json').read_text())
  assert set(data) == {'config', 'budget', 'corpus', 'runs'}
  assert data['config']['data']['aux_tasks'] == ['valence', 'activation', 'dominance']
  run = data['runs'][0]
  for key in ('model', 'protocol', 'pooled', 'folds', 'mean', 'std', 'confusion'):
    assert key in run
  assert set(run['pooled']) >= {'UA', 'WA'}
  assert set(run['mean']) >= {'UA', 'WA'} and set(run['std']) >= {'UA', 'WA'}
  assert set(run['confusion']) == {'counts', 'normalised', 'classes'}
  for fold in run['folds']:
    assert set(fold) >= {'fold', 'UA', 'WA', 'dev_UA', 'dev_WA', 'seed'}
  assert run['confusion']['classes'] == list(CLASSES)

  md = (tmp_path / 'results.md').read_text()
  assert '| Model | Protocol | UA (pooled) | WA (pooled) | UA mean ± std | WA mean ± std' in md
  assert '| mmtl | paper | 70.00 | 60.00 | 56.25 ± 26.52 | 62.50 ± 17.68 | 2 × 1 |' in md
  # One fold: the std is not 0, it does not exist.
  assert '| cnn_lstm | strict | 50.00 | 50.00 | 50.00 ± n/a | 50.00 ± n/a | 1 × 1 |' in md
  assert 'union of all folds' in md
  assert 'Auxiliary tasks: V+A+D; meta mode: reptile' in md
  assert 'Synthetic corpus.' in md
  assert '| 2 | 0 | 37.50 | 50.00 | 70.00 | 80.00 | 6 |' in md

  png = tmp_path / 'confusion' / 'mmtl__paper.png'
  assert png.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
  conf = json.loads((tmp_path / 'confusion' / 'mmtl__paper.json').read_text())
  assert conf['counts'] == run['confusion']['counts']
  assert paths['mmtl__paper.png'] == str(png)
  # No temporary files left behind.
  leftovers = [p for p in tmp_path.rglob('*') if p.name.endswith('.tmp')]
  assert not leftovers


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
  path = tmp_path / 'results.json'
  files.atomic_write_json(path, {'ok': 1})
  with pytest.raises(ValueError):  # NaN is rejected before anything replaces the old file
    files.atomic_write_json(path, {'bad': float('nan')})
  assert json.loads(path.read_text()) == {'ok': 1}
  assert sorted(p.name for p in tmp_path.iterdir()) == ['results.json']


def test_to_jsonable():
  out = files.to_jsonable({'a': (1, np.int32(2)), 'b': np.array([[0.5]]),
                             'c': float('nan'), 1: np.bool_(True)})
  assert out == {'a': [1, 2], 'b': [[0.5]], 'c': None, '1': True}
  with pytest.raises(TypeError):
    files.to_jsonable({'f': object()}, strict=True)


def _fake_workdir(root, name, aux, mode, ua):
  wd = root / name
  recs = [results.fold_record('mmtl', 'paper', 1, [0, 1], [0, 1 if ua else 0])]
  results.write_results(wd, _config(aux, mode), results.aggregate_runs(recs, ['a', 'b']))
  return wd


def test_gather_two_workdirs(tmp_path):
  wd1 = _fake_workdir(tmp_path, 'va_reptile', ('valence', 'activation'), 'reptile', True)
  wd2 = _fake_workdir(tmp_path, 'd_exact', ('dominance',), 'exact', False)
  table = results.gather([wd1, wd2])
  lines = table.splitlines()
  assert lines[0].startswith('| Workdir | Aux tasks | Meta mode | Model | Protocol |')
  assert '| va_reptile | V+A | reptile | mmtl | paper | 100.00 | 100.00 |' in table
  assert '| d_exact | D | exact | mmtl | paper | 50.00 | 50.00 |' in table
  with pytest.raises(FileNotFoundError):
    results.gather([wd1, tmp_path / 'nothing'])
  assert 'No results yet: nothing' in results.gather([wd1, tmp_path / 'nothing'],
                                                     skip_missing=True)


def test_gather_script(tmp_path):
  wd1 = _fake_workdir(tmp_path, 'run_a', ('valence',), 'reptile', True)
  wd2 = _fake_workdir(tmp_path, 'run_b', ('activation',), 'first_order', False)
  out = tmp_path / 'table.md'
  proc = subprocess.run(
      [sys.executable, os.path.join(REPO, 'experiments', 'gather.py'), str(wd1), str(wd2),
       f'--out={out}'], capture_output=True, text=True, check=True, timeout=60)
  assert '| run_a | V | reptile |' in proc.stdout
  assert '| run_b | A | first_order |' in out.read_text()
