"""The CSV manifest of EmoDB (Berlin Database of Emotional Speech) from its original download.

The original release (emodb.bilderbar.info, download.zip) holds ``wav/`` with one file per
utterance named ``<speaker><text><emotion><version>.wav`` (``03a01Fa.wav``: speaker 03, text
a01, emotion letter F = Freude = happiness, version a) and the perception test's results in
``erkennung.txt``: a whitespace-separated table, Latin-1, decimal commas, with a header row
naming the file column ``Satz`` and the recognition rate ``erkannt`` (% of 20 listeners who
recognised the intended emotion). A naturalness column (a header starting with ``nat``: the
% who judged the utterance natural) is read from the same file or from ``natuerlichkeit.txt``
beside it, when there is one.

`manifest_rows` turns that layout into the rows of the CSV that configs/emodb.py reads:

  file, speaker, sex, text, emotion[, recognition_pct][, naturalness_pct]

speaker, text and emotion from the file name, sex from the speaker (the release's
documentation: 08, 09, 13, 14, 16 female), the ratings where their files are present. A
column the ratings files do not give is left out of the CSV (never filled with a made-up
value); configs/emodb.py then needs other auxiliary tasks (its ':sex' variant). A rating that
is no percentage in [0, 100] (nan, inf, 150), a sentence rated on two rows, or two files
giving one sentence different values is refused, naming file and line: no guess is written.
"""

from __future__ import annotations

import csv
import io
import os
import re
from typing import Optional

from mmtl_jax.run import errors
from mmtl_jax.run import files

# The emotion letters of the file names (German initials) and the class names of the configs.
EMOTIONS = {'W': 'anger', 'L': 'boredom', 'E': 'disgust', 'A': 'fear', 'F': 'happiness',
            'T': 'sadness', 'N': 'neutral'}
SEX = {'03': 'M', '08': 'F', '09': 'F', '10': 'M', '11': 'M', '12': 'M', '13': 'F',
       '14': 'F', '15': 'M', '16': 'F'}
RATINGS_FILES = ('erkennung.txt', 'natuerlichkeit.txt')
# Header prefixes (lower case) of the rating columns -> the manifest's column names.
RATING_COLUMNS = {'erkannt': 'recognition_pct', 'nat': 'naturalness_pct'}
BASE_COLUMNS = ('file', 'speaker', 'sex', 'text', 'emotion')
_NAME = re.compile(r'^(?P<speaker>\d\d)(?P<text>[ab]\d\d)(?P<emotion>[A-Z])(?P<version>[a-z])$')


class EmoDBLayoutError(errors.ExpectedError, ValueError):
  """A directory or file that is not in the original EmoDB layout."""


def parse_name(stem: str, where: str = '') -> dict[str, str]:
  """{'speaker', 'sex', 'text', 'emotion'} of an EmoDB file name without extension.

  Raises:
    EmoDBLayoutError: a name outside the scheme, an unknown emotion letter or speaker.
  """
  match = _NAME.match(stem)
  if not match or match['emotion'] not in EMOTIONS or match['speaker'] not in SEX:
    raise EmoDBLayoutError(
        f'{stem!r} is not an EmoDB file name (<speaker 03..16><text a01..b10><emotion '
        f"letter {''.join(EMOTIONS)}><version>, e.g. 03a01Fa), {where or stem}, give the wav "
        'directory of the original EmoDB download')
  return {'speaker': match['speaker'], 'sex': SEX[match['speaker']], 'text': match['text'],
          'emotion': EMOTIONS[match['emotion']]}


def wav_dir(emodb_dir: str) -> str:
  """The directory of the wav files: `emodb_dir`/wav, or `emodb_dir` itself if it holds them.

  Raises:
    EmoDBLayoutError: neither holds a .wav file.
  """
  for candidate in (os.path.join(emodb_dir, 'wav'), emodb_dir):
    if os.path.isdir(candidate) and any(n.lower().endswith('.wav')
                                        for n in os.listdir(candidate)):
      return candidate
  raise EmoDBLayoutError(f'no .wav files in {emodb_dir} or its wav/, {emodb_dir}, give the '
                         'directory of the EmoDB download (the one holding wav/)')


