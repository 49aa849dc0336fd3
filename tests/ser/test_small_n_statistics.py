"""Statistics that know their n (issue 21 item 9): with one fold x seed there is no std, no
interval and no p, and every table says 'n/a' instead of '± 0.00', '[-1.79, -1.79]' or
'Wilcoxon p 1'; results.md, results.json and gather's rows name the corpus and the budget."""

import json

import ml_collections
import pytest

from mmtl_jax.run import stats as run_stats
from mmtl_jax.ser import results
from mmtl_jax.ser import report
from mmtl_jax.ser import sweep


def _config(steps=20, which=(0,), path='/data/emodb/annotations.csv'):
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.data = ml_collections.ConfigDict({'kind': 'manifest', 'aux_tasks': ('recognition_pct',),
                                      'classes': ('neutral', 'anger'),
                                      'manifest': {'path': path}})
  c.meta = ml_collections.ConfigDict({'mode': 'first_order'})
  c.folds = ml_collections.ConfigDict({'which': which})
  c.train = ml_collections.ConfigDict({'steps': steps, 'segments_per_speaker': 12})
  c.eval = ml_collections.ConfigDict({'protocols': ('paper', 'strict'), 'finetune_steps': 3,
                                      'finetune_unit': 'steps', 'finetune_optimizer': 'sgd',
                                      'finetune_lr': 0.003})
  return c


@pytest.fixture(autouse=True)
def _no_confusion_plots(monkeypatch):
  # The figures are not under test here; matplotlib would be most of these tests' time.
  monkeypatch.setattr(results, 'plot_confusion', lambda *args, **kwargs: None)


def _one_fold_runs():
  recs = [results.fold_record('mmtl', 'strict', 'f1', [0, 1, 1, 0], [0, 1, 0, 0]),
          results.fold_record('cnn_lstm', 'strict', 'f1', [0, 1, 1, 0], [0, 0, 0, 0])]
  return results.aggregate_runs(recs, ['neutral', 'anger'])


def test_one_pair_has_no_interval_and_no_p():
  # The bug: one pair gave ci95 [d, d] and Wilcoxon p 1.0, numbers that look like results.
  mmtl, base = _one_fold_runs()
  c = run_stats.compare(mmtl, base)
  assert c['n_pairs'] == 1 and c['mean_diff'] > 0
  assert c['ci95'] is None and c['wilcoxon_p'] is None
  row = report.comparisons_markdown([c]).splitlines()[2]
  assert row.count('n/a') == 2, row
  # Two pairs are enough for both.
  two = dict(mmtl, folds=mmtl['folds'] + [dict(mmtl['folds'][0], fold='f2', UA=0.9)])
  two_base = dict(base, folds=base['folds'] + [dict(base['folds'][0], fold='f2', UA=0.4)])
  c2 = run_stats.compare(two, two_base)
  assert c2['ci95'] is not None and c2['wilcoxon_p'] is not None
  assert 'n/a' not in report.comparisons_markdown([c2]).splitlines()[2]


def test_one_fold_tables_print_na_and_name_corpus_and_budget(tmp_path):
  runs = _one_fold_runs()
  assert runs[0]['std']['UA'] is None  # was 0.0
  results.write_results(tmp_path, _config(), runs)
  md = (tmp_path / 'results.md').read_text()
  assert '± 0.00' not in md and '± n/a' in md
  assert 'Corpus: manifest emodb/annotations.csv' in md
  assert 'training budget: 20 steps, folds.which 0 per fold, 12 segments' in md
  assert '| mmtl | cnn_lstm | strict | 1 | +25.00 | n/a | n/a |' in md
  data = json.loads((tmp_path / 'results.json').read_text())
  assert data['budget']['train_steps'] == 20 and data['budget']['folds_which'] == [0]
  assert data['budget']['protocols']['paper'].startswith('3 steps on minibatches of 12')
  assert data['corpus'] == {'kind': 'manifest', 'label': 'manifest emodb/annotations.csv',
                            'classes': ['neutral', 'anger']}


def test_gather_rows_show_budget_beside_each_row(tmp_path):
  # The bug: a 20-step run and a 150-step run side by side with nothing telling them apart.
  quick, full = tmp_path / 'quick', tmp_path / 'full'
  results.write_results(quick, _config(steps=20), _one_fold_runs())
  results.write_results(full, _config(steps=150, which=()), _one_fold_runs())
  rows = [l for l in results.gather([quick, full]).splitlines() if '| mmtl |' in l]
  assert '20 steps, folds.which 0' in rows[0] and '± n/a' in rows[0]
  assert '| 150 steps |' in rows[1] and 'manifest emodb/annotations.csv' in rows[1]


def test_sweep_std_of_one_fold_is_na():
  content = {'points': [{'name': 'p0', 'dev': {'mmtl': {'dev_UA': 0.5, 'dev_UA_std': None}}}],
             'chosen': {'mmtl': {'point': 'p0', 'dev_UA': 0.5, 'n': 1}}}
  assert '| p0 | 50.00 ± n/a |' in sweep.markdown(content)
