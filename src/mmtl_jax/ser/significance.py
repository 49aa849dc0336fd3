"""Paired comparison of two systems over the same (fold, seed) pairs.

Folds and seeds are shared by every system of a run (same test speaker, same seed), so each
(fold, seed) gives one paired difference of test UA. We report the mean difference with a 95%
percentile bootstrap interval over the pairs (resampling pairs, so the interval reflects the
spread of speakers and seeds) and the two-sided Wilcoxon signed-rank p, which assumes nothing
about the shape of the differences. With n pairs the smallest attainable Wilcoxon p is 2 / 2^n
(n = 10: 0.002), so a handful of folds can never show significance however large the effect.
With a single pair there is no spread to resample and no rank to test: the interval and the
p are None, printed 'n/a' (rather than an interval [d, d] and p = 1 that look like results).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
from scipy import stats

BOOTSTRAP_SAMPLES = 10_000
MIN_PAIRS = 2  # fewer: no interval, no p ('n/a')


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


def bootstrap_interval(diffs: np.ndarray, seed: int = 0, samples: int = BOOTSTRAP_SAMPLES,
                       level: float = 0.95) -> tuple[float, float]:
  """Percentile bootstrap interval of mean(diffs), resampling the pairs with replacement."""
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
  """Two-sided Wilcoxon signed-rank p of diffs != 0; None when every difference is zero."""
  diffs = np.asarray(diffs, np.float64)
  if not np.any(diffs != 0):
    return None
  return float(stats.wilcoxon(diffs, zero_method='wilcox', alternative='two-sided').pvalue)


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


def _pct(x: float) -> str:
  return f'{100.0 * x:+.2f}'


def markdown(comparisons: Sequence[Mapping[str, Any]]) -> str:
  """A markdown table of `compare` results (differences in UA percentage points)."""
  lines = ['| A | B | Protocol | Pairs | mean A − B | 95% bootstrap CI | Wilcoxon p | '
           'A > B / A < B / = |', '|---|---|---|---:|---:|---:|---:|---:|']
  for c in comparisons:
    few = c['n_pairs'] < MIN_PAIRS
    p = ('n/a' if few else '–' if c['wilcoxon_p'] is None else f"{c['wilcoxon_p']:.3g}")
    ci = 'n/a' if c['ci95'] is None else f"[{_pct(c['ci95'][0])}, {_pct(c['ci95'][1])}]"
    lines.append(f"| {c['a']} | {c['b']} | {c['protocol']} | {c['n_pairs']} | "
                 f"{_pct(c['mean_diff'])} | {ci} | {p} | "
                 f"{c['wins']} / {c['losses']} / {c['ties']} |")
  lines += ['', 'Paired over (fold, seed): the same test speaker and seed for both systems. '
            f"Differences in {comparisons[0]['metric'] if comparisons else 'UA'} percentage "
            f'points; CI = percentile bootstrap over the pairs ({BOOTSTRAP_SAMPLES} resamples); '
            'p = two-sided Wilcoxon signed-rank (– when every difference is 0); n/a with a '
            'single pair.']
  return '\n'.join(lines)
