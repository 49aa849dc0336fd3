"""Is a clip speech the model can judge? Cheap checks on the waveform and its spectrum, and the
content hash that says whether a file was in a model's training data.

An emotion model gives one of its classes to any input: white noise, a test tone or a DC
level get a confident-looking label. `speech_measures` computes a few numbers per clip and
`not_speech_reasons` turns those outside the range of real speech into reasons (each a short
phrase such as 'spectral flatness 0.56 > 0.2'). Thresholds (constants below) were set on the
535 clips of the EmoDB copy (22.05 kHz, 2 s each, read at 16 kHz), where none fires; the
figures in brackets are EmoDB's extreme value and what synthetic clips score:

  QUIET_DBFS     peak below -50 dBFS (EmoDB's quietest clip peaks at -15 dBFS).
  DC_RATIO       |mean| / RMS above 0.5: a DC level or offset (EmoDB <= 0.037; DC clip 1.0).
  FLATNESS       median spectral flatness (geometric / arithmetic mean of the power spectrum)
                 of the louder half of the frames above 0.2: noise-like (EmoDB <= 0.04;
                 white noise 0.56, at any level).
  STEADY_DB      spread of the frame levels (90th - 10th percentile, dB, over frames within
                 40 dB of the loudest) below 6 dB: a steady signal; speech rises and falls
                 with its syllables (EmoDB >= 10.1 dB; stationary noise or tones below 1 dB).
                 Not checked on clips of fewer than MIN_FRAMES frames.
  TONE           median share of a frame's power within +-2 bins (+-31 Hz) of its strongest
                 bin, over the louder half of the frames, above 0.98: one pure tone
                 (EmoDB <= 0.968; a sine, a beeping or a swept tone 0.997 to 1.0).
A near-constant signal (AC RMS below CONSTANT_RMS = 1e-4: a DC level, or near-silence) is
reported as such and the spectral checks are skipped; digital silence (no sample above 1e-4,
predict's SILENCE_PEAK) as 'no signal'. Non-finite samples are left to predict's own warning.

Cost: one STFT of n_fft 1024 (64 ms) with hop 512 at 16 kHz, in blocks of BLOCK_S seconds
so that only a few scalars per frame are kept for a long file.
"""

import hashlib
from typing import Any, Dict, List

import librosa
import numpy as np

QUIET_DBFS = -50.0
DC_RATIO = 0.5
FLATNESS = 0.2
STEADY_DB = 6.0
TONE = 0.98
CONSTANT_RMS = 1e-4  # AC RMS (full scale 1.0) below which a clip is a constant level
N_FFT, HOP = 1024, 512
BLOCK_S = 60.0  # seconds of waveform per STFT block: bounds the spectrogram's memory
MIN_FRAMES = 8  # the level spread of fewer frames (0.29 s at 16 kHz) says nothing
_ACTIVE_DB = 40.0  # frames this far below the loudest count as pauses, not speech level


def file_sha256(path: str) -> str:
  """Hex sha256 of a file's bytes (the bundle's `training_files_sha256` entries)."""
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for chunk in iter(lambda: f.read(1 << 20), b''):
      digest.update(chunk)
  return digest.hexdigest()


