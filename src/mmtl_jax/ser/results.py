"""Result files of an experiment: fold records aggregated into runs, results.json, results.md
and the confusion files (their text: ser/report.py; their plots: ser/confusion_plot.py), and
gathering several workdirs into one table.

The training loop produces one *fold record* per (model, protocol, fold, seed): the utterance
level true and predicted labels of that fold's test speaker, plus optional dev metrics. This
module turns records into *runs* (one per model x protocol) and writes them.

results.json (the contract other tools read; all metrics are fractions in [0, 1])::

  {"config": {...the experiment config as plain JSON...},
   "runs": [
     {"model": str, "protocol": str, "classes": [C names],
      "seeds": [ints], "n_folds": int (distinct folds),
      "pooled": {"UA": float, "WA": float, "n": int},
      "pooled_by_seed": [{"seed": int, "UA": float, "WA": float, "n": int}, ...],
      "folds": [{"fold": int | str, "seed": int, "UA": float, "WA": float, "n": int,
                 "dev_UA": float | null, "dev_WA": float | null,
                 "confusion": [[C ints] x C], ...extra JSON-able fields}, ...],
      "mean": {"UA": float, "WA": float, "dev_UA": float | null, "dev_WA": float | null},
      "std": {"UA": float | null, "WA": float | null, "dev_UA": ..., "dev_WA": ...},
      "confusion": {"counts": [[C ints] x C], "normalised": [[C floats] x C],
                    "classes": [C names]},
      "per_class_recall": {name: float | null}}, ...],
   "budget": {"train_steps", "segments_per_speaker", "folds_which", "finetune_steps",
              "finetune_unit", "protocols": {protocol: words}, "text"},
   "corpus": {"kind", "label", "classes"}   (mmtl_jax.ser.budgets.budget_record),
   "provenance": {...mmtl_jax.run.provenance.provenance(started, ended)...}}

Definitions:
  * UA / WA: see mmtl_jax.ser.metrics (UA averages recall over the classes present).
  * pooled: UA / WA over the union of all folds' test utterances of one seed (each utterance
    is scored exactly once); with several seeds, the mean of the per-seed pooled values.
  * mean / std: over all (fold, seed) records; std is the sample standard deviation (ddof=1),
    null for a single record (one number has no spread: tables print 'n/a', not 0). dev_*
    are null unless every record carries them.
  * confusion: counts summed over all records (an utterance counts once per seed); normalised
    = counts divided by their row sums (rows are true classes).
  * provenance (see mmtl_jax.run.provenance): what produced the file (versions, git commit,
    devices, command, times); absent when the writer gave none.

Every file is written atomically (temporary file in the same directory, then os.replace), so a
crash never leaves a truncated results.json.
"""

from __future__ import annotations

import json
import os
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from mmtl_jax.run import files
from mmtl_jax.run.files import atomic_write_json, atomic_write_text, to_jsonable
from mmtl_jax.ser import budgets
from mmtl_jax.ser import metrics
from mmtl_jax.ser import report
from mmtl_jax.ser.confusion_plot import CONFUSION_DIR, confusion_basename, plot_confusion

RESULTS_JSON = 'results.json'
RESULTS_MD = 'results.md'

_RECORD_KEYS = ('model', 'protocol', 'fold', 'seed', 'y_true', 'y_pred', 'dev_UA', 'dev_WA',
                'utt_ids')


# ---- Records and runs --------------------------------------------------------------------


def fold_record(model: str, protocol: str, fold: int | str, y_true: Any, y_pred: Any, *,
                seed: int = 0, dev_ua: float | None = None, dev_wa: float | None = None,
                utt_ids: Any = None, **extra: Any) -> dict[str, Any]:
  """Builds the record of one test fold, the input of `aggregate_runs`.

  Args:
    model: model name, e.g. 'mmtl' or 'cnn_lstm'.
    protocol: meta-test protocol, e.g. 'paper' or 'strict'.
    fold: fold index or name (e.g. 3, or '3-swap' when dev and test are swapped).
    y_true: [U] int utterance-level true classes of the fold's test speaker.
    y_pred: [U] int utterance-level predictions (argmax of averaged segment posteriors).
    seed: the run's seed; records of several seeds are aggregated together.
    dev_ua: UA on the dev speaker at the selected checkpoint (optional).
    dev_wa: WA on the dev speaker at the selected checkpoint (optional).
    utt_ids: [U] utterance ids (optional); when given, aggregate_runs checks that no
      utterance is tested twice within one seed.
    **extra: JSON-able scalars copied into the fold's entry (e.g. step, test_speaker).
  """
  y_true = np.asarray(y_true)
  y_pred = np.asarray(y_pred)
  if y_true.shape != y_pred.shape or y_true.ndim != 1:
    raise ValueError(f'y_true and y_pred must be 1-D of equal length, got {y_true.shape} and '
                     f'{y_pred.shape} (model={model}, protocol={protocol}, fold={fold}).')
  if utt_ids is not None and np.asarray(utt_ids).shape != y_true.shape:
    raise ValueError(f'utt_ids shape {np.asarray(utt_ids).shape} != y_true shape '
                     f'{y_true.shape}.')
  clash = set(extra) & set(_RECORD_KEYS + ('UA', 'WA', 'n', 'confusion'))
  if clash:
    raise ValueError(f'extra fields clash with reserved keys: {sorted(clash)}.')
  return {'model': str(model), 'protocol': str(protocol), 'fold': fold, 'seed': int(seed),
          'y_true': y_true, 'y_pred': y_pred, 'dev_UA': dev_ua, 'dev_WA': dev_wa,
          'utt_ids': None if utt_ids is None else np.asarray(utt_ids), **extra}


