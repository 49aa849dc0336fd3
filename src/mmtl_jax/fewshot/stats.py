"""Seeds and pairs: what the few-shot records support once training randomness is counted.

A record is one (method, way, shot, seed) run scored on the test episodes of config.eval.seed,
which are the same for every method and seed. So two kinds of spread exist:
  within a seed  the per-episode 95% interval (1.96 * std / sqrt(episodes)): how precisely
                 the test episodes measure THAT trained network;
  across seeds   the t-interval over the meta-training seeds' accuracies: how much a new
                 training run would move the figure. It is the one that decides comparisons
                 between methods; with fewer than 2 seeds it is not available (None).
`paired` compares two methods on the same episodes and seeds: per seed the mean per-episode
difference; across seeds the t-interval of those means.
"""

import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
from scipy import stats as scipy_stats

Key = Tuple[str, int, int]  # (method, way, shot)


def t_interval(values: Sequence[float]) -> Optional[float]:
  """Half-width of the 95% t-interval of the mean of `values` (None for fewer than 2)."""
  values = np.asarray(values, np.float64)
  if values.size < 2:
    return None
  return float(scipy_stats.t.ppf(0.975, values.size - 1) * values.std(ddof=1)
               / math.sqrt(values.size))


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
  (t-interval over seeds, None below 2), 'wins' (seeds where a > b), 'wilcoxon_p' (two-sided
  signed-rank test over episodes of the seed-averaged differences; None if all are 0)}.

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
  mean_d = np.mean(per_episode, axis=0)
  p = None
  if np.any(mean_d != 0):
    p = float(scipy_stats.wilcoxon(mean_d).pvalue)
  diffs = [v['diff'] for v in per_seed.values()]
  return {'a': a, 'b': b, 'way': way, 'shot': shot, 'seeds': len(seeds), 'per_seed': per_seed,
          'diff': float(np.mean(diffs)), 'seed_ci95': t_interval(diffs),
          'wins': int(sum(x > 0 for x in diffs)), 'wilcoxon_p': p}
