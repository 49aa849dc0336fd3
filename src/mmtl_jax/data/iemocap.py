"""Reader of the IEMOCAP release layout (also used for the synthetic corpus).

Layout, relative to the `IEMOCAP_full_release` directory::

  SessionN/dialog/EmoEvaluation/<dialog>.txt       labels, one summary line per utterance
  SessionN/sentences/wav/<dialog>/<utt_id>.wav     16 kHz mono audio

An EmoEvaluation file has a '%' header and blocks separated by blank lines. A block starts with
a tab-separated summary line::

  [6.2901 - 8.2357]<TAB>Ses01F_impro01_F000<TAB>neu<TAB>[2.5000, 2.5000, 2.5000]

followed by per-annotator lines ('C-E2:', 'A-F1:', ...) that the summary already aggregates;
they are ignored. The speaker is session + the first letter of the utterance id's LAST field
('Ses01F_impro01_M003' -> 'Ses01M'); names are parsed with regular expressions, never by
character position, because odd dialog names exist ('Ses03M_impro05a', 'Ses05M_script01_1b').
"""

from __future__ import annotations

import glob
import os
import re
from typing import Optional

import ml_collections

from mmtl_jax.records import Problem, Utterance, bin_index
from mmtl_jax.run import errors

RELEASE_DIR = 'IEMOCAP_full_release'
VAD_NAMES = ('valence', 'activation', 'dominance')
LAYOUT = (f'{RELEASE_DIR}/SessionN/dialog/EmoEvaluation/<dialog>.txt and '
          f'{RELEASE_DIR}/SessionN/sentences/wav/<dialog>/<utt_id>.wav')

_NUMBER = r'[-+]?\d+(?:\.\d*)?'
_SUMMARY = re.compile(rf'^\[\s*({_NUMBER})\s*-\s*({_NUMBER})\s*\]\s+(\S+)\s+(\S+)\s+'
                      rf'\[\s*({_NUMBER})\s*,\s*({_NUMBER})\s*,\s*({_NUMBER})\s*\]\s*$')
_UTT_ID = re.compile(r'^(Ses\d+)[A-Za-z]?_.+_([FM])[^_]*$')


class IemocapError(errors.InputError):
  """A release (or config.data for it) that cannot be read: a malformed summary line, an
  utterance id or V/A/D value out of the layout's rules (naming file and line), an unknown
  selection or aux task. A ValueError too, as before."""


class IemocapMissingError(IemocapError, FileNotFoundError):
  """The release root or a selected session's EmoEvaluation directory does not exist (a
  FileNotFoundError too, as before)."""


def resolve_root(root: str) -> str:
  """The IEMOCAP_full_release directory from `root` (that directory or its parent)."""
  if not root:
    raise IemocapError('config.data.root is empty: set it to the IEMOCAP_full_release directory '
                     f'(expected layout: {LAYOUT})')
  root = os.path.abspath(os.path.expanduser(root))
  if os.path.isdir(os.path.join(root, RELEASE_DIR)):
    root = os.path.join(root, RELEASE_DIR)
  if not os.path.isdir(root):
    raise IemocapMissingError(f'IEMOCAP root {root} does not exist (expected layout: {LAYOUT})')
  return root


def parse_summary_line(line: str, where: str) -> tuple[str, str, tuple[float, float, float]]:
  """(utt_id, category, (valence, activation, dominance)) of one summary line.

  Raises:
    IemocapError naming `where` ('file:line') if the line is malformed.
  """
  m = _SUMMARY.match(line.rstrip('\r\n'))
  if not m:
    raise IemocapError(f'{where}: malformed EmoEvaluation summary line {line.strip()!r}; expected '
                     "'[start - end]<TAB>utt_id<TAB>category<TAB>[v, a, d]'")
  utt_id, category = m.group(3), m.group(4)
  vad = (float(m.group(5)), float(m.group(6)), float(m.group(7)))
  return utt_id, category, vad


def speaker_of(utt_id: str, where: str) -> str:
  """'Ses01F_impro01_M003' -> 'Ses01M': session prefix + gender letter of the last field."""
  m = _UTT_ID.match(utt_id)
  if not m:
    raise IemocapError(f'{where}: utterance id {utt_id!r} is not <SesNN..>_<dialog>_<F|M><nnn>')
  return m.group(1) + m.group(2)


