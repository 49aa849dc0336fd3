"""Per-speaker task batches for meta-training (host numpy).

A task is one training speaker (section 2). `TaskSampler.batch(step)` returns, for T tasks,
B = config.train.segments_per_speaker segments each, C = config.model.num_outputs and
k = len(config.data.aux_tasks):

  'x'             float32 [T, B, n_frames, n_bins]  spectrogram segments
  'lengths'       int32   [T, B]                    valid (unpadded) frames of each segment
  'target'        int32   [T, B]                    emotion class
  'aux'           int32   [T, B, k]                 auxiliary bin indices
  'target_weight' float32 [T, C]                    the speaker's class weights, emotion
  'aux_weight'    float32 [T, k, C]                 ... and for each auxiliary task

These names and shapes are a contract with the meta-learning code. Segments of task t at step
s are drawn by np.random.default_rng([seed, s, t]) (without replacement when the speaker has
at least B segments, with replacement otherwise), so a resumed run draws the same batches as
an uninterrupted one.
"""

from __future__ import annotations

from typing import Any, Sequence

import ml_collections
import numpy as np

from mmtl_jax.data import folds as folds_lib


class TaskSampler:
  """Draws per-speaker task batches from a FeatureStore."""

  def __init__(self, store: Any, speakers: Sequence[str], config: ml_collections.ConfigDict,
               seed: int):
    """Args: store (FeatureStore), speakers (task order), config, seed (batch randomness)."""
    if not speakers:
      raise ValueError('TaskSampler needs at least one speaker')
    self.store = store
    self.speakers = tuple(speakers)
    self.seed = int(seed)
    self.batch_size = int(config.train.segments_per_speaker)
    num = config.model.num_outputs
    for name, values in (('label', store.label), ('aux', store.aux)):
      if values.size and values.max() >= num:
        raise ValueError(f'store {name} index {values.max()} >= model.num_outputs {num}')
    self.rows = [store.rows(s) for s in self.speakers]
    for s, rows in zip(self.speakers, self.rows):
      if rows.size == 0:
        raise ValueError(f'speaker {s!r} has no segments in the store')
    weights = folds_lib.speaker_class_weights(store, self.speakers, config)
    self.target_weight = np.stack([weights[s][0] for s in self.speakers])
    self.aux_weight = np.stack([weights[s][1] for s in self.speakers])

  @property
  def num_tasks(self) -> int:
    return len(self.speakers)

  def indices(self, step: int) -> np.ndarray:
    """int64 [T, B] store rows of the batch at `step`."""
    out = np.empty((self.num_tasks, self.batch_size), np.int64)
    for t, rows in enumerate(self.rows):
      rng = np.random.default_rng([self.seed, int(step), t])
      out[t] = rng.choice(rows, self.batch_size, replace=rows.size < self.batch_size)
    return out

  def batch(self, step: int) -> dict[str, np.ndarray]:
    """The batch of `step` (see module docstring for keys and shapes)."""
    idx = self.indices(step)
    flat = idx.reshape(-1)
    order = np.argsort(flat, kind='stable')  # sorted reads from the memory-mapped features
    x = np.empty((flat.size,) + self.store.features.shape[1:], np.float32)
    x[order] = self.store.features[flat[order]]
    shape = idx.shape
    return {
        'x': x.reshape(shape + x.shape[1:]),
        'lengths': self.store.length[idx].astype(np.int32),
        'target': self.store.label[idx].astype(np.int32),
        'aux': self.store.aux[idx].astype(np.int32).reshape(shape + (self.store.aux.shape[1],)),
        'target_weight': self.target_weight.copy(),
        'aux_weight': self.aux_weight.copy(),
    }


__all__ = ['TaskSampler']
