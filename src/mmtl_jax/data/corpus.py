"""The corpus contract: one `Utterance` per labelled recording, and `read_corpus`.

Every corpus reader (IEMOCAP layout, CSV manifest, synthetic) returns the same thing: a list of
`Utterance` and a list of problems. Readers never open the audio: a missing or unreadable wav
is found, and recorded as skipped, by the feature store.
"""

from __future__ import annotations

import bisect
import dataclasses
import os
from typing import Optional, Sequence

import ml_collections

Problem = dict  # {'path': str, 'reason': str}: a non-fatal finding of a reader.


@dataclasses.dataclass(frozen=True)
class Utterance:
  """One labelled recording.

  Attributes:
    utt_id: unique id within the corpus, e.g. 'Ses01F_impro01_M003'.
    path: absolute path of the wav file (it may not exist; the feature store checks).
    speaker: speaker name, e.g. 'Ses01M' (IEMOCAP: session + gender of the id's last field).
    session: IEMOCAP session number, None for corpora without sessions.
    dialog: dialog name, e.g. 'Ses01F_impro01' ('' where the corpus has none).
    label: class name, one of config.data.classes.
    aux: auxiliary label bin indices, in the order of config.data.aux_tasks.
    aux_raw: the raw auxiliary values in the same order (floats), or None if categorical.
  """
  utt_id: str
  path: str
  speaker: str
  session: Optional[int]
  dialog: str
  label: str
  aux: tuple[int, ...]
  aux_raw: Optional[tuple[float, ...]] = None


def bin_index(value: float, edges: Sequence[float], where: str) -> int:
  """Index of the bin [edges[i], edges[i+1]) holding `value`.

  A value on an inner edge goes to the upper bin. `where` ('file:line') names the input in the
  error raised for a value outside [edges[0], edges[-1]).
  """
  if not edges[0] <= value < edges[-1]:
    raise ValueError(f'{where}: value {value} outside [{edges[0]}, {edges[-1]}) '
                     f'(bin edges {tuple(edges)})')
  return bisect.bisect_right(edges, value) - 1


def read_corpus(config: ml_collections.ConfigDict,
                synthetic_dir: Optional[str] = None) -> tuple[list[Utterance], list[Problem]]:
  """Reads the corpus that config.data describes.

  Args:
    config: the full experiment config; config.data.kind picks the reader:
      'iemocap' (config.data.root = IEMOCAP_full_release or its parent directory),
      'synthetic' (the IEMOCAP-layout synthetic corpus; root = config.data.root if set, else
      `synthetic_dir`; written there deterministically once, reused when complete),
      'manifest' (CSV at config.data.manifest).
    synthetic_dir: where to write the synthetic corpus when config.data.root is empty,
      conventionally `<workdir>/synthetic_corpus`.

  Returns:
    (utterances sorted by (speaker, utt_id), problems as [{'path', 'reason'}]).
  """
  kind = config.data.kind
  if kind == 'iemocap':
    from mmtl_jax.data import iemocap
    utterances, problems = iemocap.read_iemocap(config.data)
  elif kind == 'synthetic':
    from mmtl_jax.data import iemocap, synthetic
    root = config.data.root or synthetic_dir
    if not root:
      raise ValueError("data.kind='synthetic' needs config.data.root or a synthetic_dir "
                       '(e.g. <workdir>/synthetic_corpus)')
    root = synthetic.ensure_corpus(root, seed=config.data.get('synthetic_seed', 0))
    utterances, problems = iemocap.read_iemocap(config.data, root=root)
  elif kind == 'manifest':
    from mmtl_jax.data import manifest
    utterances, problems = manifest.read_manifest(config.data)
  else:
    raise ValueError(f"unknown config.data.kind {kind!r}: 'iemocap' | 'synthetic' | 'manifest'")
  utterances = sorted(utterances, key=lambda u: (u.speaker, u.utt_id))
  seen = set()
  for u in utterances:
    if u.utt_id in seen:
      raise ValueError(f'duplicate utterance id {u.utt_id!r} ({u.path})')
    seen.add(u.utt_id)
  return utterances, problems


def absolute(path: str, base: str) -> str:
  """`path` made absolute against `base` (unless already absolute), normalised."""
  return os.path.normpath(path if os.path.isabs(path) else os.path.join(base, path))