def read_emo_evaluation(path: str) -> list[tuple[int, str, str, tuple[float, float, float]]]:
  """All summary lines of one EmoEvaluation file as (line_number, utt_id, category, vad).

  A summary line is the first line of a block, or any line starting with '['. Lines starting
  with '%' are the header; other lines inside a block are annotator lines and are ignored.
  """
  entries = []
  block_start = True
  with open(path, encoding='utf-8', errors='replace') as f:
    for number, line in enumerate(f, start=1):
      text = line.strip()
      if not text:
        block_start = True
        continue
      if text.startswith('%'):
        continue
      if block_start or text.startswith('['):
        utt_id, category, vad = parse_summary_line(text, f'{path}:{number}')
        entries.append((number, utt_id, category, vad))
      block_start = False
  return entries


def _selected(dialog: str, selection: str) -> bool:
  if selection == 'improvised':
    return 'impro' in dialog
  if selection == 'scripted':
    return 'script' in dialog
  if selection == 'all':
    return True
  raise IemocapError(f"config.data.iemocap.selection {selection!r}: 'improvised' | 'scripted' | "
                   "'all'")


def read(data: ml_collections.ConfigDict, workdir: Optional[str] = None
         ) -> tuple[list[Utterance], list[Problem]]:
  """The corpus reader of kind 'iemocap' (see `mmtl_jax.data.corpus`): data.root."""
  del workdir  # the release is read in place
  return read_iemocap(data)


def _aux_positions(aux_tasks) -> list[int]:
  for name in aux_tasks:
    if name not in VAD_NAMES:
      raise IemocapError(f'IEMOCAP aux task {name!r} is not one of {VAD_NAMES}')
  return [VAD_NAMES.index(name) for name in aux_tasks]


def _session_files(root: str, session: int, problems: list[Problem]) -> list[str]:
  eval_dir = os.path.join(root, f'Session{session}', 'dialog', 'EmoEvaluation')
  if not os.path.isdir(eval_dir):
    raise IemocapMissingError(f'{eval_dir} does not exist (expected layout: {LAYOUT})')
  files = sorted(glob.glob(os.path.join(eval_dir, '*.txt')))
  if not files:
    problems.append({'path': eval_dir, 'reason': 'no EmoEvaluation *.txt files'})
  return files


def _bins(vad: tuple[float, float, float], edges: tuple[float, ...], aux_pos: list[int],
          where: str) -> tuple[int, ...]:
  """The bins of the aux values; every value is checked, also those of no aux task.

  Raises:
    IemocapError: a value outside [edges[0], edges[-1]) (records.bin_index's plain
      ValueError, raised again as the file's refusal, naming file and line).
  """
  try:
    bins = tuple(bin_index(vad[i], edges, where) for i in aux_pos)
    for value in vad:
      bin_index(value, edges, where)
    return bins
  except ValueError as e:
    raise IemocapError(str(e)) from e


def read_iemocap(data: ml_collections.ConfigDict,
                 root: Optional[str] = None) -> tuple[list[Utterance], list[Problem]]:
  """Reads the utterances of the selected sessions and dialogs whose class is kept.

  Args:
    data: config.data: root, classes, aux_tasks, and iemocap.{sessions, selection,
      merge_exc, vad_edges}.
    root: overrides data.root (the synthetic corpus).

  Returns:
    (utterances, problems). V/A/D values are binned with data.iemocap.vad_edges; a value
    outside [edges[0], edges[-1]) or a malformed summary line raises IemocapError (a
    ValueError) naming file and line.
  """
  root = resolve_root(root or data.root)
  opts = data.iemocap
  aux_pos = _aux_positions(data.aux_tasks)
  edges = tuple(float(e) for e in opts.vad_edges)
  classes = tuple(data.classes)
  utterances, problems = [], []
  for session in opts.sessions:
    for path in _session_files(root, session, problems):
      dialog = os.path.splitext(os.path.basename(path))[0]
      if not _selected(dialog, opts.selection):
        continue
      for number, utt_id, category, vad in read_emo_evaluation(path):
        where = f'{path}:{number}'
        # Validate every line, also of classes not kept: bad input should not hide.
        bins = _bins(vad, edges, aux_pos, where)
        speaker = speaker_of(utt_id, where)
        label = 'hap' if (opts.merge_exc and category == 'exc') else category
        if label not in classes:
          continue
        wav = os.path.join(root, f'Session{session}', 'sentences', 'wav', dialog,
                           utt_id + '.wav')
        utterances.append(Utterance(
            utt_id=utt_id, path=wav, speaker=speaker, session=int(session), dialog=dialog,
            label=label, aux=bins, aux_raw=tuple(vad[i] for i in aux_pos)))
  return utterances, problems


__all__ = [
    'IemocapError', 'IemocapMissingError', 'LAYOUT', 'parse_summary_line', 'read', 'read_emo_evaluation', 'read_iemocap', 'RELEASE_DIR',
    'resolve_root', 'speaker_of', 'VAD_NAMES',
]