def _mean_std(values: Sequence[float | None]) -> tuple[float | None, float | None]:
  """(mean, sample std); std None for fewer than 2 values (ddof=1 is undefined there, and a
  0 would print as '± 0.00', a spread nobody measured)."""
  if not values or any(v is None for v in values):
    return None, None
  arr = np.asarray(values, dtype=np.float64)
  std = float(np.std(arr, ddof=1)) if arr.size > 1 else None
  return float(arr.mean()), std


def _group_records(fold_records: Iterable[Mapping[str, Any]]
                   ) -> dict[tuple[str, str], list[Mapping[str, Any]]]:
  """{(model, protocol): records}, in order of first appearance.

  Raises:
    ValueError: a record lacks a required key, or there are no records.
  """
  groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
  for rec in fold_records:
    missing = [k for k in ('model', 'protocol', 'fold', 'y_true', 'y_pred') if k not in rec]
    if missing:
      raise ValueError(f'fold record lacks {missing}: {sorted(rec)}')
    groups.setdefault((str(rec['model']), str(rec['protocol'])), []).append(rec)
  if not groups:
    raise ValueError('aggregate_runs got no fold records.')
  return groups


def _check_utterances(rec: Mapping[str, Any], num_utts: int, fold: Any, seed: int, where: str,
                      utts_by_seed: dict[int, set]) -> None:
  """Adds `rec`'s utt_ids (if any) to utts_by_seed[seed], so no utterance is scored twice.

  Raises:
    ValueError: an id repeats within the fold, or was tested in another fold of `seed`.
  """
  if rec.get('utt_ids') is None:
    return
  ids = set(np.asarray(rec['utt_ids']).tolist())
  if len(ids) != num_utts:
    raise ValueError(f'Repeated utterance ids within fold {fold!r} ({where}).')
  overlap = utts_by_seed.setdefault(seed, set()) & ids
  if overlap:
    raise ValueError(f'Utterances tested in more than one fold of seed {seed} ({where}):'
                     f' e.g. {sorted(map(str, overlap))[:3]}.')
  utts_by_seed[seed] |= ids


def _fold_entry(rec: Mapping[str, Any], fold: Any, seed: int,
                summary: Mapping[str, Any]) -> dict[str, Any]:
  """The results.json 'folds' entry of one record; its non-reserved fields are copied last."""
  entry = {'fold': fold, 'seed': seed, 'UA': summary['UA'], 'WA': summary['WA'],
           'n': summary['n'], 'dev_UA': to_jsonable(rec.get('dev_UA')),
           'dev_WA': to_jsonable(rec.get('dev_WA')), 'confusion': summary['confusion']}
  for k, v in rec.items():
    if k not in _RECORD_KEYS:
      entry[k] = to_jsonable(v)
  return entry


