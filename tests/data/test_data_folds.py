"""Folds of section 3.1.2 and the class weights of section 3.1.3."""

import numpy as np
import pytest

from mmtl_jax.configs import base
from mmtl_jax.data import folds

IEMOCAP_SPEAKERS = [f'Ses0{s}{g}' for s in range(1, 6) for g in 'MF']


def config(**overrides):
  c = base.get_config()
  for k, v in overrides.items():
    c.folds[k] = v
  return c


def test_session_folds():
  fs = folds.make_folds(IEMOCAP_SPEAKERS, config())
  assert len(fs) == 5
  for i, f in enumerate(fs):
    assert f.index == i
    assert (f.dev_speaker, f.test_speaker) == (f'Ses0{i + 1}F', f'Ses0{i + 1}M')
    assert len(f.train_speakers) == 8
    assert set(f.train_speakers) | {f.dev_speaker, f.test_speaker} == set(IEMOCAP_SPEAKERS)
  fs = folds.make_folds(IEMOCAP_SPEAKERS, config(dev_gender='M'))
  assert fs[0].dev_speaker == 'Ses01M' and fs[0].test_speaker == 'Ses01F'


def test_swap_tests_every_speaker_once_and_which_selects():
  fs = folds.make_folds(IEMOCAP_SPEAKERS, config(swap=True))
  assert len(fs) == 10 and sorted(f.test_speaker for f in fs) == sorted(IEMOCAP_SPEAKERS)
  assert fs[:5] == folds.make_folds(IEMOCAP_SPEAKERS, config())
  assert [f.index for f in folds.make_folds(IEMOCAP_SPEAKERS, config(swap=True, which=(7, 2)))] \
      == [7, 2]
  with pytest.raises(ValueError, match='outside 0..4'):
    folds.make_folds(IEMOCAP_SPEAKERS, config(which=(5,)))


def test_session_scheme_errors():
  with pytest.raises(ValueError, match='one F and one M'):
    folds.make_folds(IEMOCAP_SPEAKERS[:-1], config())
  with pytest.raises(ValueError, match="scheme='speaker'"):
    folds.make_folds(['03', '08', '09'], config())


def test_speaker_folds():
  speakers = ['16', '03', '08', '09']
  fs = folds.make_folds(speakers, config(scheme='speaker'))
  assert [(f.test_speaker, f.dev_speaker) for f in fs] == [
      ('03', '08'), ('08', '09'), ('09', '16'), ('16', '03')]
  assert fs[1].train_speakers == ('03', '16')


def test_class_weights_follow_the_formula():
  labels = [0] * 6 + [1] * 3 + [2] * 1  # N = 10; N_c = 6, 3, 1, 0
  w = folds.class_weights(labels, 4)
  raw = np.array([10 / 6, 10 / 3, 10 / 1, 0.0])
  np.testing.assert_allclose(w, raw / raw.max(), rtol=1e-6)
  assert w.dtype == np.float32 and w[2] == 1.0 and w[3] == 0.0
  np.testing.assert_array_equal(folds.class_weights([], 3), np.zeros(3, np.float32))
  with pytest.raises(ValueError, match=r'\[0, 4\)'):
    folds.class_weights([4], 4)


def test_iemocap_config_tests_every_speaker_and_the_demo_keeps_five_folds():
  from mmtl_jax.configs import demo, iemocap  # pylint: disable=g-import-not-at-top
  fs = folds.make_folds(IEMOCAP_SPEAKERS, iemocap.get_config())
  assert len(fs) == 10
  assert sorted(f.test_speaker for f in fs) == sorted(IEMOCAP_SPEAKERS)
  assert sorted(f.dev_speaker for f in fs) == sorted(IEMOCAP_SPEAKERS)
  for f in fs:  # dev and test are the two speakers of one session; the other 8 train
    assert f.dev_speaker[:-1] == f.test_speaker[:-1] and f.dev_speaker != f.test_speaker
    assert len(f.train_speakers) == 8
  assert len({f.name for f in fs}) == 10  # distinct fold directories
  # The synthetic demo keeps its 5 session folds (dev F, test M).
  assert [f.test_speaker for f in folds.make_folds(IEMOCAP_SPEAKERS, demo.get_config())] == [
      f'Ses0{s}M' for s in range(1, 6)]


def test_emodb_config_is_leave_one_speaker_out():
  from mmtl_jax.configs import emodb  # pylint: disable=g-import-not-at-top
  speakers = ['03', '08', '09', '10', '11', '12', '13', '14', '15', '16']
  fs = folds.make_folds(speakers, emodb.get_config())
  assert [f.test_speaker for f in fs] == speakers  # each speaker tested once
  assert [f.dev_speaker for f in fs] == speakers[1:] + speakers[:1]  # the next one is dev
  assert all(set(f.train_speakers) == set(speakers) - {f.test_speaker, f.dev_speaker}
             for f in fs)