def _number(cell: str, where: str) -> float:
  """A rating cell as a % in [0, 100] (the share of listeners: 'nan', 'inf' and 150 are no
  ratings and never reach the CSV)."""
  try:
    value = float(cell.replace('\xa0', '').replace(',', '.'))
  except ValueError:
    raise EmoDBLayoutError(f'rating {cell!r} is not a number, {where}, give the perception '
                           "test's file as released (decimal commas accepted)") from None
  if not 0.0 <= value <= 100.0:  # also False for nan
    raise EmoDBLayoutError(f'rating {cell!r} is not a percentage (0 to 100), {where}, give '
                           "the perception test's file as released")
  return value


def read_ratings(path: str) -> dict[str, dict[str, float]]:
  """{file stem: {'recognition_pct' and/or 'naturalness_pct': %}} of a perception test file.

  The file: whitespace-separated, UTF-8 or Latin-1, a header row with a 'Satz' column (the
  wav name, with or without '.wav') and the rating columns of RATING_COLUMNS (by prefix);
  rows before the header and blank rows are skipped.

  Raises:
    EmoDBLayoutError: no header with 'Satz' and a rating column; a short row; a rating that
    is not a number or not a percentage in [0, 100]; a sentence rated on two rows (each
    naming file and line).
  """
  with open(path, 'rb') as f:
    data = f.read()
  try:
    text = data.decode('utf-8-sig')
  except UnicodeDecodeError:
    text = data.decode('latin-1')  # the release's encoding; every byte decodes
  header, columns, ratings, lines = None, {}, {}, {}
  for number, line in enumerate(text.splitlines(), 1):
    # Fields are separated by spaces and tabs; a no-break space (\xa0) is part of a number
    # (the release has some), not a separator: _number drops it.
    fields = [f for f in re.split(r'[ \t]+', line.strip(' \t\r')) if f]
    if header is None:
      lower = [c.lower() for c in fields]
      columns = {name: i for prefix, name in RATING_COLUMNS.items()
                 for i, c in enumerate(lower) if c.startswith(prefix)}
      if 'satz' in lower and columns:
        header = (lower.index('satz'), number)
      continue
    if not fields:
      continue
    needed = max(header[0], *columns.values()) + 1
    where = f'{path}:{number}'
    if len(fields) < needed:
      raise EmoDBLayoutError(f'{len(fields)} field(s) where the header (line {header[1]}) '
                             f'needs {needed}, {where}, give the file as released')
    stem = os.path.splitext(fields[header[0]])[0]
    if stem in lines:  # which of two ratings holds is not ours to guess
      raise EmoDBLayoutError(f'{stem} is rated twice (lines {lines[stem]} and {number}), '
                             f'{where}, keep one of the two rows')
    lines[stem] = number
    ratings[stem] = {name: _number(fields[i], where) for name, i in columns.items()}
  if header is None:
    raise EmoDBLayoutError(f"no header row with a 'Satz' column and a rating column (one "
                           f"starting with {sorted(RATING_COLUMNS)}), {path}, give the "
                           "perception test's file of the EmoDB download")
  return ratings


def _collect_ratings(directories: list[str]) -> tuple[dict[str, dict[str, float]], list[str]]:
  """The ratings of every RATINGS_FILES file found in `directories` (first found wins per
  file name), merged per stem; and the paths read.

  Raises:
    EmoDBLayoutError: two files give one sentence different values of one rating.
  """
  merged: dict[str, dict[str, float]] = {}
  read = []
  for name in RATINGS_FILES:
    for directory in directories:
      path = os.path.join(directory, name)
      if os.path.isfile(path):
        for stem, values in read_ratings(path).items():
          known = merged.setdefault(stem, {})
          clash = [c for c, v in values.items() if c in known and known[c] != v]
          if clash:  # neither file is the one to believe
            raise EmoDBLayoutError(
                f'{stem} has {clash[0]} {known[clash[0]]} in {" or ".join(read)} but '
                f'{values[clash[0]]} here, {path}, keep one of the two ratings')
          known.update(values)
        read.append(path)
        break
  return merged, read