def _score_records(recs: Sequence[Mapping[str, Any]], names: list[str], where: str
                   ) -> tuple[list[dict[str, Any]], dict[int, list[tuple[np.ndarray, np.ndarray]]],
                              np.ndarray]:
  """Scores the records of one run.

  Returns:
    (fold entries in record order, {seed: [(y_true, y_pred) per fold]},
     [C, C] int64 confusion counts summed over all records).
  """
  seen = set()
  folds = []
  by_seed: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}
  utts_by_seed: dict[int, set] = {}
  counts = np.zeros((len(names), len(names)), dtype=np.int64)
  for rec in recs:
    seed = int(rec.get('seed', 0))
    fold = to_jsonable(rec['fold'])
    if (fold, seed) in seen:
      raise ValueError(f'Duplicate fold record fold={fold!r} seed={seed} ({where}).')
    seen.add((fold, seed))
    y_true, y_pred = np.asarray(rec['y_true']), np.asarray(rec['y_pred'])
    try:
      summary = metrics.summarise(y_true, y_pred, names)
    except (ValueError, TypeError) as e:
      # Re-raised with the record's identity: the bare message does not say which fold.
      raise type(e)(f'{where}, fold={fold!r}, seed={seed}: {e}') from e
    _check_utterances(rec, len(y_true), fold, seed, where, utts_by_seed)
    by_seed.setdefault(seed, []).append((y_true, y_pred))
    counts += np.asarray(summary['confusion'], dtype=np.int64)
    folds.append(_fold_entry(rec, fold, seed, summary))
  return folds, by_seed, counts


def _pooled_by_seed(by_seed: Mapping[int, Sequence[tuple[np.ndarray, np.ndarray]]],
                    names: list[str]) -> list[dict[str, Any]]:
  """[{'seed', 'UA', 'WA', 'n'}] over the union of each seed's folds, by increasing seed."""
  pooled = []
  for seed, pairs in sorted(by_seed.items()):
    yt = np.concatenate([p[0] for p in pairs])
    yp = np.concatenate([p[1] for p in pairs])
    s = metrics.summarise(yt, yp, names)
    pooled.append({'seed': seed, 'UA': s['UA'], 'WA': s['WA'], 'n': s['n']})
  return pooled


def _run_entry(model: str, protocol: str, names: list[str], folds: list[dict[str, Any]],
               by_seed: Mapping[int, Any], counts: np.ndarray) -> dict[str, Any]:
  """One results.json run (schema in the module docstring) from `_score_records`' output."""
  pooled_by_seed = _pooled_by_seed(by_seed, names)
  recall = metrics.per_class_recall_from_counts(counts)
  mean, std = {}, {}
  for m in ('UA', 'WA', 'dev_UA', 'dev_WA'):
    mean[m], std[m] = _mean_std([f[m] for f in folds])
  return {
      'model': model,
      'protocol': protocol,
      'classes': names,
      'seeds': sorted(by_seed),
      'n_folds': len({f['fold'] for f in folds}),
      'pooled': {
          'UA': float(np.mean([p['UA'] for p in pooled_by_seed])),
          'WA': float(np.mean([p['WA'] for p in pooled_by_seed])),
          # Seeds normally share the test sets; if they do not, the mean size is reported.
          'n': int(round(np.mean([p['n'] for p in pooled_by_seed]))),
      },
      'pooled_by_seed': pooled_by_seed,
      'folds': folds,
      'mean': mean,
      'std': std,
      'confusion': {'counts': counts.tolist(),
                    'normalised': metrics.row_normalise(counts).tolist(),
                    'classes': names},
      'per_class_recall': {n: to_jsonable(r) for n, r in zip(names, recall)},
  }


def aggregate_runs(fold_records: Iterable[Mapping[str, Any]],
                   class_names: Sequence[str]) -> list[dict[str, Any]]:
  """Groups fold records by (model, protocol) and computes the run entries of results.json.

  Args:
    fold_records: records as built by `fold_record` (mappings with at least model, protocol,
      fold, y_true, y_pred; seed defaults to 0).
    class_names: C class names in class index order.

  Returns:
    One run dict per (model, protocol), in order of first appearance, with the schema given
    in the module docstring.

  Raises:
    ValueError: duplicated (model, protocol, fold, seed), an utterance tested twice within a
      seed, labels out of range, or no records.
  """
  names = [str(c) for c in class_names]
  runs = []
  # Every record is checked for its keys before any run is scored.
  for (model, protocol), recs in _group_records(fold_records).items():
    where = f'model={model}, protocol={protocol}'
    folds, by_seed, counts = _score_records(recs, names, where)
    runs.append(_run_entry(model, protocol, names, folds, by_seed, counts))
  return runs


# ---- Writing -----------------------------------------------------------------------------


