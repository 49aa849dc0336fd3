"""Speech emotion recognition metrics: utterance posteriors, UA, WA, confusion matrices.

Model-agnostic host-side numpy (jax arrays are accepted and converted). Everything here is a
pure function of its inputs.

Section 3.1.1 of Cai et al. (2020): an utterance's posterior is the mean of its segments'
posteriors and its prediction is the argmax. Section 3.1.2: UA is the mean of the per-class
accuracies (recalls) and WA is the plain accuracy.

Contract for UA: the mean runs over the classes PRESENT in ``y_true`` (at least one true
example). A class absent from a test speaker has no defined recall; counting it as 0 or 1
would move UA by 1/C for reasons that have nothing to do with the model. Predictions of an
absent class still count against the recall of the true class they were made for.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

ArrayLike = Any

# Segment posteriors must be probabilities (softmax outputs), not logits: the mean of logits
# is a different estimator. bfloat16/float16 softmax rows can sum to 1 +- ~1e-2.
_PROB_SUM_ATOL = 2e-2


def _as_labels(name: str, y: ArrayLike, num_classes: int | None = None) -> np.ndarray:
  """Returns `y` as a 1-D int64 array, checking dtype and range [0, num_classes)."""
  arr = np.asarray(y)
  if arr.ndim != 1:
    raise ValueError(f'{name} must be 1-D, got shape {arr.shape}.')
  if arr.size and not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_):
    raise TypeError(f'{name} must hold integer class indices, got dtype {arr.dtype}.')
  arr = arr.astype(np.int64)
  if num_classes is not None and arr.size:
    bad = (arr < 0) | (arr >= num_classes)
    if bad.any():
      first = int(np.flatnonzero(bad)[0])
      raise ValueError(
          f'{name} has {int(bad.sum())} label(s) outside [0, {num_classes}); '
          f'first at position {first}: {int(arr[first])}.')
  return arr


def _check_pair(y_true: ArrayLike, y_pred: ArrayLike,
                num_classes: int) -> tuple[np.ndarray, np.ndarray]:
  if int(num_classes) != num_classes or num_classes < 1:
    raise ValueError(f'num_classes must be a positive integer, got {num_classes!r}.')
  yt = _as_labels('y_true', y_true, num_classes)
  yp = _as_labels('y_pred', y_pred, num_classes)
  if yt.shape != yp.shape:
    raise ValueError(f'y_true and y_pred differ in length: {yt.shape[0]} vs {yp.shape[0]}.')
  if yt.size == 0:
    raise ValueError('y_true and y_pred are empty: no utterance to score.')
  return yt, yp


def utterance_posteriors(segment_probs: ArrayLike,
                         utt_index: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
  """Averages segment posteriors per utterance (section 3.1.1).

  Args:
    segment_probs: [N_seg, C] softmax probabilities of every segment (rows sum to 1).
      Logits are rejected (negative entries or rows not summing to 1).
    utt_index: [N_seg] utterance id of each segment (ints, or any sortable ids such as
      strings). Segments of one utterance may appear in any order and need not be
      contiguous.

  Returns:
    (utt_ids, probs): utt_ids [U] the sorted unique ids; probs [U, C] float64, row u the
    mean of the posteriors of the segments whose id is utt_ids[u]. The result does not
    depend on the order of the segments.

  Raises:
    ValueError: shape mismatch, empty input, non-finite values, or inputs that are not
      probabilities.
  """
  probs = np.asarray(segment_probs, dtype=np.float64)
  ids = np.asarray(utt_index)
  if probs.ndim != 2:
    raise ValueError(f'segment_probs must be [N_seg, C], got shape {probs.shape}.')
  if ids.ndim != 1 or ids.shape[0] != probs.shape[0]:
    raise ValueError(
        f'utt_index must be [N_seg] = [{probs.shape[0]}] to match segment_probs, '
        f'got shape {ids.shape}.')
  if probs.shape[0] == 0 or probs.shape[1] == 0:
    raise ValueError(f'segment_probs is empty (shape {probs.shape}).')
  if not np.isfinite(probs).all():
    raise ValueError('segment_probs contains NaN or inf.')
  sums = probs.sum(axis=1)
  if (probs < 0).any() or not np.allclose(sums, 1.0, atol=_PROB_SUM_ATOL):
    worst = int(np.argmax(np.abs(sums - 1.0)))
    raise ValueError(
        'segment_probs must be probabilities (apply softmax to the logits first): '
        f'min entry {probs.min():.4g}, row {worst} sums to {sums[worst]:.4g}.')
  utt_ids, inverse = np.unique(ids, return_inverse=True)
  inverse = inverse.reshape(-1)
  totals = np.zeros((utt_ids.shape[0], probs.shape[1]), dtype=np.float64)
  np.add.at(totals, inverse, probs)
  counts = np.bincount(inverse, minlength=utt_ids.shape[0]).astype(np.float64)
  return utt_ids, totals / counts[:, None]


def predictions(probs: ArrayLike) -> np.ndarray:
  """Argmax class of each row of `probs` [N, C] -> int64 [N] (ties: the lowest index)."""
  arr = np.asarray(probs)
  if arr.ndim != 2 or arr.shape[1] == 0:
    raise ValueError(f'probs must be [N, C] with C >= 1, got shape {arr.shape}.')
  return np.argmax(arr, axis=1).astype(np.int64)


def utterance_labels(segment_labels: ArrayLike, utt_index: ArrayLike) -> tuple[np.ndarray,
                                                                                np.ndarray]:
  """Collapses per-segment labels [N_seg] to per-utterance labels.

  Every segment inherits its utterance's label (section 3.1.1), so the segments of one
  utterance must agree; a disagreement means the segment -> utterance mapping is wrong.

  Returns:
    (utt_ids [U] sorted unique ids, labels [U] int64), aligned with `utterance_posteriors`.
  """
  labels = _as_labels('segment_labels', segment_labels)
  ids = np.asarray(utt_index)
  if ids.ndim != 1 or ids.shape[0] != labels.shape[0]:
    raise ValueError(
        f'utt_index must be [N_seg] = [{labels.shape[0]}] to match segment_labels, '
        f'got shape {ids.shape}.')
  if labels.size == 0:
    raise ValueError('segment_labels is empty.')
  utt_ids, first, inverse = np.unique(ids, return_index=True, return_inverse=True)
  per_utt = labels[first]
  clash = per_utt[inverse.reshape(-1)] != labels
  if clash.any():
    bad = utt_ids[inverse.reshape(-1)[np.flatnonzero(clash)[0]]]
    raise ValueError(f'Segments of utterance {bad.item()!r} carry different labels.')
  return utt_ids, per_utt


def utterance_predictions(segment_probs: ArrayLike, utt_index: ArrayLike,
                          segment_labels: ArrayLike) -> tuple[np.ndarray, np.ndarray,
                                                              np.ndarray]:
  """Segment posteriors + labels -> (utt_ids [U], y_true [U], y_pred [U]), all aligned."""
  utt_ids, probs = utterance_posteriors(segment_probs, utt_index)
  _, y_true = utterance_labels(segment_labels, utt_index)
  return utt_ids, y_true, predictions(probs)


def confusion_matrix(y_true: ArrayLike, y_pred: ArrayLike, num_classes: int) -> np.ndarray:
  """Counts [C, C] int64: entry (i, j) = number of examples of true class i predicted j."""
  yt, yp = _check_pair(y_true, y_pred, num_classes)
  return np.bincount(yt * num_classes + yp,
                     minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def per_class_recall_from_counts(counts: ArrayLike) -> np.ndarray:
  """Recall of each class from confusion counts [C, C] (rows true), float64 [C]; NaN where a
  class has no true example."""
  cm = np.asarray(counts, dtype=np.float64)
  if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
    raise ValueError(f'counts must be square [C, C], got shape {cm.shape}.')
  support = cm.sum(axis=1)
  recall = np.full(cm.shape[0], np.nan)
  np.divide(np.diag(cm), support, out=recall, where=support > 0)
  return recall


def per_class_recall(y_true: ArrayLike, y_pred: ArrayLike, num_classes: int) -> np.ndarray:
  """Recall of each class, float64 [C]; NaN for classes absent from `y_true`."""
  return per_class_recall_from_counts(confusion_matrix(y_true, y_pred, num_classes))


def unweighted_accuracy(y_true: ArrayLike, y_pred: ArrayLike, num_classes: int) -> float:
  """UA: mean per-class recall over the classes present in `y_true` (see module doc)."""
  return float(np.nanmean(per_class_recall(y_true, y_pred, num_classes)))


def weighted_accuracy(y_true: ArrayLike, y_pred: ArrayLike, num_classes: int) -> float:
  """WA: the fraction of examples predicted correctly (plain accuracy)."""
  yt, yp = _check_pair(y_true, y_pred, num_classes)
  return float(np.mean(yt == yp))


def row_normalise(counts: ArrayLike) -> np.ndarray:
  """Confusion counts [C, C] -> rows divided by their sums (rows of absent classes: 0)."""
  cm = np.asarray(counts, dtype=np.float64)
  if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
    raise ValueError(f'counts must be square [C, C], got shape {cm.shape}.')
  support = cm.sum(axis=1, keepdims=True)
  return np.divide(cm, support, out=np.zeros_like(cm), where=support > 0)


def summarise(y_true: ArrayLike, y_pred: ArrayLike,
              class_names: Sequence[str]) -> dict[str, Any]:
  """All utterance-level metrics of one test set, as JSON-able Python values.

  Args:
    y_true: [N] int true class indices in [0, C).
    y_pred: [N] int predicted class indices in [0, C).
    class_names: C names; their order is the class index order.

  Returns:
    {'UA': float, 'WA': float (fractions in [0, 1]), 'n': N,
     'classes': [C names], 'support': [C] ints,
     'confusion': [[C ints] x C] (rows true, columns predicted),
     'confusion_normalised': [[C floats] x C] (row-normalised; absent classes' rows are 0),
     'per_class_recall': {name: float, or None when the class is absent from y_true}}.
  """
  names = [str(n) for n in class_names]
  if len(set(names)) != len(names) or not names:
    raise ValueError(f'class_names must be non-empty and unique, got {names}.')
  num_classes = len(names)
  cm = confusion_matrix(y_true, y_pred, num_classes)
  recall = per_class_recall(y_true, y_pred, num_classes)
  return {
      'UA': float(np.nanmean(recall)),
      'WA': float(np.trace(cm) / cm.sum()),
      'n': int(cm.sum()),
      'classes': names,
      'support': [int(s) for s in cm.sum(axis=1)],
      'confusion': cm.tolist(),
      'confusion_normalised': row_normalise(cm).tolist(),
      'per_class_recall': {
          n: (None if np.isnan(r) else float(r)) for n, r in zip(names, recall)
      },
  }


__all__ = [
    'ArrayLike', 'confusion_matrix', 'per_class_recall', 'per_class_recall_from_counts',
    'predictions', 'row_normalise', 'summarise', 'unweighted_accuracy', 'utterance_labels',
    'utterance_posteriors', 'utterance_predictions', 'weighted_accuracy',
]
