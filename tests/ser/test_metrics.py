"""Tests of mmtl_jax.ser.metrics against hand-computed values."""

import numpy as np
import pytest

from mmtl_jax.ser import metrics


def test_ua_wa_balanced_equal():
  y_true = [0, 0, 1, 1]
  y_pred = [0, 1, 1, 1]
  # recalls: class 0 1/2, class 1 2/2 -> UA 0.75; WA 3/4.
  assert metrics.unweighted_accuracy(y_true, y_pred, 2) == pytest.approx(0.75)
  assert metrics.weighted_accuracy(y_true, y_pred, 2) == pytest.approx(0.75)


def test_ua_differs_from_wa_when_imbalanced():
  # 8 neutral (7 right), 2 happy (0 right): WA = 7/10, UA = (7/8 + 0) / 2.
  y_true = [0] * 8 + [1] * 2
  y_pred = [0] * 7 + [1] + [0, 0]
  assert metrics.weighted_accuracy(y_true, y_pred, 2) == pytest.approx(0.7)
  assert metrics.unweighted_accuracy(y_true, y_pred, 2) == pytest.approx(7 / 16)


def test_ua_ignores_classes_absent_from_y_true():
  # Class 2 never occurs in y_true; its mistaken prediction still lowers class 0's recall.
  y_true = [0, 0, 1]
  y_pred = [0, 2, 1]
  assert metrics.unweighted_accuracy(y_true, y_pred, 3) == pytest.approx((0.5 + 1.0) / 2)
  recall = metrics.per_class_recall(y_true, y_pred, 3)
  np.testing.assert_allclose(recall[:2], [0.5, 1.0])
  assert np.isnan(recall[2])


def test_confusion_matrix_rows_are_true_labels():
  y_true = [0, 0, 1, 2, 2, 2]
  y_pred = [0, 1, 1, 2, 0, 2]
  expected = np.array([[1, 1, 0], [0, 1, 0], [1, 0, 2]])
  cm = metrics.confusion_matrix(y_true, y_pred, 3)
  np.testing.assert_array_equal(cm, expected)
  assert np.issubdtype(cm.dtype, np.integer)
  np.testing.assert_allclose(metrics.row_normalise(cm),
                             [[0.5, 0.5, 0], [0, 1, 0], [1 / 3, 0, 2 / 3]])


def test_utterance_posteriors_average_segments_order_independent():
  probs = np.array([
      [0.9, 0.1],  # utt 7
      [0.2, 0.8],  # utt 3
      [0.3, 0.7],  # utt 7
      [0.6, 0.4],  # utt 3
      [0.4, 0.6],  # utt 3
  ])
  ids = np.array([7, 3, 7, 3, 3])
  utt_ids, utt_probs = metrics.utterance_posteriors(probs, ids)
  np.testing.assert_array_equal(utt_ids, [3, 7])
  np.testing.assert_allclose(utt_probs, [[0.4, 0.6], [0.6, 0.4]])
  np.testing.assert_array_equal(metrics.predictions(utt_probs), [1, 0])

  perm = np.random.default_rng(0).permutation(len(ids))
  utt_ids2, utt_probs2 = metrics.utterance_posteriors(probs[perm], ids[perm])
  np.testing.assert_array_equal(utt_ids2, utt_ids)
  np.testing.assert_allclose(utt_probs2, utt_probs)


def test_mean_of_posteriors_not_majority_vote():
  # Two weak votes for class 0, one confident vote for class 1: the mean picks class 1.
  probs = np.array([[0.55, 0.45], [0.55, 0.45], [0.0, 1.0]])
  _, utt_probs = metrics.utterance_posteriors(probs, [0, 0, 0])
  assert metrics.predictions(utt_probs)[0] == 1


def test_utterance_predictions_with_string_ids():
  probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3]])
  utt_ids, y_true, y_pred = metrics.utterance_predictions(
      probs, ['b', 'a', 'b'], [1, 0, 1])
  np.testing.assert_array_equal(utt_ids, ['a', 'b'])
  np.testing.assert_array_equal(y_true, [0, 1])
  np.testing.assert_array_equal(y_pred, [1, 0])


def test_inconsistent_segment_labels_rejected():
  with pytest.raises(ValueError, match="utterance 'u1'"):
    metrics.utterance_labels([0, 1], ['u1', 'u1'])


@pytest.mark.parametrize('probs, ids, match', [
    (np.full((3, 2), 0.5), [0, 1], 'utt_index'),
    (np.full((3,), 0.5), [0, 1, 2], r'\[N_seg, C\]'),
    (np.array([[2.0, -1.0]]), [0], 'softmax'),
    (np.array([[np.nan, 1.0]]), [0], 'NaN'),
    (np.zeros((0, 4)), np.zeros((0,), int), 'empty'),
])
def test_utterance_posteriors_bad_input(probs, ids, match):
  with pytest.raises(ValueError, match=match):
    metrics.utterance_posteriors(probs, ids)


def test_bad_labels_rejected():
  with pytest.raises(ValueError, match=r'outside \[0, 2\).*position 1: 2'):
    metrics.confusion_matrix([0, 2], [0, 1], 2)
  with pytest.raises(ValueError, match='y_pred.*outside'):
    metrics.weighted_accuracy([0, 1], [0, -1], 2)
  with pytest.raises(ValueError, match='differ in length'):
    metrics.unweighted_accuracy([0, 1, 1], [0, 1], 2)
  with pytest.raises(TypeError, match='integer'):
    metrics.confusion_matrix([0.0, 1.5], [0, 1], 2)
  with pytest.raises(ValueError, match='empty'):
    metrics.weighted_accuracy([], [], 2)


def test_summarise():
  y_true = [0] * 8 + [1] * 2
  y_pred = [0] * 7 + [1] + [0, 0]
  s = metrics.summarise(y_true, y_pred, ['neu', 'hap', 'sad'])
  assert s['UA'] == pytest.approx(7 / 16)
  assert s['WA'] == pytest.approx(0.7)
  assert s['n'] == 10
  assert s['support'] == [8, 2, 0]
  assert s['confusion'] == [[7, 1, 0], [2, 0, 0], [0, 0, 0]]
  assert s['confusion_normalised'][0] == pytest.approx([7 / 8, 1 / 8, 0])
  assert s['per_class_recall'] == {'neu': pytest.approx(7 / 8), 'hap': 0.0, 'sad': None}
  with pytest.raises(ValueError, match='unique'):
    metrics.summarise(y_true, y_pred, ['a', 'a'])


def test_accepts_jax_arrays():
  jnp = pytest.importorskip('jax.numpy')
  assert metrics.weighted_accuracy(jnp.array([0, 1]), jnp.array([0, 0]), 2) == 0.5
