"""Reader of a CSV manifest: any corpus as one row per recording.

Columns (names from config.data): path (relative to the CSV's directory, or absolute),
speaker, label, and the auxiliary columns named in config.data.aux_tasks. Each auxiliary
column is described in config.data.aux_columns as either

  'categorical'         values -> index in the sorted list of the column's distinct values
                        (over all rows of the file, so indices do not depend on the classes);
  (e0, e1, ..., en)     numeric bin edges: bins [e_i, e_{i+1}); outside [e0, en) is an error
                        naming file and line.

An optional config.data.label_map maps raw labels to class names; rows whose (mapped) label is
not in config.data.classes are left out.
"""

from __future__ import annotations

import csv
import os

import ml_collections

from mmtl_jax.data.corpus import Problem, Utterance, absolute, bin_index


def read_manifest(data: ml_collections.ConfigDict) -> tuple[list[Utterance], list[Problem]]:
  """Reads the utterances of the CSV at data.manifest (see module docstring).

  Raises:
    FileNotFoundError if the CSV is missing; ValueError naming file and line for a missing
    column, an empty speaker/path, or an auxiliary value outside its bin edges.
  """
  if not data.manifest:
    raise ValueError("data.kind='manifest' needs config.data.manifest (a CSV file)")
  csv_path = os.path.abspath(os.path.expanduser(data.manifest))
  if not os.path.isfile(csv_path):
    raise FileNotFoundError(f'manifest {csv_path} does not exist')
  base = os.path.dirname(csv_path)
  aux_columns = dict(data.aux_columns)
  for name in data.aux_tasks:
    if name not in aux_columns:
      raise ValueError(f'aux task {name!r} has no entry in config.data.aux_columns '
                       f"({{column: 'categorical' | (edges...)}})")
  label_map = dict(data.label_map)
  classes = tuple(data.classes)

  with open(csv_path, newline='', encoding='utf-8') as f:
    reader = csv.DictReader(f)
    header = reader.fieldnames or []
    rows = [(number, row) for number, row in enumerate(reader, start=2)]
  needed = [data.path_column, data.speaker_column, data.label_column, *data.aux_tasks]
  missing = [c for c in needed if c not in header]
  if missing:
    raise ValueError(f'{csv_path}:1: missing column(s) {missing}; header is {header}')

  categories = {}
  for name in data.aux_tasks:
    if aux_columns[name] == 'categorical':
      categories[name] = sorted({row[name].strip() for _, row in rows})

  utterances, problems = [], []
  for number, row in rows:
    where = f'{csv_path}:{number}'
    rel, speaker = row[data.path_column].strip(), row[data.speaker_column].strip()
    if not rel or not speaker:
      raise ValueError(f'{where}: empty {data.path_column!r} or {data.speaker_column!r}')
    raw_label = row[data.label_column].strip()
    label = label_map.get(raw_label, raw_label)
    aux, aux_raw = [], []
    for name in data.aux_tasks:
      value = row[name].strip()
      if name in categories:
        aux.append(categories[name].index(value))
        aux_raw = None
        continue
      try:
        number_value = float(value)
      except ValueError:
        raise ValueError(f'{where}: column {name!r} value {value!r} is not a number') from None
      aux.append(bin_index(number_value, tuple(float(e) for e in aux_columns[name]),
                           f'{where} (column {name!r})'))
      if aux_raw is not None:
        aux_raw.append(number_value)
    if label not in classes:
      continue
    utterances.append(Utterance(
        utt_id=os.path.splitext(rel)[0], path=absolute(rel, base), speaker=speaker,
        session=None, dialog='', label=label, aux=tuple(aux),
        aux_raw=None if aux_raw is None else tuple(aux_raw)))
  return utterances, problems
