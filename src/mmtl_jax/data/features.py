"""Log-power spectrogram segments of section 3.1.1.

An utterance longer than `max_segment_s` is cut into n = ceil(duration / max_segment_s) equal
pieces (so every piece is at most max_segment_s long); each piece becomes one segment:

  STFT (Hamming window of win_ms, hop hop_ms, DFT n_fft) -> bins with frequency < fmax
  (200 bins at 16 kHz / 800 / 4 kHz) -> log(power + log_floor) -> normalise -> pad with
  zeros or cut to n_frames.

Output: float32 [n_segments, n_frames, n_bins], time before frequency, and (from the
`*_segments` functions) int32 [n_segments] lengths: each segment's valid frames,
min(n_frames, STFT frames), so a model can ignore the zero padding after them.
"""

from __future__ import annotations

import math

import librosa
import ml_collections
import numpy as np
import soundfile as sf

# Bump when the computation changes: it is part of the feature store's cache key.
# 2: the store records each segment's valid frame count (lengths).
VERSION = 2


def n_bins(features: ml_collections.ConfigDict) -> int:
  """Number of DFT bins with frequency k * sample_rate / n_fft < fmax."""
  return min(int(math.ceil(features.fmax * features.n_fft / features.sample_rate)),
             features.n_fft // 2 + 1)


def load_audio(path: str, sample_rate: int) -> np.ndarray:
  """Mono float32 waveform [n_samples] of any audio file libsndfile reads, resampled.

  Channels are averaged; resampling is librosa's default (soxr, high quality). Decoding goes
  through soundfile directly, so an unreadable file raises soundfile's clear error rather
  than falling back to audioread.
  """
  wave, rate = sf.read(path, dtype='float32', always_2d=True)  # [n, channels]
  wave = wave.mean(axis=1)
  if rate != sample_rate:
    wave = librosa.resample(wave, orig_sr=rate, target_sr=sample_rate)
  return np.asarray(wave, np.float32)


def split_segments(wave: np.ndarray, sample_rate: int, max_segment_s: float) -> list[np.ndarray]:
  """`wave` [n] cut into ceil(n / max_len) equal pieces (lengths differ by at most 1 sample)."""
  max_len = int(round(max_segment_s * sample_rate))
  n = max(1, int(math.ceil(len(wave) / max_len)))
  return np.array_split(wave, n)


def segment_spectrogram(wave: np.ndarray, features: ml_collections.ConfigDict
                        ) -> tuple[np.ndarray, int]:
  """(float32 [n_frames, n_bins] log-power spectrogram of one segment, its valid frames).

  The valid frames are min(n_frames, STFT frames); the rows after them are zero padding.
  """
  sr = features.sample_rate
  hop = int(round(features.hop_ms * sr / 1000))
  win = int(round(features.win_ms * sr / 1000))
  if win > features.n_fft:
    raise ValueError(f'window {win} samples ({features.win_ms} ms) exceeds n_fft '
                     f'{features.n_fft}')
  spec = librosa.stft(np.asarray(wave, np.float32), n_fft=features.n_fft, hop_length=hop,
                      win_length=win, window='hamming', center=True, pad_mode='constant')
  power = np.abs(spec[:n_bins(features)]) ** 2
  logp = np.log(power + features.log_floor).T.astype(np.float32)
  if features.normalise == 'segment':
    logp = (logp - logp.mean()) / (logp.std() + 1e-5)
  elif features.normalise != 'none':
    raise ValueError(f"features.normalise {features.normalise!r}: 'segment' | 'none'")
  # Normalise before padding: the zero padding is then the segment's mean (silence-neutral).
  out = np.zeros((features.n_frames, logp.shape[1]), np.float32)
  t = min(features.n_frames, logp.shape[0])
  out[:t] = logp[:t]
  return out, t


def waveform_segments(wave: np.ndarray, features: ml_collections.ConfigDict
                      ) -> tuple[np.ndarray, np.ndarray]:
  """(float32 [n_segments, n_frames, n_bins], int32 [n_segments] valid frames) of a
  waveform at features.sample_rate.

  Raises:
    ValueError: an empty or multi-channel waveform.
  """
  wave = np.asarray(wave, np.float32)
  if wave.ndim != 1 or wave.size == 0:
    raise ValueError(f'expected a non-empty mono waveform, got shape {wave.shape}')
  segments = split_segments(wave, features.sample_rate, features.max_segment_s)
  specs, lengths = zip(*(segment_spectrogram(s, features) for s in segments))
  return np.stack(specs), np.asarray(lengths, np.int32)


def waveform_features(wave: np.ndarray, features: ml_collections.ConfigDict) -> np.ndarray:
  """float32 [n_segments, n_frames, n_bins] of a waveform at features.sample_rate."""
  return waveform_segments(wave, features)[0]


def file_segments(path: str, features: ml_collections.ConfigDict
                  ) -> tuple[np.ndarray, np.ndarray]:
  """(float32 [n_segments, n_frames, n_bins], int32 [n_segments] valid frames) of a wav
  file (any rate, any channel count)."""
  return waveform_segments(load_audio(path, features.sample_rate), features)


def file_features(path: str, features: ml_collections.ConfigDict) -> np.ndarray:
  """float32 [n_segments, n_frames, n_bins] of a wav file (any rate, any channel count)."""
  return file_segments(path, features)[0]


__all__ = [
    'file_features', 'file_segments', 'load_audio', 'n_bins',
    'segment_spectrogram', 'split_segments', 'VERSION', 'waveform_features', 'waveform_segments',
]