def write_results(workdir: str | os.PathLike, config: Any,
                  runs: Sequence[Mapping[str, Any]], notes: str | None = None,
                  provenance_info: Mapping[str, Any] | None = None) -> dict[str, str]:
  """Writes results.json, results.md and confusion/<model>__<protocol>.{png,json}.

  Args:
    workdir: the experiment directory (created if missing).
    config: the experiment config (ConfigDict or mapping); stored as plain JSON.
    runs: as returned by `aggregate_runs`.
    notes: optional markdown paragraph put at the top of results.md (e.g. protocol notes).
    provenance_info: `mmtl_jax.run.provenance.provenance(...)` of the run, stored under
      'provenance' (or nothing).

  Returns:
    {'json': path, 'markdown': path, '<model>__<protocol>.png': path, ...}.
  """
  workdir = os.fspath(workdir)
  cfg = to_jsonable(config) if config is not None else {}
  runs = to_jsonable(list(runs), strict=True)
  paths = {'json': os.path.join(workdir, RESULTS_JSON),
           'markdown': os.path.join(workdir, RESULTS_MD)}
  for run in runs:
    stem = confusion_basename(run['model'], run['protocol'])
    conf = {'model': run['model'], 'protocol': run['protocol'], **run['confusion']}
    json_path = os.path.join(workdir, CONFUSION_DIR, stem + '.json')
    png_path = os.path.join(workdir, CONFUSION_DIR, stem + '.png')
    atomic_write_json(json_path, conf)
    title = (f"{run['model']} / {run['protocol']}: UA {report.pct(run['pooled']['UA'])}%, "
             f"WA {report.pct(run['pooled']['WA'])}% (pooled)")
    plot_confusion(png_path, run['confusion']['counts'], run['confusion']['classes'], title)
    paths[stem + '.json'] = json_path
    paths[stem + '.png'] = png_path
  atomic_write_text(paths['markdown'], report.results_markdown(cfg, runs, notes))
  # results.json last: its presence tells gather() that the rest is complete.
  content = {'config': cfg, **budgets.budget_record(cfg), 'runs': runs}
  if provenance_info is not None:
    content['provenance'] = to_jsonable(dict(provenance_info), strict=True)
  atomic_write_json(paths['json'], content)
  return paths


def load_results(workdir: str | os.PathLike) -> dict[str, Any]:
  """Reads <workdir>/results.json, checking the top-level schema."""
  path = os.path.join(os.fspath(workdir), RESULTS_JSON)
  recover = ('start the training command of that workdir again: it rewrites results.json '
             'from the finished folds')
  data = files.read_json(path, recover)
  if not isinstance(data.get('runs'), list):
    raise files.DamagedFileError(f'damaged {RESULTS_JSON} (no "runs" list), {path}, {recover}')
  return data


def workdir_labels(workdirs: Sequence[str]) -> list[str]:
  """A distinct label per workdir: its basename, or where basenames repeat the shortest tail
  of its absolute path that no other workdir shares ('#2', '#3' for a workdir given again)."""
  paths = [os.path.abspath(wd) for wd in workdirs]
  labels = []
  for path in paths:
    parts, others = path.strip(os.sep).split(os.sep), [p for p in paths if p != path]
    for n in range(1, len(parts) + 1):
      tail = os.sep.join(parts[-n:])
      if not any(o == tail or o.endswith(os.sep + tail) for o in others):
        break
    labels.append(tail)
  seen: dict[str, int] = {}
  for i, label in enumerate(labels):
    seen[label] = seen.get(label, 0) + 1
    if seen[label] > 1:
      labels[i] = f'{label} #{seen[label]}'
  return labels


def gather(workdirs: Sequence[str | os.PathLike], skip_missing: bool = False) -> str:
  """Markdown table comparing the runs of several workdirs.

  One row per workdir x model x protocol, labelled by the workdir's name (a longer tail of its
  path where names repeat, see `workdir_labels`) and the auxiliary tasks and meta mode found in
  its config; each row also names the corpus, the classes and the budget (report.py).

  Args:
    workdirs: experiment directories containing results.json.
    skip_missing: if True, list workdirs without results.json under the table instead of
      raising FileNotFoundError.
  """
  found, missing = [], []
  names = workdir_labels([os.fspath(wd) for wd in workdirs])
  for wd, name in zip(workdirs, names):
    wd = os.fspath(wd)
    if not os.path.exists(os.path.join(wd, RESULTS_JSON)):
      if skip_missing:
        missing.append(name)
        continue
      raise files.MissingFileError(
          f'no {RESULTS_JSON} in {wd}, {os.path.join(wd, RESULTS_JSON)}, finish its training '
          'run first (or pass --skip_missing)')
    data = load_results(wd)
    found.append((name, data.get('config') or {}, data['runs']))
  return report.workdirs_table(found, missing)


__all__ = [
    'aggregate_runs', 'fold_record', 'gather', 'load_results', 'RESULTS_JSON', 'RESULTS_MD',
    'workdir_labels', 'write_results',
]
