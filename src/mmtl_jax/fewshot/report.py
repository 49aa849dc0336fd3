"""Few-shot records as a markdown table, and the comparison with the published findings.

Published figures quoted (accuracy %, mean of their test episodes):
  Finn et al. 2017 (MiniImagenet, 5-way): MAML 48.70 / first order 48.07 (1-shot),
    63.11 / 63.15 (5-shot): the first-order approximation is about as good as exact MAML.
  Nichol et al. 2018 (Omniglot, their results table): MAML 98.7 / 99.9 / 95.8 and first-order MAML
    98.3 / 99.2 / 89.4 at 5-way 1-shot / 5-way 5-shot / 20-way 1-shot: the exact vs
    first-order gap is small at 5-way and about 6 points at 20-way 1-shot.
"""

import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

PUBLISHED = {
    'finn2017_miniimagenet': {(5, 1): (48.70, 48.07), (5, 5): (63.11, 63.15)},
    'nichol2018_omniglot': {(5, 1): (98.7, 98.3), (5, 5): (99.9, 99.2), (20, 1): (95.8, 89.4)},
}  # (way, shot) -> (exact MAML, first-order MAML) accuracy, %


def format_table(records: Sequence[Dict[str, Any]]) -> str:
  """One markdown table: a row per record (method x setting), in the records' order."""
  lines = ['| method | setting | accuracy % | 95% CI | chance % | s / iteration | '
           'peak RSS MiB |', '|---|---|---:|---:|---:|---:|---:|']
  for r in records:
    lines.append(f"| {r['method']} | {r['way']}-way {r['shot']}-shot | {r['accuracy']:.1f} | "
                 f"±{r['ci95']:.1f} | {100.0 / r['way']:.0f} | {r['s_per_iter']:.3f} | "
                 f"{r['peak_mem_mb']:.0f} |")
  return '\n'.join(lines)


def _find(records, method: str, way: int, shot: int) -> Optional[Dict[str, Any]]:
  for r in records:
    if (r['method'], r['way'], r['shot']) == (method, way, shot):
      return r
  return None


def exact_vs_first_order(records: Sequence[Dict[str, Any]]
                         ) -> Dict[Tuple[int, int], Tuple[float, float]]:
  """(way, shot) -> (maml - fomaml accuracy gap in points, its 95% CI half-width
  sqrt(ci_maml^2 + ci_fomaml^2)) for every setting with both methods."""
  out = {}
  for r in records:
    if r['method'] != 'maml':
      continue
    fo = _find(records, 'fomaml', r['way'], r['shot'])
    if fo is not None:
      out[(r['way'], r['shot'])] = (r['accuracy'] - fo['accuracy'],
                                    math.hypot(r['ci95'], fo['ci95']))
  return out


def comparison(records: Sequence[Dict[str, Any]]) -> List[str]:
  """Markdown bullet lines: our exact vs first-order gaps next to the published ones."""
  gaps = exact_vs_first_order(records)
  if not gaps:
    return ['- (no setting has both maml and fomaml: nothing to compare)']
  lines = []
  for (way, shot), (gap, ci) in sorted(gaps.items()):
    ours = f'- {way}-way {shot}-shot: maml - fomaml = {gap:+.1f} ± {ci:.1f} points here'
    refs = []
    for name, table in PUBLISHED.items():
      if (way, shot) in table:
        ex, fo = table[(way, shot)]
        refs.append(f'{name}: {ex - fo:+.2f} ({ex} vs {fo})')
    lines.append(ours + ('; published ' + ', '.join(refs) if refs else ''))
  return lines


def markdown(result: Dict[str, Any], title: str = 'Few-shot glyphs') -> str:
  """The table and the comparison lines as one markdown document."""
  recs = result['records']
  head = (f"# {title}\n\n{len(recs)} records; {recs[0]['iterations'] if recs else 0} "
          f"meta-iterations per record, {recs[0]['eval_episodes'] if recs else 0} test "
          f"episodes each; classes per split {result.get('classes', {})}; total wall time "
          f"{result.get('wall_s', 0.0):.0f} s.\n")
  return '\n'.join([head, format_table(recs), '', '## Exact vs first-order MAML', ''] +
                   comparison(recs)) + '\n'
