"""Reader of a CSV manifest: any corpus as one row per recording.

Columns (names from config.data.manifest): path (relative to the CSV's directory, or
absolute), speaker, label, and the auxiliary columns named in config.data.aux_tasks. Each
auxiliary column is described in config.data.manifest.aux_columns as either

  'categorical'         values -> index in the sorted list of the column's distinct values
                        (over all rows of the file, so indices do not depend on the classes);
  (e0, e1, ..., en)     numeric bin edges: bins [e_i, e_{i+1}); outside [e0, en) is an error
                        naming file and line.

An optional config.data.manifest.label_map maps raw labels to class names.

The file must be UTF-8 (a byte-order mark is accepted), with one header line naming every
column once and the same number of fields on every row; anything else is an error naming the
file and line.

Integrity (nothing is dropped silently):
  * rows whose (mapped) label is not in config.data.classes are left out, and counted per raw
    label in the returned problems (which the feature store writes to manifest.json);
  * a class of config.data.classes with no utterance left is an error listing the labels the
    file has (a label 'Anger' for class 'anger' would otherwise give a 3-class table);
  * the same recording listed twice (the same resolved file, under two path spellings or two
    speakers) is an error naming both lines;
  * a speaker with fewer than config.data.manifest.min_utterances_per_speaker utterances is
    left out, with a problem line saying so, so that no dev or test speaker has a handful.
The feature store applies the class and speaker rules again to the utterances whose audio it
could read (`mmtl_jax.data.store`), and refuses a categorical column with more values than
the model's outputs before extracting any feature.
"""

from __future__ import annotations

import collections
import csv
import io
import math
import os
from typing import Any, Optional

import ml_collections

from mmtl_jax.records import Problem, Utterance, absolute, bin_index
from mmtl_jax.run import errors
from mmtl_jax.run import files


class ManifestError(errors.InputError):
  """A manifest (or its config.data.manifest settings) that cannot be read as a corpus; the
  message names the file and line where one applies and what to change. A ValueError too."""


def read(data: ml_collections.ConfigDict, workdir: Optional[str] = None
         ) -> tuple[list[Utterance], list[Problem]]:
  """The corpus reader of kind 'manifest' (see `mmtl_jax.data.corpus`)."""
  del workdir  # the CSV and its audio are read in place
  return read_manifest(data)


def _csv_path(opts: ml_collections.ConfigDict) -> str:
  if not opts.path:
    raise ManifestError("data.kind='manifest' needs config.data.manifest.path (a CSV file), "
                        'config.data.manifest.path, give the path of the CSV')
  csv_path = os.path.abspath(os.path.expanduser(opts.path))
  if os.path.isdir(csv_path):
    raise files.PathError(f'the manifest is a directory, {csv_path}, give the path of the '
                          'CSV file in config.data.manifest.path')
  if not os.path.isfile(csv_path):
    raise files.MissingFileError(f'the manifest does not exist, {csv_path}, give the path of '
                                 'an existing CSV file in config.data.manifest.path')
  return csv_path


def _csv_text(csv_path: str) -> str:
  """The CSV's text as UTF-8; a leading byte-order mark (as Excel writes it) is dropped.

  Raises:
    ValueError naming file and line of the first byte that is not UTF-8 (a Latin-1 export
    would otherwise fail deep inside the csv module, or not at all).
  """
  with open(csv_path, 'rb') as f:
    data = f.read()
  try:
    return data.decode('utf-8-sig')
  except UnicodeDecodeError as e:
    line = data[:e.start].count(b'\n') + 1
    raise ManifestError(f'{csv_path}:{line}: not UTF-8 (byte {data[e.start]:#04x}); save the CSV '
                        'as UTF-8 (e.g. iconv -f <its encoding> -t utf-8)') from None


