"""Cross-validation folds (section 3.1.2) and the per-speaker class weights (section 3.1.3).

Schemes:
  'session' (IEMOCAP): 5 leave-one-session-out folds. Speakers are named <session><gender>
    ('Ses01F'); of the held-out session, the speaker of gender config.folds.dev_gender is dev
    and the other is test; the 8 speakers of the other sessions are the training tasks.
    folds.swap=True appends the 5 folds with dev and test swapped (folds 5-9), so each of the
    10 speakers is tested once; fold i < 5 is the same fold with or without swap.
  'speaker' (e.g. EmoDB): with speakers in sorted order s_0..s_{n-1}, fold i tests s_i, uses
    the next speaker s_{(i+1) mod n} as dev and trains on the rest.
config.folds.which (indices) selects a subset; () = all.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Sequence

import ml_collections
import numpy as np

from mmtl_jax.run import errors


class FoldsError(errors.InputError):
  """config.folds that the corpus' speakers cannot satisfy (a scheme, fold index or speaker
  count); the message names the field and what to change. A ValueError too."""


@dataclasses.dataclass(frozen=True)
class Fold:
  index: int
  name: str
  train_speakers: tuple[str, ...]
  dev_speaker: str
  test_speaker: str


def _speaker_names(speakers_or_store: Any) -> list[str]:
  names = getattr(speakers_or_store, 'speakers', speakers_or_store)
  return sorted(set(names))


def _session_folds(speakers: list[str], dev_gender: str, swap: bool) -> list[Fold]:
  sessions: dict[str, dict[str, str]] = {}
  for s in speakers:
    m = re.match(r'^(.*\D)?(\d+)([FM])$', s)
    if not m:
      raise FoldsError(f"folds.scheme='session' needs speakers named <session><F|M> like "
                       f"'Ses01F'; got {s!r}, config.folds.scheme, use folds.scheme='speaker'")
    sessions.setdefault(s[:-1], {})[s[-1]] = s
  if dev_gender not in ('F', 'M'):
    raise FoldsError(f"folds.dev_gender must be 'F' or 'M', got {dev_gender!r}, "
                     "config.folds.dev_gender, use 'F' or 'M'")
  other = 'M' if dev_gender == 'F' else 'F'
  folds = []
  for flip in ((False, True) if swap else (False,)):
    for session, by_gender in sorted(sessions.items()):
      if set(by_gender) != {'F', 'M'}:
        raise FoldsError(f'session {session} has speakers {sorted(by_gender.values())}; '
                         'the session scheme needs one F and one M speaker per session, '
                         "config.folds.scheme, use folds.scheme='speaker'")
      dev, test = by_gender[dev_gender], by_gender[other]
      if flip:
        dev, test = test, dev
      train = tuple(s for s in speakers if s not in (dev, test))
      folds.append(Fold(len(folds), f'{session}-test{test}', train, dev, test))
  return folds


def _speaker_folds(speakers: list[str]) -> list[Fold]:
  if len(speakers) < 3:
    raise FoldsError(f'the speaker scheme needs at least 3 speakers (train, dev, test), the '
                     f'corpus has {len(speakers)}: {speakers}, config.folds.scheme, add '
                     'speakers to the corpus (or lower its min_utterances_per_speaker)')
  folds = []
  for i, test in enumerate(speakers):
    dev = speakers[(i + 1) % len(speakers)]
    train = tuple(s for s in speakers if s not in (dev, test))
    folds.append(Fold(i, f'test{test}', train, dev, test))
  return folds


def make_folds(speakers_or_store: Any, config: ml_collections.ConfigDict) -> list[Fold]:
  """Folds of config.folds over a FeatureStore (its .speakers) or a sequence of names."""
  speakers = _speaker_names(speakers_or_store)
  scheme = config.folds.scheme
  if scheme == 'session':
    folds = _session_folds(speakers, config.folds.dev_gender, config.folds.swap)
  elif scheme == 'speaker':
    folds = _speaker_folds(speakers)
  else:
    raise FoldsError(f"folds.scheme {scheme!r}, config.folds.scheme, use 'session' or "
                     "'speaker'")
  which = tuple(config.folds.which)
  bad = [i for i in which if not 0 <= i < len(folds)]
  if bad:
    raise FoldsError(f'folds.which {which}: indices {bad} outside 0..{len(folds) - 1} (the '
                     f'corpus gives {len(folds)} folds), config.folds.which, give indices '
                     f'0..{len(folds) - 1} or () for all')
  return [folds[i] for i in which] if which else folds


def class_weights(labels: Sequence[int] | np.ndarray, num_classes: int) -> np.ndarray:
  """float32 [num_classes]: the paper's w_c = N / N_c, normalised by max_c w_c.

  A class absent from `labels` gets weight 0: it contributes no loss, and giving it N / 0
  would be undefined. All zeros if `labels` is empty.
  """
  labels = np.asarray(labels, np.int64).reshape(-1)
  if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
    raise ValueError(f'labels must lie in [0, {num_classes}), got range '
                     f'[{labels.min()}, {labels.max()}]')
  counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
  weights = np.where(counts > 0, labels.size / np.maximum(counts, 1), 0.0)
  peak = weights.max() if weights.size else 0.0
  return (weights / peak if peak > 0 else weights).astype(np.float32)


def speaker_class_weights(store: Any, speakers: Sequence[str], config: ml_collections.ConfigDict
                          ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """{speaker: (target weights [C], aux weights [k, C])}, C = config.model.num_outputs.

  config.folds.class_weights: 'speaker' (the paper: N_i, N_{i,c} counted over speaker i's
  segments) or 'pooled' (the reference code: counted over all of `speakers` together, the
  same weights for every speaker).
  """
  num = config.model.num_outputs
  mode = config.folds.class_weights
  if mode not in ('speaker', 'pooled'):
    raise FoldsError(f"folds.class_weights {mode!r}, config.folds.class_weights, use "
                     "'speaker' or 'pooled'")

  def weights(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    target = class_weights(store.label[rows], num)
    aux = np.stack([class_weights(store.aux[rows, j], num)
                    for j in range(store.aux.shape[1])]) if store.aux.shape[1] else \
        np.zeros((0, num), np.float32)
    return target, aux

  if mode == 'pooled':
    pooled = weights(store.rows(speakers))
    return {s: pooled for s in speakers}
  return {s: weights(store.rows(s)) for s in speakers}


__all__ = ['class_weights', 'Fold', 'FoldsError', 'make_folds', 'speaker_class_weights']
