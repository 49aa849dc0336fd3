"""Spectrogram segments: bins, segmentation, decoding at any rate / channel count."""

import numpy as np
import pytest
import soundfile as sf

from mmtl_jax.configs import base
from mmtl_jax.data import features


def paper_features(**overrides):
  c = base.get_config().features
  for k, v in overrides.items():
    c[k] = v
  return c


def test_paper_settings_give_200_bins_of_20_hz():
  assert features.n_bins(paper_features()) == 200


def test_sine_lands_in_its_bin():
  cfg = paper_features(n_frames=50, normalise='none')
  t = np.arange(16000) / 16000
  out = features.waveform_features(np.sin(2 * np.pi * 1000 * t).astype(np.float32), cfg)
  assert out.shape == (1, 50, 200) and out.dtype == np.float32
  assert np.all(out[0, 5:45].argmax(axis=1) == 50)  # 1000 Hz / 20 Hz per bin


def test_segmentation_into_equal_pieces_and_padding():
  cfg = paper_features(n_frames=300)
  sr = cfg.sample_rate
  rng = np.random.default_rng(0)
  for seconds, pieces in ((2.0, 1), (3.0, 1), (3.01, 2), (7.5, 3), (9.0, 3)):
    wave = rng.normal(0, 0.1, int(seconds * sr)).astype(np.float32)
    parts = features.split_segments(wave, sr, cfg.max_segment_s)
    assert len(parts) == pieces
    assert max(len(p) for p in parts) <= 3 * sr
    assert max(len(p) for p in parts) - min(len(p) for p in parts) <= 1
  out, lengths = features.waveform_segments(rng.normal(0, 0.1, sr).astype(np.float32), cfg)
  assert out.shape == (1, 300, 200)
  assert lengths.tolist() == [101] and lengths.dtype == np.int32
  assert np.all(out[0, 101:] == 0)  # 1 s = 101 frames, then zero padding
  assert np.all(out[0, 100] != 0)
  seven = rng.normal(0, 0.1, 7 * sr).astype(np.float32)
  _, lengths = features.waveform_segments(seven, cfg)  # 3 pieces of 2.33 s = 234 frames
  assert lengths.tolist() == [234, 234, 234]
  _, lengths = features.waveform_segments(seven, paper_features(n_frames=200))  # cut at 200
  assert lengths.tolist() == [200, 200, 200]
  valid = out[0, :101]
  assert abs(valid.mean()) < 1e-4 and abs(valid.std() - 1) < 1e-3  # per-segment normalised


def test_file_features_resample_and_downmix(tmp_path):
  cfg = paper_features(n_frames=60, normalise='none')
  t = np.arange(22050) / 22050
  tone = 0.5 * np.sin(2 * np.pi * 500 * t)
  path = str(tmp_path / 'stereo.wav')
  sf.write(path, np.stack([tone, tone], axis=1), 22050, subtype='PCM_16')
  wave = features.load_audio(path, 16000)
  assert wave.ndim == 1 and abs(len(wave) - 16000) <= 1
  out = features.file_features(path, cfg)
  assert out.shape == (1, 60, 200)
  assert np.all(out[0, 5:55].argmax(axis=1) == 25)


def test_bad_input():
  with pytest.raises(ValueError, match='non-empty mono'):
    features.waveform_features(np.zeros(0, np.float32), paper_features())
  with pytest.raises(ValueError, match='exceeds n_fft'):
    features.waveform_features(np.zeros(1000, np.float32), paper_features(win_ms=200.0))