def _check_header(header: list[str], needed: list[str], csv_path: str,
                  aux_tasks: tuple = ()) -> None:
  """ValueError naming the file for a repeated or a missing column (a missing auxiliary
  column says which aux tasks the file could give instead)."""
  repeated = sorted({c for c in header if c and header.count(c) > 1})
  if repeated:  # csv.DictReader would silently keep the last of each
    raise ManifestError(f'{csv_path}:1: column(s) {repeated} appear more than once in the header '
                        f'{header}; rename or remove the copies')
  missing = [c for c in needed if c not in header]
  aux_missing = [c for c in missing if c in aux_tasks]
  if aux_missing:
    raise ManifestError(
        f'{csv_path}:1: missing column(s) {missing}; header is {header}. {aux_missing} are '
        'data.aux_tasks: add them to the CSV or set data.aux_tasks to columns it has (each '
        'with an entry in data.manifest.aux_columns); for EmoDB without the perception '
        "test's ratings use the config's ':sex' variant (configs/emodb.py)")
  if missing:
    other = [d for d in ';\t|' if len(header) == 1 and d in header[0]]
    hint = (f'; the header is one field holding {other[0]!r}: save the CSV comma-separated'
            if other else '; name those columns in the header or set data.manifest.*_column')
    raise ManifestError(f'{csv_path}:1: missing column(s) {missing}; header is {header}{hint}')


def _read_rows(csv_path: str, needed: list[str], aux_tasks: tuple = ()
               ) -> list[tuple[int, dict[str, str]]]:
  """[(line number, row)] of the CSV (blank lines skipped).

  Raises:
    ValueError naming the file, and the line where one applies: not UTF-8, a repeated or
    missing column, a row with more or fewer fields than the header, an unterminated quote,
    a field over the csv module's size limit.
  """
  reader = csv.reader(io.StringIO(_csv_text(csv_path), newline=''), strict=True)
  rows = []
  try:
    header = next(reader, [])
    _check_header(header, needed, csv_path, aux_tasks)
    for fields in reader:
      if not fields:
        continue
      if len(fields) != len(header):
        raise ManifestError(f'{csv_path}:{reader.line_num}: {len(fields)} field(s) where the '
                            f'header has {len(header)} ({header}); a short, truncated or '
                            'misquoted row')
      rows.append((reader.line_num, dict(zip(header, fields))))
  except csv.Error as e:
    raise ManifestError(f'{csv_path}:{reader.line_num}: {e}') from None
  return rows


def _aux_value(value: str, name: str, spec: Any, categories: dict[str, list[str]],
               where: str) -> tuple[int, Optional[float]]:
  """(bin index, raw number or None for a categorical column) of one auxiliary cell."""
  if name in categories:
    return categories[name].index(value), None
  try:
    number = float(value)
  except ValueError:
    raise ManifestError(f'{where}: column {name!r} value {value!r} is not a number') from None
  if not math.isfinite(number):  # 'nan' parses as a float and fits no bin silently
    raise ManifestError(f'{where}: column {name!r} value {value!r} is not a finite number; '
                        'give a number inside its bin edges (or remove the row)')
  edges = tuple(float(e) for e in spec)
  try:
    return bin_index(number, edges, f'{where} (column {name!r})'), number
  except ValueError as e:
    raise ManifestError(f'{e}; give a value inside the edges or widen '
                        f'data.manifest.aux_columns[{name!r}]') from None


def _duplicates(rows: list[tuple[int, dict[str, str]]], opts: ml_collections.ConfigDict,
                csv_path: str) -> None:
  """ValueError naming both lines of every recording listed twice (compared as resolved
  paths, so 'a/1.wav' and './a/../a/1.wav' or a symlink are the same recording)."""
  first: dict[str, tuple[int, str, str]] = {}
  clashes = []
  for number, row in rows:
    rel, speaker = row[opts.path_column].strip(), row[opts.speaker_column].strip()
    if not rel or not speaker:
      raise ManifestError(f'{csv_path}:{number}: empty {opts.path_column!r} or '
                          f'{opts.speaker_column!r}')
    real = os.path.realpath(absolute(rel, base=os.path.dirname(csv_path)))
    if real in first:
      line, rel0, speaker0 = first[real]
      clashes.append(f'  {csv_path}:{line} ({rel0!r}, speaker {speaker0!r}) and line {number} '
                     f'({rel!r}, speaker {speaker!r}) are both {real}')
    else:
      first[real] = (number, rel, speaker)
  if clashes:
    raise ManifestError(f'{len(clashes)} recording(s) listed twice in the manifest:\n'
                        + '\n'.join(clashes))


