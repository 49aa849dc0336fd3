"""Few-shot records as markdown: the table over seeds, the baselines, paired comparisons and
the published findings they are checked against.

Published figures quoted (accuracy %, the papers' own tables):
  Finn et al. 2017, Table 1 (Omniglot, MAML): 98.7 / 99.9 / 95.8 at 5-way 1-shot / 5-way
    5-shot / 20-way 1-shot. Finn et al. report the first-order approximation only on
    MiniImagenet (Table 2, 5-way): MAML 48.70 vs first order 48.07 (1-shot), 63.11 vs 63.15
    (5-shot).
  Nichol et al. 2018, Table 1 (Omniglot, with transduction): first-order MAML 98.3 / 99.2 /
    89.4 beside MAML's 98.7 / 99.9 / 95.8 (quoted from Finn et al.): the gap is small at
    5-way and 6.4 points at 20-way 1-shot.
  Rajeswaran et al. 2019 (their Omniglot table): iMAML (GD) 99.16 / 99.67 / 94.46 against
    MAML's 98.7 / 99.9 / 95.8, iMAML's memory flat in the inner steps (their Figure 2).
"""

import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

from mmtl_jax.run import stats

# (way, shot) -> (exact MAML, first-order MAML) accuracy, %, with the table each comes from.
PUBLISHED = {
    'finn2017_miniimagenet (Finn et al. 2017, Table 2)': {(5, 1): (48.70, 48.07),
                                                          (5, 5): (63.11, 63.15)},
    'omniglot (MAML: Finn et al. 2017, Table 1; first order: Nichol et al. 2018, Table 1)': {
        (5, 1): (98.7, 98.3), (5, 5): (99.9, 99.2), (20, 1): (95.8, 89.4)},
}
BASELINE_NAMES = ('nearest_centroid', 'finetune')
PAIRS = (('maml', 'fomaml'), ('imaml', 'maml'))


def _pm(value: Optional[float]) -> str:
  return 'n/a' if value is None else f'±{value:.1f}'


def format_table(rows: Sequence[Dict[str, Any]]) -> str:
  """One markdown table: a row per (method, setting) aggregated over seeds."""
  lines = ['| method | setting | accuracy % (mean over seeds) | 95% CI over seeds | seeds | '
           'per seed | 95% CI within seed (episodes) | chance % | s / iteration | '
           'peak RSS MiB |', '|---|---|---:|---:|---:|---|---:|---:|---:|---:|']
  for r in rows:
    per_seed = ', '.join(f'{a:.1f}' for _, a in sorted(r['per_seed'].items()))
    lines.append(f"| {r['method']} | {r['way']}-way {r['shot']}-shot | {r['accuracy']:.1f} | "
                 f"{_pm(r['seed_ci95'])} | {r['seeds']} | {per_seed} | "
                 f"{_pm(r['episode_ci95'])} | {r['chance']:.0f} | {r['s_per_iter']:.3f} | "
                 f"{r['peak_mem_mb']:.0f} |")
  return '\n'.join(lines)


def baseline_check(rows: Sequence[Dict[str, Any]]) -> List[str]:
  """Lines naming, per setting, each meta-learner that does not beat every baseline."""
  out = []
  settings = sorted({(r['way'], r['shot']) for r in rows})
  for way, shot in settings:
    here = [r for r in rows if (r['way'], r['shot']) == (way, shot)]
    base = [r for r in here if r['method'] in BASELINE_NAMES]
    if not base:
      continue
    best = max(base, key=lambda r: r['accuracy'])
    losers = [r['method'] for r in here
              if r['method'] not in BASELINE_NAMES and r['accuracy'] <= best['accuracy']]
    verdict = ('every meta-learner beats it' if not losers
               else 'NOT beaten by ' + ', '.join(losers))
    out.append(f"- {way}-way {shot}-shot: best baseline {best['method']} "
               f"{best['accuracy']:.1f}%; {verdict}")
  return out