def manifest_rows(emodb_dir: str, csv_dir: str
                  ) -> tuple[list[str], list[dict[str, str]], list[str]]:
  """(columns, rows, notes) of the manifest of the EmoDB copy at `emodb_dir` (the download's
  directory or its wav/), with 'file' relative to `csv_dir` (absolute if on another drive).

  A rating column is written only when every wav has that rating; notes say what was read
  and what is missing.

  Raises:
    EmoDBLayoutError: no wav files; a file name outside the EmoDB scheme.
  """
  wavs = wav_dir(os.path.abspath(emodb_dir))
  parents = [os.path.abspath(emodb_dir), os.path.dirname(wavs)]
  ratings_by_stem, read = _collect_ratings(list(dict.fromkeys(parents)))
  rows = []
  for name in sorted(n for n in os.listdir(wavs) if n.lower().endswith('.wav')):
    stem, path = os.path.splitext(name)[0], os.path.join(wavs, name)
    try:
      rel = os.path.relpath(path, csv_dir)
    except ValueError:  # another drive (Windows): no relative path
      rel = path
    rows.append({'file': rel.replace(os.sep, '/'), **parse_name(stem, path),
                 **ratings_by_stem.get(stem, {})})
  notes = [f'{len(rows)} wav files in {wavs}']
  notes += [f'ratings read from {p}' for p in read]
  columns = list(BASE_COLUMNS)
  for name in RATING_COLUMNS.values():
    missing = [r['file'] for r in rows if name not in r]
    if not missing:
      columns.append(name)
    elif len(missing) < len(rows):
      notes.append(f'{name} left out: {len(missing)} of {len(rows)} wav files have no rating '
                   f'(first: {missing[0]})')
    else:
      notes.append(f'{name} left out: no perception-test file with it '
                   f"({' or '.join(RATINGS_FILES)} beside {wavs})")
  return columns, rows, notes


def manifest_text(columns: list[str], rows: list[dict[str, str]]) -> str:
  """The CSV text (UTF-8, '\\n' line ends); ratings written as floats ('90.0')."""
  out = io.StringIO()
  writer = csv.DictWriter(out, fieldnames=columns, extrasaction='ignore', lineterminator='\n')
  writer.writeheader()
  for row in rows:
    writer.writerow({k: (float(v) if k in RATING_COLUMNS.values() else v)
                     for k, v in row.items()})
  return out.getvalue()


def prepare(emodb_dir: str, out: Optional[str] = None, overwrite: bool = False
            ) -> tuple[str, list[str], list[str]]:
  """Writes the manifest CSV of `emodb_dir` to `out` (default <emodb_dir>/annotations.csv,
  beside wav/) atomically; returns (path, columns, notes).

  Raises:
    EmoDBLayoutError: see `manifest_rows`; `out` exists and overwrite is False (a CSV
    beside a corpus copy may be the only record of its ratings: it is never replaced
    unasked, and file permissions do not stop root).
  """
  if not os.path.isdir(emodb_dir):
    raise EmoDBLayoutError(f'no such directory, {emodb_dir}, give the directory of the EmoDB '
                           'download (the one holding wav/)')
  wavs = wav_dir(os.path.abspath(emodb_dir))
  out = os.path.abspath(out or os.path.join(os.path.dirname(wavs), 'annotations.csv'))
  if os.path.exists(out) and not overwrite:
    raise EmoDBLayoutError(f'the manifest already exists, {out}, pass --overwrite to replace '
                           'it or --out=<another CSV>')
  columns, rows, notes = manifest_rows(emodb_dir, os.path.dirname(out))
  files.atomic_write_text(out, manifest_text(columns, rows))
  return out, columns, notes


__all__ = [
    'BASE_COLUMNS', 'EmoDBLayoutError', 'EMOTIONS', 'manifest_rows', 'manifest_text', 'parse_name',
    'prepare', 'RATING_COLUMNS', 'RATINGS_FILES', 'read_ratings', 'SEX', 'wav_dir',
]