def _dropped_labels(dropped: collections.Counter, classes: tuple, csv_path: str
                    ) -> list[Problem]:
  """One problem per raw label left out, with its row count."""
  return [{'path': csv_path, 'reason': f'{n} row(s) with label {raw!r} left out: not in '
           f'data.classes {list(classes)}', 'label': raw, 'rows': n}
          for raw, n in sorted(dropped.items())]


def _few_utterance_speakers(utterances: list[Utterance], minimum: int, csv_path: str
                            ) -> tuple[list[Utterance], list[Problem]]:
  """(utterances of speakers with >= `minimum` of them, a problem per speaker left out)."""
  counts = collections.Counter(u.speaker for u in utterances)
  few = sorted(s for s, n in counts.items() if n < minimum)
  problems = [{'path': csv_path, 'reason': f'speaker {s!r} left out: {counts[s]} utterance(s), '
               f'fewer than data.manifest.min_utterances_per_speaker={minimum}',
               'speaker': s, 'utterances': counts[s]} for s in few]
  return [u for u in utterances if u.speaker not in few], problems


def _check_classes(utterances: list[Utterance], classes: tuple, labels: collections.Counter,
                   csv_path: str) -> None:
  """ValueError if a class has no utterance left (listing what the file's labels are)."""
  present = {u.label for u in utterances}
  missing = [c for c in classes if c not in present]
  if missing:
    found = ', '.join(f'{k!r}: {n}' for k, n in sorted(labels.items()))
    raise ManifestError(f'{csv_path}: data.classes {missing} have no utterance (after '
                        'data.manifest.label_map and the speaker minimum); the labels in the '
                        f'file (mapped) are {{{found}}}. Check the spelling of data.classes and '
                        'the label_map.')


def read_manifest(data: ml_collections.ConfigDict) -> tuple[list[Utterance], list[Problem]]:
  """Reads the utterances of the CSV at data.manifest.path (see module docstring).

  Returns:
    (utterances, problems): problems count the rows left out per raw label and name the
    speakers left out for having too few utterances.

  Raises:
    FileNotFoundError if the CSV is missing; ValueError naming file and line for a missing
    column, an empty speaker/path, an auxiliary value outside its bin edges or a recording
    listed twice; ValueError for a class with no utterance.
  """
  opts = data.manifest
  csv_path = _csv_path(opts)
  aux_columns = dict(opts.aux_columns)
  for name in data.aux_tasks:
    if name not in aux_columns:
      raise ManifestError(f'aux task {name!r} has no entry in config.data.manifest.aux_columns '
                          f"({{column: 'categorical' | (edges...)}})")
  label_map, classes = dict(opts.label_map), tuple(data.classes)
  rows = _read_rows(csv_path, [opts.path_column, opts.speaker_column, opts.label_column,
                               *data.aux_tasks], tuple(data.aux_tasks))
  if not rows:  # else every class would be reported missing, hiding the cause
    raise ManifestError(f'{csv_path}: the manifest has a header and no rows, {csv_path}, add '
                        'one row per recording')
  _duplicates(rows, opts, csv_path)
  categories = {name: sorted({row[name].strip() for _, row in rows})
                for name in data.aux_tasks if aux_columns[name] == 'categorical'}
  utterances, dropped, labels = [], collections.Counter(), collections.Counter()
  for number, row in rows:
    where = f'{csv_path}:{number}'
    rel, speaker = row[opts.path_column].strip(), row[opts.speaker_column].strip()
    raw_label = row[opts.label_column].strip()
    label = label_map.get(raw_label, raw_label)
    labels[label] += 1
    cells = [_aux_value(row[name].strip(), name, aux_columns[name], categories, where)
             for name in data.aux_tasks]
    if label not in classes:
      dropped[raw_label] += 1
      continue
    raw = [number for _, number in cells]
    utterances.append(Utterance(
        utt_id=os.path.splitext(rel)[0], path=absolute(rel, base=os.path.dirname(csv_path)),
        speaker=speaker, session=None, dialog='', label=label,
        aux=tuple(index for index, _ in cells),
        aux_raw=None if any(r is None for r in raw) else tuple(raw)))
  utterances, few = _few_utterance_speakers(
      utterances, int(opts.get('min_utterances_per_speaker', 1)), csv_path)
  _check_classes(utterances, classes, labels, csv_path)
  return utterances, _dropped_labels(dropped, classes, csv_path) + few


__all__ = ['ManifestError', 'read', 'read_manifest']