def paired_lines(records: Sequence[Dict[str, Any]]) -> List[str]:
  """Paired comparisons (same test episodes and seeds) of PAIRS, per setting."""
  out = []
  settings = sorted({(int(r['way']), int(r['shot'])) for r in records})
  for a, b in PAIRS:
    for way, shot in settings:
      p = stats.paired(records, a, b, way, shot)
      if p is None:
        continue
      per = ', '.join(f"{v['diff']:+.1f}" for _, v in sorted(p['per_seed'].items()))
      pval = 'n/a' if p['wilcoxon_p'] is None else f"{p['wilcoxon_p']:.2g}"
      out.append(f"- {way}-way {shot}-shot: {a} - {b} = {p['diff']:+.1f} points "
                 f"({_pm(p['seed_ci95'])} over {p['seeds']} seeds; per seed {per}; "
                 f"{a} ahead in {p['wins']}/{p['seeds']}; Wilcoxon over episodes p {pval})")
  return out


def comparison(records: Sequence[Dict[str, Any]]) -> List[str]:
  """Our exact vs first-order gaps (paired, over seeds) next to the published ones."""
  lines = []
  settings = sorted({(int(r['way']), int(r['shot'])) for r in records})
  for way, shot in settings:
    p = stats.paired(records, 'maml', 'fomaml', way, shot)
    if p is None:
      continue
    refs = [f'{name}: {ex - fo:+.2f} ({ex} vs {fo})' for name, table in PUBLISHED.items()
            for (w, s), (ex, fo) in table.items() if (w, s) == (way, shot)]
    lines.append(f"- {way}-way {shot}-shot: maml - fomaml = {p['diff']:+.1f} "
                 f"{_pm(p['seed_ci95'])} points here" +
                 ('; published ' + '; '.join(refs) if refs else ''))
  return lines or ['- (no setting has both maml and fomaml: nothing to compare)']


def _within(p: Dict[str, Any]) -> str:
  """'inside' / 'outside' / 'n/a': is 0 inside the seed interval of a paired difference?"""
  if p['seed_ci95'] is None:
    return 'n/a (one seed)'
  return 'inside' if abs(p['diff']) <= p['seed_ci95'] else 'outside'


def findings(records: Sequence[Dict[str, Any]]) -> List[str]:
  """The literature's findings as checks on these records, each with its evidence."""
  out = []
  for way, shot in ((5, 1), (5, 5), (20, 1)):
    p = stats.paired(records, 'maml', 'fomaml', way, shot)
    if p is not None:
      out.append(f"- Finn et al. 2017 (first order close to exact), {way}-way {shot}-shot: "
                 f"maml - fomaml = {p['diff']:+.1f} {_pm(p['seed_ci95'])} over {p['seeds']} "
                 f"seeds; zero is {_within(p)} the seed interval")
  five, twenty = (stats.paired(records, 'maml', 'fomaml', w, 1) for w in (5, 20))
  if five is not None and twenty is not None:
    grows = twenty['diff'] > five['diff']
    out.append(f"- Nichol et al. 2018 (the gap grows from 5-way to 20-way 1-shot): "
               f"{five['diff']:+.1f} -> {twenty['diff']:+.1f} points: "
               f"{'grows' if grows else 'does not grow'}")
  for way, shot in ((5, 1), (5, 5), (20, 1)):
    p = stats.paired(records, 'imaml', 'maml', way, shot)
    if p is not None:
      verdict = ('at least as good' if p['diff'] >= 0 else
                 'behind, but zero is inside the seed interval' if _within(p) == 'inside'
                 else 'worse')
      out.append(f"- Rajeswaran et al. 2019 (iMAML at least as good as MAML), {way}-way "
                 f"{shot}-shot: imaml - maml = {p['diff']:+.1f} {_pm(p['seed_ci95'])}: "
                 f"{verdict}")
  return out


