"""The tables of a training run: results.json / results.md written from the fold records
(ser/results.py, ser/report.py), and the summary the terminal shows at the end."""

import os
import re
import time
from typing import Any, Dict, List

import jax
from jax.experimental import multihost_utils
import ml_collections

from mmtl_jax.run import errors
from mmtl_jax.run import files
from mmtl_jax.run import process
from mmtl_jax.run import progress
from mmtl_jax.run import provenance as provenance_lib
from mmtl_jax.ser import report
from mmtl_jax.ser import results as results_lib

TRAIN_LOG = 'train.log'

NOTES = ("Protocol 'paper': fine-tune on the test speaker's auxiliary labels before "
          "predicting (section 2.4). 'strict': no label of the test speaker is used. "
          "Model selection on the dev speaker only. CNN-LSTM has no auxiliary task, so its "
          "two protocols coincide.")


def text_table(markdown: List[str]) -> List[str]:
  """A markdown table (header, '|---|--:|' row, rows) as aligned plain text: columns padded,
  the right-aligned ones ('--:') to the right, the separator row as dashes."""
  split = lambda l: [c.strip().replace('\\|', '|')
                     for c in re.split(r'(?<!\\)\|', l.strip())[1:-1]]
  rows = [split(l) for l in markdown]
  right = [c.endswith(':') for c in rows[1]]
  body = [rows[0]] + rows[2:]
  widths = [max(len(r[i]) for r in body) for i in range(len(rows[0]))]
  fmt = lambda r: '  '.join(c.rjust(w) if a else c.ljust(w)
                            for c, w, a in zip(r, widths, right)).rstrip()
  return [fmt(body[0]), '  '.join('-' * w for w in widths)] + [fmt(r) for r in body[1:]]


def terminal_summary(workdir: str, paths: Dict[str, str], runs: List[Dict[str, Any]],
                     reporter: progress.Progress, seconds: float) -> str:
  """What the terminal shows at the end: the summary table in the paper's layout (Tables 2
  and 3), where the rest is (results.md: the per-fold tables), and what this run trained.
  Each line has its control characters escaped (`errors.printable`): system names come from
  the config, paths from the command line."""
  plots = sorted(p for k, p in paths.items() if k.endswith('.png'))
  lines = ['', 'Results (%): pooled over the test utterances of all folds; mean ± std over '
           'folds × seeds', '']
  lines += text_table(report.SUMMARY_HEADER.splitlines() + [report.summary_row(r) for r in runs])
  lines += ['', f'results.md    {paths["markdown"]}  (per-fold tables, per-class recall, '
            'MMTL against each baseline)', f'results.json  {paths["json"]}']
  if plots:
    lines.append(f'plots         {os.path.dirname(plots[0])}{os.sep}  ({len(plots)} confusion '
                 'matrices)')
  lines += [f'log           {os.path.join(workdir, TRAIN_LOG)}',
            f'TensorBoard   tensorboard --logdir {workdir}', '']
  if reporter.worked == 0:
    lines.append(f'nothing trained: all {reporter.read_back_count} fold-runs read back from '
                 f'{workdir}; total {seconds:.1f} s')
  else:
    lines.append(f'trained {reporter.worked} fold-run(s)' + (
        f', read back {reporter.read_back_count}' if reporter.read_back_count else '')
                 + f'; total {seconds:.1f} s')
  return '\n'.join(errors.printable(line) for line in lines)


def write_tables(workdir: str, config: ml_collections.ConfigDict, classes: List[str],
                  fold_records: List[Dict[str, Any]], t0: float,
                  reporter: progress.Progress) -> Dict[str, Any]:
  """Aggregates the fold records into the tables, which process 0 writes and summarises on
  the terminal; returns <workdir>/results.json once written (every process)."""
  runs = results_lib.aggregate_runs(fold_records, classes)
  if process.is_primary():
    paths = results_lib.write_results(
        workdir, config, runs, notes=NOTES,
        provenance_info=provenance_lib.provenance(t0, time.time()))
    reporter.line(terminal_summary(workdir, paths, files.to_jsonable(runs), reporter,
                                   time.time() - t0))
  if jax.process_count() > 1:  # the others read the tables once process 0 has written them
    multihost_utils.sync_global_devices('mmtl_jax.ser.train: results written')
  return results_lib.load_results(workdir)


__all__ = ['NOTES', 'terminal_summary', 'text_table', 'TRAIN_LOG', 'write_tables']
