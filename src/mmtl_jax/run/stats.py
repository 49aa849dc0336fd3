"""The statistics of every experiment: intervals over seeds, paired comparisons with a
percentile bootstrap, and the Wilcoxon signed-rank test. Domain-free: it sees numbers and
records keyed by plain fields, never speech or glyphs.

Two kinds of record are compared here:

* cross-validation runs (ser's results.json run entries, their 'folds' list of
  {'fold', 'seed', metric}): two systems share every (fold, seed), so each pair gives one
  paired difference. `compare` reports the mean difference with a 95% percentile bootstrap
  interval over the pairs (resampling pairs, so the interval reflects the spread of folds and
  seeds) and the two-sided Wilcoxon signed-rank p, which assumes nothing about the shape of
  the differences. With n pairs the smallest attainable Wilcoxon p is 2 / 2^n (n = 10:
  0.002), so a handful of folds can never show significance however large the effect. With a
  single pair there is no spread to resample and no rank to test: the interval and the p are
  None, printed 'n/a' (rather than an interval [d, d] and p = 1 that look like results).
* episode-scored records ({method, way, shot, seed, accuracy, ci95, per_episode, ...}), one
  per training seed, all scored on the same test episodes. Two spreads exist:
    within a seed  the per-episode 95% interval (1.96 * std / sqrt(episodes)): how precisely
                   the test episodes measure THAT trained network;
    across seeds   the t-interval over the seeds' accuracies (`t_interval`): how much a new
                   training run would move the figure. It is the one that decides
                   comparisons; with fewer than 2 seeds it is not available (None).
  `paired` compares two methods on the same episodes and seeds: per seed the mean
  per-episode difference; across seeds the t-interval of those means.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
from scipy import stats as scipy_stats

BOOTSTRAP_SAMPLES = 10_000
MIN_PAIRS = 2  # fewer: no interval, no p ('n/a')

Key = Tuple[str, int, int]  # (method, way, shot)


# ---- the primitives -------------------------------------------------------------------------

def t_interval(values: Sequence[float]) -> Optional[float]:
  """Half-width of the 95% t-interval of the mean of `values` (None for fewer than 2)."""
  values = np.asarray(values, np.float64)
  if values.size < 2:
    return None
  return float(scipy_stats.t.ppf(0.975, values.size - 1) * values.std(ddof=1)
               / math.sqrt(values.size))


def bootstrap_interval(diffs: np.ndarray, seed: int = 0, samples: int = BOOTSTRAP_SAMPLES,
                       level: float = 0.95) -> tuple[float, float]:
  """Percentile bootstrap interval of mean(diffs) [n], resampling with replacement; the
  generator is np.random.default_rng(seed), so the interval is a function of its inputs."""
  # Not scipy.stats.bootstrap(method='percentile'): with the same generator it draws the same
  # resamples, but its quantile differs from np.quantile in the last bit of some endpoints
  # (109 of 400 random cases, 1 ulp), it refuses a single pair, and its `rng` needs scipy 1.15.
  diffs = np.asarray(diffs, np.float64)
  rng = np.random.default_rng(seed)
  means = diffs[rng.integers(0, diffs.size, size=(samples, diffs.size))].mean(axis=1)
  tail = (1.0 - level) / 2.0
  lo, hi = np.quantile(means, [tail, 1.0 - tail])
  return float(lo), float(hi)


def wilcoxon_p(diffs: np.ndarray) -> float | None:
  """Two-sided Wilcoxon signed-rank p of diffs [n] != 0; None when every one is zero."""
  diffs = np.asarray(diffs, np.float64)
  if not np.any(diffs != 0):
    return None
  return float(scipy_stats.wilcoxon(diffs, zero_method='wilcox',
                                    alternative='two-sided').pvalue)


def t_test_p(values: Sequence[float]) -> Optional[float]:
  """Two-sided one-sample t-test p of mean(values) != 0 (the test whose 95% interval is
  `t_interval`); None below 2 values or when they do not vary."""
  values = np.asarray(values, np.float64)
  if values.size < 2 or np.all(values == values[0]):
    return None
  return float(scipy_stats.ttest_1samp(values, 0.0).pvalue)


# ---- cross-validation runs, paired over (fold, seed) ---------------------------------------

def paired_scores(run_a: Mapping[str, Any], run_b: Mapping[str, Any], metric: str = 'UA'
                  ) -> tuple[list[tuple[Any, int]], np.ndarray, np.ndarray]:
  """The (fold, seed) pairs both runs hold, and each run's `metric` on them, [n] float64.

  Runs are results.json run entries (their 'folds' list of {'fold', 'seed', metric}).

  Raises:
    ValueError: the runs share no (fold, seed) pair.
  """
  def table(run):
    return {(f['fold'], int(f['seed'])): f[metric] for f in run['folds']}

  a, b = table(run_a), table(run_b)
  keys = [k for k in a if k in b]
  if not keys:
    raise ValueError(f"runs {run_a.get('model')!r} and {run_b.get('model')!r} share no "
                     '(fold, seed) pair')
  return keys, np.array([a[k] for k in keys], np.float64), np.array([b[k] for k in keys],
                                                                   np.float64)


def compare(run_a: Mapping[str, Any], run_b: Mapping[str, Any], metric: str = 'UA',
            seed: int = 0) -> dict[str, Any]:
  """Paired comparison of run_a minus run_b on `metric` over their shared (fold, seed) pairs.

  Returns:
    {'a', 'b', 'protocol', 'metric', 'n_pairs', 'mean_a', 'mean_b', 'mean_diff', 'ci95':
    [lo, hi] (None for a single pair), 'wilcoxon_p' (None for a single pair or if all
    differences are 0), 'wins' (pairs where a > b), 'losses', 'ties'}.
  """
  keys, a, b = paired_scores(run_a, run_b, metric)
  diffs = a - b
  enough = len(keys) >= MIN_PAIRS
  return {
      'a': run_a.get('label', run_a.get('model')), 'b': run_b.get('label', run_b.get('model')),
      'protocol': run_a.get('protocol'), 'metric': metric, 'n_pairs': len(keys),
      'mean_a': float(a.mean()), 'mean_b': float(b.mean()), 'mean_diff': float(diffs.mean()),
      'ci95': list(bootstrap_interval(diffs, seed)) if enough else None,
      'wilcoxon_p': wilcoxon_p(diffs) if enough else None,
      'wins': int((diffs > 0).sum()), 'losses': int((diffs < 0).sum()),
      'ties': int((diffs == 0).sum()),
  }


def compare_with(runs: Sequence[Mapping[str, Any]], reference: str, metric: str = 'UA'
                 ) -> list[dict[str, Any]]:
  """`compare(ref, other)` for every other run of the same protocol as each `reference` run.

  Runs are matched by 'label' when they carry one, else by 'model'; a pair of runs sharing
  no (fold, seed) is left out.
  """
  def name(run):
    return run.get('label', run.get('model'))

  out = []
  for ref in (r for r in runs if name(r) == reference):
    for other in runs:
      if name(other) == reference or other.get('protocol') != ref.get('protocol'):
        continue
      try:
        out.append(compare(ref, other, metric))
      except ValueError:  # no shared (fold, seed): nothing to pair
        continue
  return out


# ---- episode-scored records, over seeds ------------------------------------------------------

def aggregate(records: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
  """One row per (method, way, shot), in first-seen order: {'method', 'way', 'shot',
  'seeds' (count), 'per_seed' {seed: accuracy}, 'accuracy' (mean over seeds), 'seed_std'
  (None below 2 seeds), 'seed_ci95' (t-interval, None below 2), 'episode_ci95' (mean of the
  within-seed intervals), 'chance', 's_per_iter' (mean), 'peak_mem_mb' (max),
  'accuracy_unit'}."""
  groups: Dict[Key, List[Dict[str, Any]]] = {}
  for r in records:
    groups.setdefault((r['method'], int(r['way']), int(r['shot'])), []).append(r)
  rows = []
  for (method, way, shot), recs in groups.items():
    accs = [float(r['accuracy']) for r in recs]
    rows.append({'method': method, 'way': way, 'shot': shot, 'seeds': len(recs),
                 'per_seed': {int(r['seed']): float(r['accuracy']) for r in recs},
                 'accuracy': float(np.mean(accs)),
                 'seed_std': float(np.std(accs, ddof=1)) if len(accs) > 1 else None,
                 'seed_ci95': t_interval(accs),
                 'episode_ci95': float(np.mean([r['ci95'] for r in recs])),
                 'chance': 100.0 / way,
                 's_per_iter': float(np.mean([r['s_per_iter'] for r in recs])),
                 'peak_mem_mb': float(max(r['peak_mem_mb'] for r in recs)),
                 'accuracy_unit': recs[0].get('accuracy_unit', 'percent')})
  return rows


def paired(records: Sequence[Dict[str, Any]], a: str, b: str, way: int, shot: int
           ) -> Optional[Dict[str, Any]]:
  """Method a minus method b on the same test episodes, per seed they share.

  Returns None when they share no seed, else {'a', 'b', 'way', 'shot', 'seeds', 'per_seed'
  {seed: {'diff' (points), 'episode_ci95'}}, 'diff' (mean over seeds), 'seed_ci95'
  (t-interval over seeds, None below 2), 'seed_p' (t-test over seeds, the unit the interval
  is over; None below 2 seeds or when they agree), 'wins' (seeds where a > b), 'wilcoxon_p'
  (two-sided signed-rank test over episodes of the seed-averaged differences, seed variance
  ignored; None if all are 0)}.

  Raises:
    ValueError: the two records of a seed were scored on different episodes.
  """
  pick = lambda m: {int(r['seed']): r for r in records
                    if (r['method'], int(r['way']), int(r['shot'])) == (m, way, shot)}
  ra, rb = pick(a), pick(b)
  seeds = sorted(set(ra) & set(rb))
  if not seeds:
    return None
  per_seed, per_episode = {}, []
  for s in seeds:
    if ra[s].get('eval_seed') != rb[s].get('eval_seed') or (
        len(ra[s]['per_episode']) != len(rb[s]['per_episode'])):
      raise ValueError(f'{a} and {b} (seed {s}) were scored on different test episodes')
    d = 100.0 * (np.asarray(ra[s]['per_episode']) - np.asarray(rb[s]['per_episode']))
    per_seed[s] = {'diff': float(d.mean()),
                   'episode_ci95': float(1.96 * d.std() / math.sqrt(d.size))}
    per_episode.append(d)
  diffs = [v['diff'] for v in per_seed.values()]
  return {'a': a, 'b': b, 'way': way, 'shot': shot, 'seeds': len(seeds), 'per_seed': per_seed,
          'diff': float(np.mean(diffs)), 'seed_ci95': t_interval(diffs),
          'seed_p': t_test_p(diffs), 'wins': int(sum(x > 0 for x in diffs)),
          'wilcoxon_p': wilcoxon_p(np.mean(per_episode, axis=0))}


__all__ = [
    'aggregate', 'bootstrap_interval', 'BOOTSTRAP_SAMPLES', 'compare', 'compare_with', 'Key',
    'MIN_PAIRS', 'paired', 'paired_scores', 't_interval', 't_test_p', 'wilcoxon_p',
]
