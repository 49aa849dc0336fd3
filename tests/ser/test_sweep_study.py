"""Dev-only selection (ser/sweep), paired significance (run/stats) and the multi-arm
study (ser/study)."""

import json
import os

import numpy as np
import pytest
from scipy import stats

from mmtl_jax.run import stats as run_stats
from mmtl_jax.ser import report
from mmtl_jax.ser import study
from mmtl_jax.ser import sweep
from mmtl_jax.ser import train


def _run(model, uas, protocol='paper', seeds=(0,), dev=None):
  folds = [{'fold': f, 'seed': s, 'UA': ua, 'dev_UA': (dev or {}).get((f, s), 0.5)}
           for (f, s), ua in zip([(f, s) for s in seeds for f in range(len(uas) // len(seeds))],
                                 uas)]
  devs = [f['dev_UA'] for f in folds]
  mean = {'UA': float(np.mean(uas)), 'WA': float(np.mean(uas)), 'dev_UA': float(np.mean(devs))}
  std = {'UA': float(np.std(uas)), 'WA': float(np.std(uas)), 'dev_UA': float(np.std(devs))}
  return {'model': model, 'protocol': protocol, 'folds': folds, 'mean': mean, 'std': std,
          'pooled': {'UA': mean['UA'], 'WA': mean['WA']}, 'seeds': list(seeds),
          'n_folds': len(uas) // len(seeds)}


# ---- significance --------------------------------------------------------------------------


def test_compare_pairs_by_fold_and_seed_not_by_position():
  a = _run('mmtl', [0.6, 0.7, 0.8, 0.5], seeds=(0, 1))
  b = _run('cnn_lstm', [0.5, 0.6, 0.7, 0.5], seeds=(0, 1))
  b['folds'] = b['folds'][::-1] + [{'fold': 9, 'seed': 0, 'UA': 0.0}]  # order + unmatched
  c = run_stats.compare(a, b)
  assert c['n_pairs'] == 4
  assert c['mean_diff'] == pytest.approx(0.075)
  assert (c['wins'], c['losses'], c['ties']) == (3, 0, 1)
  lo, hi = c['ci95']
  assert lo <= c['mean_diff'] <= hi


def test_bootstrap_interval_is_deterministic_and_narrows_with_more_pairs():
  rng = np.random.default_rng(1)
  small, large = rng.normal(0.02, 0.05, 10), rng.normal(0.02, 0.05, 1000)
  assert run_stats.bootstrap_interval(small) == run_stats.bootstrap_interval(small)
  lo_s, hi_s = run_stats.bootstrap_interval(small)
  lo_l, hi_l = run_stats.bootstrap_interval(large)
  assert hi_l - lo_l < (hi_s - lo_s) / 3
  assert lo_l < large.mean() < hi_l


def test_wilcoxon_matches_scipy_and_is_none_without_differences():
  diffs = np.array([0.05, 0.02, -0.01, 0.04, 0.03, 0.06, -0.02, 0.01])
  assert run_stats.wilcoxon_p(diffs) == pytest.approx(stats.wilcoxon(diffs).pvalue)
  assert run_stats.wilcoxon_p(np.zeros(5)) is None


def test_compare_with_pairs_each_protocol_with_its_own():
  runs = [_run('mmtl', [0.6, 0.7]), _run('mmtl', [0.5, 0.5], protocol='strict'),
          _run('cnn_lstm', [0.5, 0.6]), _run('cnn_lstm', [0.5, 0.6], protocol='strict')]
  out = run_stats.compare_with(runs, 'mmtl')
  assert [(c['b'], c['protocol']) for c in out] == [('cnn_lstm', 'paper'),
                                                   ('cnn_lstm', 'strict')]
  assert out[0]['mean_diff'] == pytest.approx(0.1)
  assert out[1]['mean_diff'] == pytest.approx(-0.05)
  assert '| mmtl | cnn_lstm | paper | 2 | +10.00 |' in report.comparisons_markdown(out)


# ---- sweep ---------------------------------------------------------------------------------


def test_parse_grid_and_points():
  grid = sweep.parse_grid(['meta.gamma=0.001,0.003', 'meta.mode=first_order,exact',
                           'folds.which=(0,);(1,)'])
  assert grid == {'meta.gamma': [0.001, 0.003], 'meta.mode': ['first_order', 'exact'],
                  'folds.which': [(0,), (1,)]}
  points = sweep.grid_points(grid)
  assert len(points) == 8 and points[1] == {'meta.gamma': 0.001, 'meta.mode': 'first_order',
                                            'folds.which': (1,)}
  with pytest.raises(ValueError, match='twice'):
    sweep.parse_grid(['a=1', 'a=2'])
  with pytest.raises(ValueError, match='field=value'):
    sweep.parse_grid(['meta.gamma'])


def test_with_overrides_sets_fields_and_rejects_unknown(tiny_config, corpus_root):
  c = tiny_config(corpus_root)
  out = sweep.with_overrides(c, {'meta.gamma': 0.01, 'train.baseline_lr.cnn_lstm': 1,
                                 'train.models': ['mmtl']})
  assert out.meta.gamma == 0.01 and out.train.baseline_lr.cnn_lstm == 1.0
  assert out.train.models == ('mmtl',) and c.meta.gamma != 0.01  # a copy
  with pytest.raises(KeyError, match='meta.gama'):
    sweep.with_overrides(c, {'meta.gama': 0.01})


def test_sweep_selects_on_dev_and_never_reads_test(tiny_config, corpus_root, tmp_path):
  """Test UA ranks the points opposite to dev UA: a sweep reading test would pick the other."""
  dev_ua = {0.001: 0.4, 0.01: 0.7}
  test_ua = {0.001: 0.9, 0.01: 0.1}
  seen = []

  def fake_train(cfg, workdir):
    seen.append((cfg.meta.gamma, workdir))
    g = cfg.meta.gamma
    run = _run('mmtl', [test_ua[g]] * 2, dev={(0, 0): dev_ua[g], (1, 0): dev_ua[g]})
    return {'runs': [run]}

  content = sweep.run_sweep(tiny_config(corpus_root), {'meta.gamma': [0.001, 0.01]},
                            str(tmp_path), fake_train)
  assert [g for g, _ in seen] == [0.001, 0.01]
  assert content['chosen']['mmtl']['overrides'] == {'meta.gamma': 0.01}
  assert content['chosen']['mmtl']['dev_UA'] == pytest.approx(0.7)
  assert json.loads((tmp_path / 'sweep.json').read_text())['chosen'] == content['chosen']
  md = (tmp_path / 'sweep.md').read_text()
  assert '70.00' in md and '90.00' not in md  # no test figure in the sweep's report
  assert os.path.islink(os.path.join(seen[0][1], 'features'))


def test_sweep_reads_finished_points_back_through_the_runner(tiny_config, corpus_root,
                                                             tmp_path):
  """A finished point's record (run/runner.py) is read back: its training is not called
  again, and a rerun with one point of the grid keeps the other's record."""
  seen = []

  def fake_train(cfg, workdir):
    seen.append(cfg.meta.gamma)
    return {'runs': [_run('mmtl', [0.5, 0.5], dev={(0, 0): cfg.meta.gamma, (1, 0): 0.0})]}

  grid = {'meta.gamma': [0.001, 0.01]}
  first = sweep.run_sweep(tiny_config(corpus_root), grid, str(tmp_path), fake_train)
  again = sweep.run_sweep(tiny_config(corpus_root), grid, str(tmp_path), fake_train)
  assert seen == [0.001, 0.01] and again == first
  sweep.run_sweep(tiny_config(corpus_root), {'meta.gamma': [0.01]}, str(tmp_path), fake_train)
  assert seen == [0.001, 0.01]
  assert len(os.listdir(tmp_path / 'records')) == 2


def test_sweep_checks_every_point_before_training(tiny_config, corpus_root, tmp_path):
  calls = []
  with pytest.raises(ValueError, match='meta.gamma=-1'):
    sweep.run_sweep(tiny_config(corpus_root), {'meta.gamma': [0.01, -1]}, str(tmp_path),
                    lambda c, w: calls.append(w))
  assert calls == []


@pytest.mark.slow
def test_sweep_end_to_end(tiny_config, corpus_root, tmp_path):
  """Two real points; the second reuses the first's feature store, and a rerun retrains
  nothing (the points' results are read back)."""
  c = tiny_config(corpus_root, models=('cnn_lstm',), steps=2)
  grid = {'train.baseline_lr.cnn_lstm': [0.001, 0.01]}
  content = sweep.run_sweep(c, grid, str(tmp_path), train.train_and_evaluate)
  assert len(content['points']) == 2
  assert len(os.listdir(tmp_path / 'features')) == 1 + sum(
      n.startswith('.') for n in os.listdir(tmp_path / 'features'))
  best = max(content['points'], key=lambda p: p['dev']['cnn_lstm']['dev_UA'])
  assert content['chosen']['cnn_lstm']['point'] == best['name']
  again = sweep.run_sweep(c, grid, str(tmp_path), train.train_and_evaluate)
  assert again['points'] == content['points']


# ---- study ---------------------------------------------------------------------------------


def test_study_labels_arms_and_compares_with_the_reference(tiny_config, corpus_root, tmp_path):
  uas = {'first_order': {'mmtl': [0.7, 0.8, 0.6], 'cnn_lstm': [0.5, 0.6, 0.6]},
         'reptile_emotion': {'mmtl': [0.6, 0.6, 0.6]}}

  def fake_train(cfg, workdir):
    return {'runs': [_run(m, uas[cfg.meta.mode][m]) for m in cfg.train.models
                     if m in uas[cfg.meta.mode]]}

  c = tiny_config(corpus_root)
  arms = study.default_arms(c)
  content = study.run_study(c, arms, str(tmp_path), fake_train, reference='mmtl (first_order)')
  labels = [r['label'] for r in content['runs']]
  assert labels == ['mmtl (first_order)', 'cnn_lstm', 'mmtl (reptile_emotion)']
  diffs = {c_['b']: c_['mean_diff'] for c_ in content['comparisons']}
  assert diffs == pytest.approx({'cnn_lstm': 0.4 / 3, 'mmtl (reptile_emotion)': 0.1})
  md = (tmp_path / 'study.md').read_text()
  assert 'mmtl (reptile_emotion)' in md and 'Wilcoxon' in md


# ---- results.md: budgets and paired comparisons --------------------------------------------


def test_results_markdown_states_budgets_and_pairs_mmtl_with_baselines():
  from mmtl_jax.configs import demo, reference_finetune
  from mmtl_jax.run.files import to_jsonable
  from mmtl_jax.ser import report, results
  y = np.array([0, 1, 2, 3, 0, 1, 2, 3])
  recs = []
  for fold in range(3):
    for seed in (0, 1):
      good = y.copy()
      bad = np.where(np.arange(8) < 2 + fold, (y + 1) % 4, y)
      recs += [results.fold_record('mmtl', 'paper', fold, y, good, seed=seed),
               results.fold_record('cnn_lstm', 'paper', fold, y, bad, seed=seed)]
  runs = results.aggregate_runs(recs, ['a', 'b', 'c', 'd'])
  md = report.results_markdown(to_jsonable(demo.get_config()), runs)
  assert '## Protocol budgets' in md
  assert '3 steps on minibatches of 12 segments of sgd at lr 0.003' in md
  assert '| mmtl | cnn_lstm | paper | 6 |' in md  # 3 folds x 2 seeds, paired
  ref = report.results_markdown(to_jsonable(reference_finetune.get_config('demo')), runs)
  assert '300 epochs' in ref and 'adam' in ref


def test_finetune_batches_steps_and_epochs():
  from mmtl_jax.ser.evaluate import finetune_batches
  steps = list(finetune_batches(10, 4, 3, 'steps', seed=0))
  assert len(steps) == 3 and all(s.shape == (4,) for s in steps)
  epochs = list(finetune_batches(10, 4, 2, 'epochs', seed=0))
  assert len(epochs) == 6 and all(e.shape == (4,) for e in epochs)  # ceil(10 / 4) per pass
  for first in (0, 3):
    assert set(np.concatenate(epochs[first:first + 3])) == set(range(10))
  assert not np.array_equal(epochs[0], epochs[3])  # a fresh order each pass
  with pytest.raises(ValueError, match='finetune_unit'):
    list(finetune_batches(10, 4, 1, 'minutes', seed=0))
