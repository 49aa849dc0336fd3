"""run/stats.py, the one statistics module (seed intervals, paired bootstrap, Wilcoxon), held
to the values its two predecessors (ser/significance.py, fewshot/stats.py) gave: the
figures below were computed by them before they were merged."""

import json
import os

import numpy as np
import pytest

from mmtl_jax.run import files
from mmtl_jax.run import stats

DOCS = os.path.join(os.path.dirname(__file__), '..', '..', 'docs')


def _committed_fewshot():
  with open(os.path.join(DOCS, 'fewshot.json'), encoding='utf-8') as f:
    return json.load(f)


def test_committed_fewshot_rows_recompute_exactly():
  # docs/fewshot.json's rows (seed intervals included) were written by fewshot/stats.py.
  content = _committed_fewshot()
  assert files.to_jsonable(stats.aggregate(content['records'])) == content['rows']


def test_paired_over_seeds_keeps_the_old_values():
  records = _committed_fewshot()['records']
  p = stats.paired(records, 'maml', 'fomaml', 20, 1)
  assert (p['diff'], p['seed_ci95'], p['wilcoxon_p'], p['wins']) == (
      2.2838166666666666, 5.207628155183874, 7.58438960954249e-26, 3)
  p = stats.paired(records, 'imaml', 'maml', 5, 1)
  assert (p['diff'], p['seed_ci95'], p['wilcoxon_p']) == (
      -1.8533500000000005, 2.1380118488774036, 9.814902151638674e-14)


def test_bootstrap_and_wilcoxon_keep_the_old_values():
  diffs = np.array([0.03, -0.01, 0.05, 0.02, 0.04, -0.02, 0.01])
  assert stats.bootstrap_interval(diffs) == (-4.956352788505163e-19, 0.03428571428571429)
  assert stats.wilcoxon_p(diffs) == 0.171875
  assert stats.t_interval([1.0]) is None
  assert stats.t_interval([1.0, 3.0]) == pytest.approx(12.706204736 * np.sqrt(2) / np.sqrt(2))


def test_seed_t_test_agrees_with_the_seed_interval():
  # p < 0.05 exactly when 0 lies outside the 95% t-interval: the two say the same thing.
  for values in ([2.0, 3.0, 2.5], [1.0, -0.5, 2.0], [0.1, 0.2, 0.15, 0.12], [5.0, -4.0, 1.0]):
    p, half = stats.t_test_p(values), stats.t_interval(values)
    assert (p < 0.05) == (abs(sum(values) / len(values)) > half), (values, p, half)
  assert stats.t_test_p([1.0]) is None and stats.t_test_p([2.0, 2.0, 2.0]) is None
