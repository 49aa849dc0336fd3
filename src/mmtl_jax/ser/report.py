"""The markdown of an experiment's results: results.md and the tables built from
results.json runs (gather, ser/study.py). Text only: ser/results.py writes the files.

All values are shown in % (metrics are fractions in [0, 1] in results.json); '–' marks a
missing value, 'n/a' a statistic that one fold x seed cannot give (a std, an interval, a p). The definitions of UA / WA, pooled and mean ± std are in ser/results.py.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from mmtl_jax.run import stats
from mmtl_jax.ser import budgets
from mmtl_jax.ser.confusion_plot import CONFUSION_DIR, confusion_basename

_AUX_ABBREV = {'valence': 'V', 'activation': 'A', 'arousal': 'A', 'dominance': 'D'}


def pct(x: float | None) -> str:
  """A fraction as a percentage with 2 decimals; '–' for None."""
  return '–' if x is None else f'{100.0 * x:.2f}'


NOT_APPLICABLE = 'n/a'


def _pm(mean: float | None, std: float | None) -> str:
  """'mean ± std' in %; std None with a mean (a single fold x seed) prints 'n/a'."""
  if mean is None:
    return '–'
  return f'{pct(mean)} ± {NOT_APPLICABLE if std is None else pct(std)}'


def _md_cell(value: Any) -> str:
  return str(value).replace('|', r'\|').replace('\n', ' ')


def aux_label(config: Mapping[str, Any] | None) -> str:
  """'V+A+D'-style label of config.data.aux_tasks (unknown names are kept as they are)."""
  tasks = budgets.config_get(config, 'data.aux_tasks')
  if tasks is None:
    return '?'
  if isinstance(tasks, str):
    tasks = [tasks]
  if not tasks:
    return 'none'
  return '+'.join(_AUX_ABBREV.get(str(t).lower(), str(t)) for t in tasks)


DEFINITIONS = (
    'UA = mean per-class recall over the classes present in the test set; WA = accuracy. '
    '**Pooled** = metrics over the union of all folds\' test utterances (each utterance scored '
    'once; with several seeds, the mean over seeds of the pooled values). '
    '**mean ± std** = over folds (× seeds), sample std (ddof=1); n/a with a single fold × '
    'seed. All values in %.')

SUMMARY_HEADER = ('| Model | Protocol | UA (pooled) | WA (pooled) | UA mean ± std | '
                  'WA mean ± std | Folds × seeds |\n'
                  '|---|---|---:|---:|---:|---:|---:|')


def summary_row(run: Mapping[str, Any], prefix: Sequence[str] = ()) -> str:
  """One SUMMARY_HEADER row of a results.json run, after the cells of `prefix`."""
  cells = [*prefix, run['model'], run['protocol'], pct(run['pooled']['UA']),
           pct(run['pooled']['WA']), _pm(run['mean']['UA'], run['std']['UA']),
           _pm(run['mean']['WA'], run['std']['WA']),
           f"{run['n_folds']} × {len(run['seeds'])}"]
  return '| ' + ' | '.join(_md_cell(c) for c in cells) + ' |'


def results_markdown(config: Mapping[str, Any] | None, runs: Sequence[Mapping[str, Any]],
                     notes: str | None = None) -> str:
  """The text of results.md: a Table 2/3-style summary, then per-fold tables per run."""
  lines = ['# Results', '']
  if config:
    mode, seed = (budgets.config_get(config, f, '?') for f in ('meta.mode', 'seed'))
    lines += [f'Auxiliary tasks: {aux_label(config)}; meta mode: {mode}; seed: {seed}.', '',
              f'Corpus: {budgets.corpus_label(config)}; training budget: '
              f'{budgets.training_budget(config)} per fold, '
              f"{budgets.config_get(config, 'train.segments_per_speaker', '?')} segments per "
              'speaker task.', '']
  if notes:
    lines += [notes, '']
  lines += [SUMMARY_HEADER, *(summary_row(r) for r in runs), '', DEFINITIONS, '',
            '## Protocol budgets', '', *budgets.protocol_budgets(config), '']
  lines += _comparison_lines(runs)
  lines += _fold_tables(runs)
  return '\n'.join(lines)


def _comparison_lines(runs: Sequence[Mapping[str, Any]]) -> list[str]:
  """MMTL against each baseline, paired over (fold, seed); [] without MMTL or a baseline."""
  comparisons = stats.compare_with(runs, 'mmtl')
  if not comparisons:
    return []
  return ['## MMTL against each baseline (paired)', '', comparisons_markdown(comparisons), '']


def _signed_pct(x: float) -> str:
  return f'{100.0 * x:+.2f}'


def comparisons_markdown(comparisons: Sequence[Mapping[str, Any]]) -> str:
  """A markdown table of `run.stats.compare` results (differences in UA percentage points)."""
  lines = ['| A | B | Protocol | Pairs | mean A − B | 95% bootstrap CI | Wilcoxon p | '
           'A > B / A < B / = |', '|---|---|---|---:|---:|---:|---:|---:|']
  for c in comparisons:
    few = c['n_pairs'] < stats.MIN_PAIRS
    p = ('n/a' if few else '–' if c['wilcoxon_p'] is None else f"{c['wilcoxon_p']:.3g}")
    ci = ('n/a' if c['ci95'] is None
          else f"[{_signed_pct(c['ci95'][0])}, {_signed_pct(c['ci95'][1])}]")
    lines.append(f"| {c['a']} | {c['b']} | {c['protocol']} | {c['n_pairs']} | "
                 f"{_signed_pct(c['mean_diff'])} | {ci} | {p} | "
                 f"{c['wins']} / {c['losses']} / {c['ties']} |")
  lines += ['', 'Paired over (fold, seed): the same test speaker and seed for both systems. '
            f"Differences in {comparisons[0]['metric'] if comparisons else 'UA'} percentage "
            'points; CI = percentile bootstrap over the pairs '
            f'({stats.BOOTSTRAP_SAMPLES} resamples); p = two-sided Wilcoxon signed-rank (– '
            'when every difference is 0); n/a with a single pair.']
  return '\n'.join(lines)


def _fold_tables(runs: Sequence[Mapping[str, Any]]) -> list[str]:
  """Per run: its per-fold table, per-class recall and confusion figure."""
  lines: list[str] = []
  for run in runs:
    lines += [f"## {_md_cell(run['model'])} / {_md_cell(run['protocol'])}", '',
              '| Fold | Seed | UA | WA | dev UA | dev WA | n |',
              '|---|---:|---:|---:|---:|---:|---:|']
    for f in run['folds']:
      cells = [f['fold'], f['seed'], pct(f['UA']), pct(f['WA']), pct(f.get('dev_UA')),
               pct(f.get('dev_WA')), f['n']]
      lines.append('| ' + ' | '.join(_md_cell(c) for c in cells) + ' |')
    recall = ', '.join(f'{k} {pct(v)}' for k, v in run['per_class_recall'].items())
    stem = confusion_basename(run['model'], run['protocol'])
    lines += ['', f'Per-class recall (pooled confusion): {recall}.', '',
              f'![confusion {stem}]({CONFUSION_DIR}/{stem}.png)', '']
  return lines


def run_context(cfg: Mapping[str, Any] | None, protocol: str) -> tuple[str, str, str]:
  """(corpus, classes, budget) cells of a gathered row: what else makes two rows differ."""
  get = lambda field, default=None: budgets.config_get(cfg, field, default)
  classes = get('data.classes')
  classes = ', '.join(map(str, classes)) if isinstance(classes, (list, tuple)) else '?'
  budget = budgets.training_budget(cfg)
  if protocol == 'paper':
    n = get('eval.finetune_steps', 0)
    budget += (f"; fine-tune {n} {get('eval.finetune_unit', 'steps')} "
               f"{get('eval.finetune_optimizer', 'sgd')}" if n else '; no fine-tuning')
  return budgets.corpus_label(cfg), classes, budget


def workdirs_table(workdirs: Sequence[tuple[str, Mapping[str, Any], Sequence[Mapping[str, Any]]]],
                   missing: Sequence[str] = ()) -> str:
  """Markdown table comparing the runs of several workdirs (see results.gather).

  Args:
    workdirs: (name, config, runs) of each workdir, as read from its results.json; one row
      per run, labelled by the name and the config's auxiliary tasks and meta mode.
    missing: names of workdirs without results, listed under the table.
  """
  header = ('| Workdir | Aux tasks | Meta mode | Model | Protocol | UA (pooled) | WA (pooled) | '
            'UA mean ± std | WA mean ± std | Folds × seeds | Corpus | Classes | Budget |\n'
            '|---|---|---|---|---|---:|---:|---:|---:|---:|---|---|---|')
  rows = []
  for name, cfg, runs in workdirs:
    prefix = (name, aux_label(cfg), budgets.config_get(cfg, 'meta.mode', '?'))
    rows += [summary_row(run, prefix) + ' ' + ' | '.join(
        _md_cell(c) for c in run_context(cfg, run['protocol'])) + ' |' for run in runs]
  lines = [header, *rows, '', DEFINITIONS]
  if missing:
    lines += ['', 'No results yet: ' + ', '.join(missing) + '.']
  return '\n'.join(lines) + '\n'


__all__ = [
    'aux_label', 'comparisons_markdown', 'DEFINITIONS', 'NOT_APPLICABLE', 'pct',
    'results_markdown', 'run_context', 'SUMMARY_HEADER', 'summary_row', 'workdirs_table',
]