def implicit_lines(records: Sequence[Dict[str, Any]]) -> List[str]:
  """iMAML's solve quality per setting: mean and max CG residual, proximal-gradient ratio,
  steps whose solve failed a check."""
  out = []
  for r in records:
    im = r.get('implicit')
    if not im:
      continue
    out.append(f"- {r['way']}-way {r['shot']}-shot seed {r['seed']}: CG residual mean "
               f"{im['cg_residual_mean']:.3g} (max {im['cg_residual_max']:.3g}), proximal "
               f"gradient at {im['prox_grad_ratio_mean']:.0%} of its start, "
               f"{im['failed_steps']}/{im['steps']} steps failed a solve check")
  return out


def markdown(result: Dict[str, Any], title: str = 'Few-shot glyphs') -> str:
  """The table, baselines, paired comparisons and iMAML's solves as one markdown document."""
  recs = result['records']
  rows = stats.aggregate(recs)
  trained = [r for r in recs if r.get('iterations')]
  where = (f"merged from {len(result['merged_from'])} runs" if result.get('merged_from')
           else f"classes per split {result.get('classes', {})}; total wall time "
                f"{result.get('wall_s', 0.0):.0f} s")
  head = (f"# {title}\n\n{len(recs)} records ({len(rows)} rows); "
          f"{trained[0]['iterations'] if trained else 0} meta-iterations per meta-learner, "
          f"{recs[0]['eval_episodes'] if recs else 0} test episodes each (the same for every "
          f"method and seed); accuracy in {result.get('accuracy_unit', 'percent')}; "
          f"{where}.\n")
  parts = [head, format_table(rows), '', '## Baselines', ''] + (
      baseline_check(rows) or ['- (no baseline in these records)'])
  parts += ['', '## Paired comparisons', ''] + (paired_lines(recs) or ['- (none)'])
  parts += ['', '## Exact vs first-order MAML against the published gaps', ''] + comparison(recs)
  found = findings(recs)
  if found:
    parts += ['', "## The literature's findings, checked", ''] + found
  imp = implicit_lines(recs)
  if imp:
    parts += ['', "## iMAML's solves", ''] + imp
  return '\n'.join(parts) + '\n'


def search_markdown(result: Dict[str, Any]) -> str:
  """The validation search: every point's validation accuracy and the chosen one."""
  lines = ['| method | way | overrides | validation accuracy % | 95% CI (episodes) | chosen |',
           '|---|---:|---|---:|---:|---|']
  chosen = result.get('chosen', {})
  for p in result['points']:
    pick = chosen.get(p['method'], {}).get(f"way{p['way']}", {})
    mark = 'yes' if pick.get('overrides') == p['overrides'] else ''
    lines.append(f"| {p['method']} | {p['way']} | `{p['overrides']}` | {p['accuracy']:.1f} | "
                 f"±{p['ci95']:.1f} | {mark} |")
  return '\n'.join(lines) + '\n'


def memory_markdown(rows: Sequence[Dict[str, Any]]) -> str:
  """Compiled meta-gradient memory (MiB of XLA temporaries) per method against inner steps."""
  steps = sorted({r['steps'] for r in rows})
  methods = list(dict.fromkeys(r['method'] for r in rows))
  table = {(r['method'], r['steps']): r['temp_mb'] for r in rows}
  lines = ['| method | ' + ' | '.join(f'{n} steps' for n in steps) + ' |',
           '|---|' + '---:|' * len(steps)]
  for m in methods:
    lines.append(f'| {m} | ' + ' | '.join(
        f"{table[(m, n)]:.1f}" if (m, n) in table else '' for n in steps) + ' |')
  return '\n'.join(lines) + '\n'


__all__ = [
    'baseline_check', 'BASELINE_NAMES', 'comparison', 'findings', 'format_table', 'implicit_lines',
    'markdown', 'memory_markdown', 'paired_lines', 'PAIRS', 'PUBLISHED', 'search_markdown',
]
