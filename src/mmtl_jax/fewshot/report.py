"""Few-shot records as markdown: the table over seeds, the baselines, paired comparisons and
the published findings they are checked against.

Published figures quoted (accuracy %, the papers' own tables):
  Finn et al. 2017, Table 1 (Omniglot, MAML): 98.7 / 99.9 / 95.8 at 5-way 1-shot / 5-way
    5-shot / 20-way 1-shot. Finn et al. report the first-order approximation only on
    MiniImagenet (also Table 1, 5-way): MAML 48.70 vs first order 48.07 (1-shot), 63.11 vs
    63.15 (5-shot).
  Nichol et al. 2018 (Omniglot, with transduction; cited as their Table 1, a table number
    not verified here): first-order MAML 98.3 / 99.2 / 89.4. Set beside MAML's 98.7 / 99.9 /
    95.8 from Finn et al., the gap is 0.4 / 0.7 / 6.4 points: our arithmetic on the two
    papers' figures, not a finding quoted from either paper.
  Rajeswaran et al. 2019 (their Omniglot table): iMAML (GD) 99.16 / 99.67 / 94.46 against
    MAML's 98.7 / 99.9 / 95.8, i.e. +0.46 / -0.23 / -1.34 points (ahead at 5-way 1-shot,
    behind at 5-way 5-shot and 20-way 1-shot); iMAML's memory flat in the inner steps (their
    Figure 2).

Every claim about these records applies one rule: a difference between two methods counts
only where zero is outside its 95% t-interval over meta-training seeds (paired on the same
test episodes). Wilcoxon p-values over test episodes are printed with their unit: they treat
the episodes as the sample and ignore the variation between training seeds.
"""

import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

from mmtl_jax.run import stats

# (way, shot) -> (exact MAML, first-order MAML) accuracy, %, with the table each comes from.
PUBLISHED = {
    'finn2017_miniimagenet (Finn et al. 2017, Table 1)': {(5, 1): (48.70, 48.07),
                                                          (5, 5): (63.11, 63.15)},
    'omniglot (MAML: Finn et al. 2017, Table 1; first order: Nichol et al. 2018, Table 1, '
    'table number not verified; the gap is our arithmetic across the two papers)': {
        (5, 1): (98.7, 98.3), (5, 5): (99.9, 99.2), (20, 1): (95.8, 89.4)},
}
# (way, shot) -> (iMAML (GD), MAML) accuracy, %, on Omniglot: Rajeswaran et al. 2019's iMAML,
# Finn et al. 2017's MAML (as Rajeswaran et al. quote it).
PUBLISHED_IMAML = {(5, 1): (99.16, 98.7), (5, 5): (99.67, 99.9), (20, 1): (94.46, 95.8)}
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


def _beats(records: Sequence[Dict[str, Any]], method: str, base: Sequence[str], way: int,
           shot: int) -> List[str]:
  """'base +d ±ci' for each baseline in `base` that `method` does NOT beat by the seed rule
  (paired on the same episodes; zero outside the 95% t-interval over seeds)."""
  out = []
  for b in base:
    p = stats.paired(records, method, b, way, shot)
    if p is None or p['seed_ci95'] is None or p['diff'] <= p['seed_ci95']:
      ci = 'no seed interval' if p is None or p['seed_ci95'] is None else _pm(p['seed_ci95'])
      out.append(f"{b} {p['diff']:+.1f} {ci}" if p else f'{b} (no shared seed)')
  return out


def baseline_check(rows: Sequence[Dict[str, Any]],
                   records: Optional[Sequence[Dict[str, Any]]] = None) -> List[str]:
  """Lines naming, per setting, each meta-learner that does not beat every baseline on the
  mean; with `records`, also each that is ahead on the mean but not by the seed rule (zero
  inside the paired 95% interval over seeds against some baseline)."""
  out = []
  for way, shot in sorted({(r['way'], r['shot']) for r in rows}):
    here = [r for r in rows if (r['way'], r['shot']) == (way, shot)]
    base = [r for r in here if r['method'] in BASELINE_NAMES]
    if not base:
      continue
    best = max(base, key=lambda r: r['accuracy'])
    metas = [r['method'] for r in here if r['method'] not in BASELINE_NAMES]
    losers = [m for m in metas if m not in {r['method'] for r in here
                                            if r['accuracy'] > best['accuracy']}]
    if records is None:
      verdict = ('every meta-learner beats it' if not losers
                 else 'NOT beaten by ' + ', '.join(losers))
    else:
      names = [r['method'] for r in base]
      weak = {m: _beats(records, m, names, way, shot) for m in metas}
      strong = [m for m in metas if not weak[m]]
      verdict = ('ahead of every baseline by more than the seed interval (paired, 95% over '
                 'seeds): ' + (', '.join(strong) or 'none'))
      verdict += ''.join(f"; {m} NOT (vs {', '.join(w)})" for m, w in weak.items() if w)
      verdict += '; behind the best baseline on the mean: ' + ', '.join(losers) if losers else ''
    out.append(f"- {way}-way {shot}-shot: best baseline {best['method']} "
               f"{best['accuracy']:.1f}%; {verdict}")
  return out