def _frame_stats(wave: np.ndarray, sample_rate: int) -> tuple:
  """(frame power [T], spectral flatness [T], tone share [T]) of a mean-removed waveform,
  computed block by block (blocks overlap by one frame's worth of samples)."""
  block = max(N_FFT, int(BLOCK_S * sample_rate) // HOP * HOP)
  power, flat, tone = [], [], []
  for start in range(0, max(1, len(wave) - N_FFT + HOP), block):
    piece = wave[start:start + block + N_FFT - HOP]
    if len(piece) < N_FFT:  # a clip shorter than one frame: zero-padded to one
      piece = np.pad(piece, (0, N_FFT - len(piece)))
    spec = np.abs(librosa.stft(piece, n_fft=N_FFT, hop_length=HOP, center=False)) ** 2
    total = np.maximum(spec.sum(axis=0), 1e-30)
    power.append(total / spec.shape[0])
    flat.append(librosa.feature.spectral_flatness(S=spec, power=1.0, amin=1e-20)[0])
    cum = np.concatenate([np.zeros((1, spec.shape[1])), np.cumsum(spec, axis=0)])
    peak = np.argmax(spec, axis=0)
    lo, hi = np.maximum(peak - 2, 0), np.minimum(peak + 3, spec.shape[0])
    cols = np.arange(spec.shape[1])
    tone.append((cum[hi, cols] - cum[lo, cols]) / total)
  return np.concatenate(power), np.concatenate(flat), np.concatenate(tone)


def speech_measures(wave: np.ndarray, sample_rate: int) -> Dict[str, float]:
  """The numbers the checks compare (see the module docstring): 'peak_dbfs', 'dc_ratio',
  'ac_rms', and unless the signal is constant 'frames', 'flatness', 'level_spread_db',
  'tone'; for non-finite samples only 'finite': False (and placeholders)."""
  wave = np.asarray(wave, np.float32)
  finite = bool(np.all(np.isfinite(wave)))
  if not wave.size or not finite:  # empty: no signal; non-finite: predict says so itself
    return {'peak_dbfs': -200.0, 'dc_ratio': 0.0, 'ac_rms': 0.0, 'finite': finite}
  peak = float(np.max(np.abs(wave)))
  mean = float(np.mean(wave, dtype=np.float64))
  ac_rms = float(np.std(wave, dtype=np.float64))
  out = {'peak_dbfs': 20 * np.log10(max(peak, 1e-10)),
         'dc_ratio': abs(mean) / max(float(np.hypot(mean, ac_rms)), 1e-30), 'ac_rms': ac_rms}
  if ac_rms < CONSTANT_RMS:
    return out
  # The spectral measures are scale-free: scaled to a peak of 1, huge samples cannot overflow.
  scaled = ((wave - np.float32(mean)) / np.float32(peak + abs(mean))).astype(np.float32)
  power, flat, tone = _frame_stats(scaled, sample_rate)
  level = 10 * np.log10(np.maximum(power, 1e-20))
  loud = level >= np.median(level)
  p90, p10 = np.percentile(level[level > level.max() - _ACTIVE_DB], [90, 10])
  out.update(frames=int(level.size), flatness=float(np.median(flat[loud])),
             level_spread_db=float(p90 - p10),
             tone=float(np.median(tone[loud])))
  return out


def not_speech_reasons(m: Dict[str, Any]) -> List[str]:
  """Why measures `m` (`speech_measures`) look unlike speech; [] when nothing fires."""
  if m.get('finite') is False:
    return []  # predict gives non-finite samples no label, with its own warning
  if m['peak_dbfs'] < 20 * np.log10(CONSTANT_RMS):  # as predict's SILENCE_PEAK
    return [f"no signal: peak {m['peak_dbfs']:.0f} dBFS"]
  if m['ac_rms'] < CONSTANT_RMS:
    return [f"constant signal (a DC level or near-silence): variation {m['ac_rms']:.1e} RMS"]
  reasons = []
  if m['peak_dbfs'] < QUIET_DBFS:
    reasons.append(f"very quiet: peak {m['peak_dbfs']:.0f} dBFS < {QUIET_DBFS:.0f}")
  if m['dc_ratio'] > DC_RATIO:
    reasons.append(f"DC offset: |mean|/RMS {m['dc_ratio']:.2f} > {DC_RATIO}")
  if m['flatness'] > FLATNESS:
    reasons.append(f"noise-like: spectral flatness {m['flatness']:.2f} > {FLATNESS}")
  if m['tone'] > TONE:
    reasons.append(f"pure tone: peak share {m['tone']:.3f} > {TONE}")
  if m['level_spread_db'] < STEADY_DB and m['frames'] >= MIN_FRAMES:
    reasons.append(f"steady level: spread {m['level_spread_db']:.1f} dB < {STEADY_DB:.0f}")
  return reasons


def not_speech(wave: np.ndarray, sample_rate: int) -> str:
  """'; '-joined `not_speech_reasons` of a waveform; '' when it passes every check."""
  return '; '.join(not_speech_reasons(speech_measures(wave, sample_rate)))


__all__ = ['DC_RATIO', 'FLATNESS', 'QUIET_DBFS', 'STEADY_DB', 'TONE', 'file_sha256',
           'not_speech', 'not_speech_reasons', 'speech_measures']
