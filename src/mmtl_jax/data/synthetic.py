"""A small synthetic speech-emotion corpus written in exactly the IEMOCAP release layout.

IEMOCAP is licensed, so the embedded default corpus is this one: the same reader
(`mmtl_jax.data.iemocap`) parses it. What it has, by design:

- 5 sessions x 2 speakers (F, M); improvised and scripted dialogs, odd dialog names
  ('Ses03M_impro05a', 'Ses05M_script01_1b') and utterances of the other speaker inside a
  dialog ('Ses01F_impro01_M003');
- categories neu/ang/hap/sad plus exc, fru and xxx; V/A/D values as averages of 2 or 3 integer
  ratings on 1-5, so values lie exactly on bin edges (2.0, 3.0, 4.0) and at 5.0;
- EmoEvaluation files with a '%' header, summary lines and fake annotator lines;
- utterances of 1.5-5 s (most longer than 3 s, so segmentation kicks in), 16 kHz mono;
- exactly one unreadable wav (garbage bytes after a truncated RIFF header), an improvised
  'neu' utterance of the F speaker of session 2, which the feature store must list as skipped.

The audio is speech-like (a source-filter model whose prosody follows the drawn V/A/D values;
mmtl_jax.data.synthetic_speech). `mmtl-make-synthetic` (mmtl_jax.data.make_synthetic) writes
the corpus alone.

Everything is a deterministic function of the seed: a rerun writes byte-identical files.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Optional, Sequence

import ml_collections
import numpy as np
import soundfile as sf

from mmtl_jax.data import iemocap
from mmtl_jax.data import synthetic_speech as speech
from mmtl_jax.data.iemocap import RELEASE_DIR
from mmtl_jax.records import Problem, Utterance
from mmtl_jax.run import errors
from mmtl_jax.run import progress

MARKER = 'SYNTHETIC.json'  # written inside IEMOCAP_full_release; marks a complete corpus
VERSION = 1

# Improvised utterances per speaker and category (IEMOCAP-like imbalance), and scripted ones.
IMPRO_COUNTS = {'neu': 8, 'ang': 5, 'hap': 5, 'sad': 6, 'exc': 2, 'fru': 2, 'xxx': 1}
SCRIPT_COUNTS = {'neu': 2, 'ang': 1, 'hap': 1, 'sad': 1, 'fru': 1}
IMPRO_DIALOGS = 4

# Class-conditional V/A/D means (1-5 scale), roughly IEMOCAP's.
VAD_MEAN = {
    'neu': (3.0, 2.4, 2.6), 'ang': (1.9, 3.7, 3.7), 'hap': (3.9, 3.1, 3.0),
    'sad': (2.0, 2.1, 2.2), 'exc': (4.0, 3.7, 3.3), 'fru': (2.1, 3.2, 3.3),
    'xxx': (2.8, 2.9, 2.9),
}
VAD_SD = 0.6
CATEGORY_NAMES = {'neu': 'Neutral', 'ang': 'Anger', 'hap': 'Happiness', 'sad': 'Sadness',
                  'exc': 'Excited', 'fru': 'Frustration', 'xxx': 'Other'}


def _dialog_names(session: int) -> tuple[list[str], str]:
  """Improvised dialog names and the scripted one of a session (with IEMOCAP's odd names)."""
  impro = [f'Ses{session:02d}{"FM"[j % 2]}_impro{j + 1:02d}' for j in range(IMPRO_DIALOGS)]
  script = f'Ses{session:02d}F_script01_1'
  if session == 3:
    impro[-1] = 'Ses03M_impro05a'
  if session == 5:
    script = 'Ses05M_script01_1b'
  return impro, script


def _draw_vad(rng: np.random.Generator, category: str) -> tuple[float, float, float]:
  """Class mean + independent variation, as the average of 2 or 3 integer ratings."""
  raters = int(rng.integers(2, 4))
  vad = []
  for mean in VAD_MEAN[category]:
    ratings = np.clip(np.rint(rng.normal(mean, VAD_SD * 1.2, raters)), 1, 5)
    vad.append(float(round(ratings.mean(), 4)))
  return tuple(vad)


def _annotator_lines(rng: np.random.Generator, category: str) -> list[str]:
  name = CATEGORY_NAMES[category]
  lines = [f'C-{e}:\t{name};\t()' for e in ('E1', 'E2', 'F1')]
  for e in ('E3', 'F2'):
    val, act, dom = (int(x) for x in rng.integers(1, 6, 3))
    lines.append(f'A-{e}:\tval {val}; act {act}; dom  {dom};\t()')
  return lines


def _session_plan(seed: int, session: int, impro_counts: dict, script_counts: dict):
  """[(dialog, [(gender, category), ...])] of a session, deterministic from the seed."""
  rng = np.random.default_rng([seed, 2, session])
  impro, script = _dialog_names(session)
  plan = {name: [] for name in impro + [script]}
  for gender in 'FM':
    labels = [c for c, k in impro_counts.items() for _ in range(k)]
    for i, c in enumerate(rng.permutation(labels)):
      plan[impro[i % len(impro)]].append((gender, str(c)))
    for c in [c for c, k in script_counts.items() for _ in range(k)]:
      plan[script].append((gender, c))
  return [(name, [items[j] for j in rng.permutation(len(items))])
          for name, items in plan.items()]


def _turn_line(start: float, duration: float, utt_id: str, category: str,
               vad: Sequence[float]) -> str:
  """An EmoEvaluation summary line: '[start - end]<TAB>utt_id<TAB>category<TAB>[V, A, D]'."""
  return (f'[{start:.4f} - {start + duration:.4f}]\t{utt_id}\t{category}\t'
          f'[{vad[0]:.4f}, {vad[1]:.4f}, {vad[2]:.4f}]')


def _write_dialog(wav_dir: str, eval_path: str, rng_key: Sequence[int], dialog: str,
                  items: Sequence[tuple[str, str]], speakers: dict,
                  durations: tuple[float, float], break_one: bool) -> Optional[str]:
  """Writes one dialog's wavs and its EmoEvaluation file.

  Args:
    wav_dir: the dialog's wav directory (existing).
    eval_path: path of its EmoEvaluation .txt file.
    rng_key: utterance k is drawn from default_rng([*rng_key, k]).
    dialog: the dialog name; items: [(gender, category)] in turn order.
    speakers: {gender: `speech.speaker_params`}.
    durations: (min, max) utterance duration in seconds.
    break_one: write the first improvised 'neu' utterance of the F speaker unreadable.

  Returns:
    The path of the unreadable wav, or None if none was written.
  """
  lines = ['% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]', '']
  numbers, clock, broken = {'F': 0, 'M': 0}, 0.0, None
  for k, (gender, category) in enumerate(items):
    rng = np.random.default_rng([*rng_key, k])
    utt_id = f'{dialog}_{gender}{numbers[gender]:03d}'
    numbers[gender] += 1
    duration = round(float(rng.uniform(durations[0], durations[1])), 2)
    vad = _draw_vad(rng, category)
    clock += round(float(rng.uniform(0.2, 2.0)), 4)
    lines.append(_turn_line(clock, duration, utt_id, category, vad))
    lines += _annotator_lines(rng, category) + ['']
    clock += duration
    path = os.path.join(wav_dir, utt_id + '.wav')
    if (break_one and broken is None and 'impro' in dialog and gender == 'F'
        and category == 'neu'):
      with open(path, 'wb') as f:  # a truncated RIFF header followed by garbage
        f.write(b'RIFF\x24\x00\x00\x00WAVEfmt ' + rng.bytes(13))
      broken = path
    else:
      wave = speech.synthesize(rng, duration, speakers[gender], category, vad)
      sf.write(path, wave, speech.SAMPLE_RATE, subtype='PCM_16', format='WAV')
  with open(eval_path, 'w', encoding='utf-8', newline='\n') as f:
    f.write('\n'.join(lines) + '\n')
  return broken


def _write_session(tmp: str, seed: int, session: int, impro_counts: dict, script_counts: dict,
                   durations: tuple[float, float], break_one: bool
                   ) -> tuple[Optional[str], int]:
  """Writes Session<session> under `tmp`; (path of the unreadable wav or None, utterances)."""
  speakers = {g: speech.speaker_params(seed, session, g) for g in 'FM'}
  eval_dir = os.path.join(tmp, f'Session{session}', 'dialog', 'EmoEvaluation')
  os.makedirs(eval_dir)
  unreadable, total = None, 0
  for dialog_index, (dialog, items) in enumerate(
      _session_plan(seed, session, impro_counts, script_counts)):
    wav_dir = os.path.join(tmp, f'Session{session}', 'sentences', 'wav', dialog)
    os.makedirs(wav_dir)
    broken = _write_dialog(wav_dir, os.path.join(eval_dir, dialog + '.txt'),
                           [seed, 3, session, dialog_index], dialog, items, speakers,
                           durations, break_one and unreadable is None)
    if broken is not None:
      unreadable = broken
    total += len(items)
  return unreadable, total


def _publish(tmp: str, final: str, params: dict) -> None:
  """Writes the marker into `tmp`, then renames it to `final` (replacing any old corpus)."""
  with open(os.path.join(tmp, MARKER), 'w') as f:
    json.dump(params, f, indent=1, sort_keys=True)
  shutil.rmtree(final, ignore_errors=True)
  os.rename(tmp, final)


def write_corpus(root: str, seed: int = 0, sessions: int = 5,
                 impro_counts: Optional[dict] = None, script_counts: Optional[dict] = None,
                 min_duration: float = 1.5, max_duration: float = 5.0) -> dict:
  """Writes the corpus under `root`/IEMOCAP_full_release (atomically: tmp dir, then rename).

  Args:
    root: parent directory; it is created if needed. An existing complete corpus is replaced.
    seed: everything (audio, labels, names) is a deterministic function of it.
    sessions: number of sessions (2 speakers each).
    impro_counts / script_counts: utterances per speaker and category (defaults: module
      constants IMPRO_COUNTS, SCRIPT_COUNTS).
    min_duration / max_duration: utterance durations are uniform in this range (seconds).

  Returns:
    {'root': release dir, 'utterances': total, 'unreadable': path of the broken wav}.
  """
  impro_counts = dict(IMPRO_COUNTS if impro_counts is None else impro_counts)
  script_counts = dict(SCRIPT_COUNTS if script_counts is None else script_counts)
  root = os.path.abspath(root)
  os.makedirs(root, exist_ok=True)
  tmp = os.path.join(root, f'.tmp-{os.getpid()}')
  shutil.rmtree(tmp, ignore_errors=True)
  broken_session = 2 if sessions >= 2 else 1
  unreadable, total = None, 0
  for session in range(1, sessions + 1):
    broken, count = _write_session(tmp, seed, session, impro_counts, script_counts,
                                   (min_duration, max_duration),
                                   unreadable is None and session == broken_session)
    if broken is not None:
      unreadable = os.path.join(root, RELEASE_DIR, os.path.relpath(broken, tmp))
    total += count
  params = {'version': VERSION, 'seed': seed, 'sessions': sessions,
            'impro_counts': impro_counts, 'script_counts': script_counts,
            'durations': [min_duration, max_duration], 'utterances': total,
            'unreadable': os.path.relpath(unreadable, os.path.join(root, RELEASE_DIR))}
  final = os.path.join(root, RELEASE_DIR)
  _publish(tmp, final, params)
  return {'root': final, 'utterances': total, 'unreadable': unreadable}


class SyntheticCorpusError(errors.InputError):
  """A synthetic corpus that cannot be used: another seed or version already in the
  directory, or no place to write it (neither data.root nor a workdir). A ValueError too."""


def ensure_corpus(root: str, seed: int = 0) -> str:
  """The release dir of the synthetic corpus under `root`, written first if absent.

  A complete corpus (its marker file present, same seed and version) is reused. A release dir
  without a marker is taken as a corpus the user provides and returned as is.
  """
  final = os.path.join(os.path.abspath(root), RELEASE_DIR)
  marker = os.path.join(final, MARKER)
  if os.path.isdir(final):
    if not os.path.exists(marker):
      return final
    with open(marker) as f:
      params = json.load(f)
    if params.get('seed') == seed and params.get('version') == VERSION:
      return final
    raise SyntheticCorpusError(f'{final} holds a synthetic corpus of seed {params.get("seed")} '
                     f'(version {params.get("version")}), not seed {seed} (version {VERSION}); '
                     'use another directory or delete it')
  return write_corpus(root, seed=seed)['root']


def unreadable_on_purpose(path: str) -> bool:
  """Whether `path` is the wav that a synthetic corpus writes unreadable on purpose (so that
  the feature store's skip report has something to list): the one its marker file names."""
  path = os.path.abspath(path)
  directory = os.path.dirname(path)
  while True:
    if os.path.basename(directory) == RELEASE_DIR:
      try:
        with open(os.path.join(directory, MARKER), encoding='utf-8') as f:
          broken = json.load(f).get('unreadable')
      except (OSError, ValueError, AttributeError):
        return False
      return isinstance(broken, str) and os.path.normpath(
          os.path.join(directory, broken)) == os.path.normpath(path)
    parent = os.path.dirname(directory)
    if parent == directory:
      return False
    directory = parent


def read(data: ml_collections.ConfigDict, workdir: Optional[str] = None
         ) -> tuple[list[Utterance], list[Problem]]:
  """The corpus reader of kind 'synthetic' (see `mmtl_jax.data.corpus`).

  The corpus lives in data.root, or else <workdir>/synthetic_corpus; it is written there first
  (deterministically from data.synthetic.seed) unless already complete, then read with the
  IEMOCAP reader, so the same code path runs as on the real corpus.
  """
  root = data.root or (os.path.join(workdir, 'synthetic_corpus') if workdir else '')
  if not root:
    raise SyntheticCorpusError("data.kind='synthetic' needs config.data.root or a workdir "
                     '(the corpus is then written to <workdir>/synthetic_corpus)')
  if not os.path.isdir(os.path.join(os.path.abspath(root), RELEASE_DIR)):  # a silent minute
    progress.line(f'writing the synthetic corpus (seed {int(data.synthetic.seed)}) to '
                  f'{os.path.join(os.path.abspath(root), RELEASE_DIR)}')
  root = ensure_corpus(root, seed=int(data.synthetic.seed))
  return iemocap.read_iemocap(data, root=root)


__all__ = [
    'CATEGORY_NAMES', 'ensure_corpus', 'IMPRO_COUNTS', 'IMPRO_DIALOGS', 'MARKER', 'read',
    'SCRIPT_COUNTS', 'SyntheticCorpusError', 'unreadable_on_purpose', 'VAD_MEAN', 'VAD_SD',
    'VERSION', 'write_corpus',
]