def baseline_summary(records: Sequence[Dict[str, Any]]) -> str:
  """One sentence: where every meta-learner beats every baseline by the seed rule, and the
  exceptions with their paired differences over seeds."""
  recs = list(records)
  settings = sorted({(int(r['way']), int(r['shot'])) for r in recs})
  base = [b for b in BASELINE_NAMES if any(r['method'] == b for r in recs)]
  metas = list(dict.fromkeys(r['method'] for r in recs if r['method'] not in BASELINE_NAMES))
  misses = [f'{m} vs {w} at {way}-way {shot}-shot' for way, shot in settings for m in metas
            for w in _beats(recs, m, base, way, shot)
            if any(r['method'] == m and (int(r['way']), int(r['shot'])) == (way, shot)
                   for r in recs)]
  if not misses:
    return ('Every meta-learner beats every baseline in every setting by more than the '
            '95% seed interval of the paired difference.')
  return ('Every meta-learner beats every baseline by more than the 95% seed interval of the '
          'paired difference, except ' + '; '.join(misses) + ' (zero inside the interval: '
          'ahead on the mean at most, not a win by the seed rule).')


def paired_lines(records: Sequence[Dict[str, Any]]) -> List[str]:
  """Paired comparisons (same test episodes and seeds) of PAIRS, per setting: the t-test over
  seeds (the unit that decides) beside the Wilcoxon test over episodes (seed variance
  ignored)."""
  out = []
  settings = sorted({(int(r['way']), int(r['shot'])) for r in records})
  for a, b in PAIRS:
    for way, shot in settings:
      p = stats.paired(records, a, b, way, shot)
      if p is None:
        continue
      per = ', '.join(f"{v['diff']:+.1f}" for _, v in sorted(p['per_seed'].items()))
      fmt = lambda x: 'n/a' if x is None else f'{x:.2g}'
      episodes = next(len(r['per_episode']) for r in records if r['method'] == a and
                      (int(r['way']), int(r['shot'])) == (way, shot))
      out.append(f"- {way}-way {shot}-shot: {a} - {b} = {p['diff']:+.1f} points "
                 f"({_pm(p['seed_ci95'])} over {p['seeds']} seeds; per seed {per}; "
                 f"{a} ahead in {p['wins']}/{p['seeds']}; p over seeds (t-test, n = "
                 f"{p['seeds']}) {fmt(p['seed_p'])}; p over episodes (Wilcoxon, n = "
                 f"{episodes}, seed variance ignored) {fmt(p['wilcoxon_p'])})")
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


def _nichol_line(records: Sequence[Dict[str, Any]]) -> Optional[str]:
  """The 5- against 20-way 1-shot gap here, beside our arithmetic on the published figures."""
  five, twenty = (stats.paired(records, 'maml', 'fomaml', w, 1) for w in (5, 20))
  if five is None or twenty is None:
    return None
  omniglot = next(t for name, t in PUBLISHED.items() if name.startswith('omniglot'))
  gap = {w: omniglot[(w, 1)][0] - omniglot[(w, 1)][1] for w in (5, 20)}
  grows = twenty['diff'] > five['diff']
  return (f"- Exact minus first-order MAML, 5-way against 20-way 1-shot (our arithmetic on two "
          f"papers' figures: MAML from Finn et al. 2017, first-order MAML from Nichol et al. "
          f"2018): published {gap[5]:+.1f} -> "
          f"{gap[20]:+.1f} points; here {five['diff']:+.1f} -> {twenty['diff']:+.1f}: "
          f"{'grows' if grows else 'does not grow'}")


def _imaml_line(p: Dict[str, Any]) -> str:
  """iMAML minus MAML here against Rajeswaran et al.'s quoted Omniglot figures."""
  im, ma = PUBLISHED_IMAML.get((p['way'], p['shot']), (None, None))
  published = ('not reported' if im is None else
               f"{im - ma:+.2f} ({im} vs {ma}: {'ahead' if im >= ma else 'behind'})")
  inside = _within(p)
  verdict = (('ahead' if p['diff'] > 0 else 'behind') +
             (' on the mean, zero inside the seed interval' if inside == 'inside' else
              ' by more than the seed interval' if inside == 'outside' else f' ({inside})'))
  return (f"- Rajeswaran et al. 2019 (iMAML (GD) minus MAML on Omniglot, as quoted), "
          f"{p['way']}-way {p['shot']}-shot: published {published}; here imaml - maml = "
          f"{p['diff']:+.1f} {_pm(p['seed_ci95'])}: {verdict}")


def findings(records: Sequence[Dict[str, Any]]) -> List[str]:
  """The literature's findings as checks on these records, each with its evidence."""
  out = []
  for way, shot in ((5, 1), (5, 5), (20, 1)):
    p = stats.paired(records, 'maml', 'fomaml', way, shot)
    if p is not None:
      out.append(f"- Finn et al. 2017 (first order close to exact), {way}-way {shot}-shot: "
                 f"maml - fomaml = {p['diff']:+.1f} {_pm(p['seed_ci95'])} over {p['seeds']} "
                 f"seeds; zero is {_within(p)} the seed interval")
  nichol = _nichol_line(records)
  if nichol:
    out.append(nichol)
  for way, shot in ((5, 1), (5, 5), (20, 1)):
    p = stats.paired(records, 'imaml', 'maml', way, shot)
    if p is not None:
      out.append(_imaml_line(p))
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
  checks = baseline_check(rows, recs)
  parts = [head, format_table(rows), '', '## Baselines', ''] + (
      [baseline_summary(recs), ''] + checks if checks else ['- (no baseline in these records)'])
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
    'baseline_check', 'BASELINE_NAMES', 'baseline_summary', 'comparison', 'findings',
    'format_table', 'implicit_lines', 'markdown', 'memory_markdown', 'paired_lines', 'PAIRS',
    'PUBLISHED', 'PUBLISHED_IMAML', 'search_markdown',
]
