"""Reader of a CSV manifest: any corpus as one row per recording.

Columns (names from config.data.manifest): path (relative to the CSV's directory, or
absolute), speaker, label, and the auxiliary columns named in config.data.aux_tasks. Each
auxiliary column is described in config.data.manifest.aux_columns as either

  'categorical'         values -> index in the sorted list of the column's distinct values
                        (over all rows of the file, so indices do not depend on the classes);
  (e0, e1, ..., en)     numeric bin edges: bins [e_i, e_{i+1}); outside [e0, en) is an error
                        naming file and line.

An optional config.data.manifest.label_map maps raw labels to class names; rows whose
(mapped) label is not in config.data.classes are left out.
"""

from __future__ import annotations

import csv
import os
from typing import Any, Optional

import ml_collections

from mmtl_jax.types import Problem, Utterance, absolute, bin_index


def read(data: ml_collections.ConfigDict, workdir: Optional[str] = None
         ) -> tuple[list[Utterance], list[Problem]]:
  """The corpus reader of kind 'manifest' (see `mmtl_jax.data.corpus`)."""
  del workdir  # the CSV and its audio are read in place
  return read_manifest(data)


def _csv_path(opts: ml_collections.ConfigDict) -> str:
  if not opts.path:
    raise ValueError("data.kind='manifest' needs config.data.manifest.path (a CSV file)")
  csv_path = os.path.abspath(os.path.expanduser(opts.path))
  if not os.path.isfile(csv_path):
    raise FileNotFoundError(f'manifest {csv_path} does not exist')
  return csv_path


def _read_rows(csv_path: str, needed: list[str]) -> list[tuple[int, dict[str, str]]]:
  """[(line number, row)] of the CSV; ValueError naming the file if a column is missing."""
  with open(csv_path, newline='', encoding='utf-8') as f:
    reader = csv.DictReader(f)
    header = reader.fieldnames or []
    rows = list(enumerate(reader, start=2))
  missing = [c for c in needed if c not in header]
  if missing:
    raise ValueError(f'{csv_path}:1: missing column(s) {missing}; header is {header}')
  return rows


def _aux_value(value: str, name: str, spec: Any, categories: dict[str, list[str]],
               where: str) -> tuple[int, Optional[float]]:
  """(bin index, raw number or None for a categorical column) of one auxiliary cell."""
  if name in categories:
    return categories[name].index(value), None
  try:
    number = float(value)
  except ValueError:
    raise ValueError(f'{where}: column {name!r} value {value!r} is not a number') from None
  edges = tuple(float(e) for e in spec)
  return bin_index(number, edges, f'{where} (column {name!r})'), number


def read_manifest(data: ml_collections.ConfigDict) -> tuple[list[Utterance], list[Problem]]:
  """Reads the utterances of the CSV at data.manifest.path (see module docstring).

  Raises:
    FileNotFoundError if the CSV is missing; ValueError naming file and line for a missing
    column, an empty speaker/path, or an auxiliary value outside its bin edges.
  """
  opts = data.manifest
  csv_path = _csv_path(opts)
  aux_columns = dict(opts.aux_columns)
  for name in data.aux_tasks:
    if name not in aux_columns:
      raise ValueError(f'aux task {name!r} has no entry in config.data.manifest.aux_columns '
                       f"({{column: 'categorical' | (edges...)}})")
  label_map, classes = dict(opts.label_map), tuple(data.classes)
  rows = _read_rows(csv_path, [opts.path_column, opts.speaker_column, opts.label_column,
                               *data.aux_tasks])
  categories = {name: sorted({row[name].strip() for _, row in rows})
                for name in data.aux_tasks if aux_columns[name] == 'categorical'}
  utterances = []
  for number, row in rows:
    where = f'{csv_path}:{number}'
    rel, speaker = row[opts.path_column].strip(), row[opts.speaker_column].strip()
    if not rel or not speaker:
      raise ValueError(f'{where}: empty {opts.path_column!r} or {opts.speaker_column!r}')
    raw_label = row[opts.label_column].strip()
    label = label_map.get(raw_label, raw_label)
    cells = [_aux_value(row[name].strip(), name, aux_columns[name], categories, where)
             for name in data.aux_tasks]
    if label not in classes:
      continue
    raw = [number for _, number in cells]
    utterances.append(Utterance(
        utt_id=os.path.splitext(rel)[0], path=absolute(rel, base=os.path.dirname(csv_path)),
        speaker=speaker, session=None, dialog='', label=label,
        aux=tuple(index for index, _ in cells),
        aux_raw=None if any(r is None for r in raw) else tuple(raw)))
  return utterances, []
