"""The speech-like audio of the synthetic corpus (written by mmtl_jax.data.synthetic).

Audio is a source-filter model, not tones: a Rosenberg glottal pulse train (with jitter,
shimmer and aspiration noise) through a one-pole spectral-tilt filter and a cascade of four
2nd-order formant resonators whose frequencies follow a vowel sequence (one vowel per
syllable), scaled by the speaker's vocal-tract length, plus fricative noise bursts and
background noise. Prosody (pitch level and range, speaking rate, energy, spectral tilt,
jitter/shimmer, breathiness) is driven by the utterance's valence/activation/dominance values
(drawn by the writer: class-conditional means plus independent variation) and only a little
by the category itself, so V/A/D carry information partly independent of the category, and
speaker variation and noise keep the 4-class task far from trivial.

Everything is a deterministic function of the random generator passed in.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import numpy as np
import scipy.signal

SAMPLE_RATE = 16000

# Category-only prosody (the part V/A/D do not explain): pitch offset (semitones), rate
# factor, extra jitter, extra breathiness, final contour (semitones, + rises).
CATEGORY = {
    'neu': (0.0, 1.00, 0.000, 0.00, -1.0), 'ang': (0.5, 1.05, 0.010, 0.00, -2.0),
    'hap': (1.0, 1.05, 0.000, 0.02, 2.0), 'sad': (-1.0, 0.85, 0.006, 0.10, -1.5),
    'exc': (1.5, 1.10, 0.000, 0.02, 2.5), 'fru': (0.0, 1.00, 0.008, 0.04, -0.5),
    'xxx': (0.0, 1.00, 0.000, 0.00, 0.0),
}
# Formants F1-F4 (Hz) of five vowels for a male vocal tract, and their bandwidths.
VOWELS = np.array([[730, 1090, 2440, 3400], [270, 2290, 3010, 3500], [300, 870, 2240, 3300],
                   [530, 1840, 2480, 3500], [570, 840, 2410, 3300]], np.float64)
BANDWIDTHS = np.array([80.0, 100.0, 150.0, 200.0])


def speaker_params(seed: int, session: int, gender: str) -> dict:
  """The voice of the speaker of `gender` ('F' | 'M') in `session`, drawn from the seed:
  {'f0' (Hz), 'vtl' (vocal-tract scale of the formants), 'tilt', 'rate', 'breath'}."""
  rng = np.random.default_rng([seed, 1, session, 'FM'.index(gender)])
  female = gender == 'F'
  return {
      'f0': (205.0 if female else 115.0) * 2 ** (rng.normal(0, 2.0) / 12),
      'vtl': (1.17 if female else 1.0) * (1 + rng.normal(0, 0.04)),
      'tilt': rng.normal(0, 0.08),  # speaker voice quality: brighter or darker
      'rate': 1 + rng.normal(0, 0.1),
      'breath': abs(rng.normal(0.04, 0.02)),
  }


def _resonate(x: np.ndarray, freqs: np.ndarray, sr: int) -> np.ndarray:
  """Cascade of 2nd-order formant resonators with unit gain at 0 Hz."""
  for f, bw in zip(freqs, BANDWIDTHS):
    if f >= 0.48 * sr:
      continue
    r = math.exp(-math.pi * bw / sr)
    a1, a2 = -2 * r * math.cos(2 * math.pi * f / sr), r * r
    x = scipy.signal.lfilter([1 + a1 + a2], [1, a1, a2], x)
  return x


_FRICATIVE = scipy.signal.butter(2, 3000 / (SAMPLE_RATE / 2), 'high')
_BACKGROUND = scipy.signal.butter(1, 1500 / (SAMPLE_RATE / 2), 'low')


class _Prosody(NamedTuple):
  """One utterance's prosody; pitch values in semitones, levels in dB."""
  level: float  # pitch level relative to the speaker's f0
  span: float  # pitch range of the syllable accents
  rate: float  # syllables per second
  energy_db: float
  tilt: float  # one-pole spectral-tilt coefficient: higher is darker
  jitter: float
  shimmer: float
  breath: float
  final: float  # final contour: + rises


def _prosody(rng: np.random.Generator, speaker: dict, category: str,
             vad: Sequence[float]) -> _Prosody:
  """Prosody from the drawn V/A/D values, plus the category-only part and per-utterance noise."""
  v, a, d = ((x - 3.0) / 2.0 for x in vad)  # each in [-1, 1]
  c_pitch, c_rate, c_jitter, c_breath, c_final = CATEGORY[category]
  level = 3.0 * a + 1.0 * d + c_pitch + rng.normal(0, 0.8)
  span = float(np.clip(2.5 + 2.5 * a + 1.5 * v + rng.normal(0, 0.8), 0.5, 9.0))
  rate = float(np.clip((4.0 + 1.4 * a) * c_rate * speaker['rate'] + rng.normal(0, 0.3), 2, 7))
  energy_db = 7.0 * a + 3.0 * d + rng.normal(0, 2.0)
  tilt = float(np.clip(0.35 - 0.25 * a + speaker['tilt'] + rng.normal(0, 0.05), 0.02, 0.85))
  jitter = 0.004 + 0.008 * max(-v, 0) + c_jitter
  shimmer = 0.04 + 0.06 * max(a, 0) + 4 * c_jitter
  breath = speaker['breath'] + c_breath + 0.06 * max(-a, 0)
  return _Prosody(level, span, rate, energy_db, tilt, jitter, shimmer, breath, c_final)


def _syllables(rng: np.random.Generator, duration: float, rate: float,
               n: int) -> tuple[np.ndarray, np.ndarray]:
  """(bounds [S + 1] int sample indices from 0 to n, pause [S] bool) of S syllables.

  Lengths are random around 1 / rate; some syllables (never the first) are pauses.
  """
  n_syl = max(1, int(round(duration * rate)))
  lengths = rng.gamma(6.0, 1.0, n_syl)
  bounds = np.rint(np.concatenate([[0], np.cumsum(lengths) / lengths.sum() * n])).astype(int)
  bounds[-1] = n
  pause = rng.random(n_syl) < 0.08
  pause[0] = False
  return bounds, pause


def _f0_contour(rng: np.random.Generator, duration: float, bounds: np.ndarray,
                prosody: _Prosody, speaker_f0: float, sr: int) -> np.ndarray:
  """[n] f0 in Hz: declination, one accent per syllable, final rise or fall, and jitter."""
  n = int(bounds[-1])
  t = np.arange(n) / sr
  accents = rng.normal(0, 1, len(bounds) - 1) * prosody.span / 2
  centres = (bounds[:-1] + bounds[1:]) / 2 / sr
  semis = prosody.level + np.interp(t, centres, accents) - 2.0 * t / duration
  semis += prosody.final * np.clip((t - (duration - 0.5)) / 0.5, 0, 1)
  semis = scipy.signal.lfilter([0.0015], [1, -0.9985], semis - semis[0]) + semis[0]  # smooth
  f0 = speaker_f0 * 2 ** (semis / 12)
  block = rng.normal(0, 1, n // 80 + 2)  # jitter: ~5 ms blocks of period perturbation
  f0 *= 1 + prosody.jitter * block[np.arange(n) // 80]
  return f0


def _glottal_source(rng: np.random.Generator, f0: np.ndarray, prosody: _Prosody,
                    sr: int) -> np.ndarray:
  """[n] excitation: Rosenberg pulses with shimmer and aspiration noise, spectrally tilted."""
  phase = np.cumsum(f0 / sr)
  period = phase.astype(np.int64)
  frac = phase - period
  # Rosenberg pulse: opening 0.4 of the period, closing 0.16, closed for the rest.
  tp, tn = 0.4, 0.16
  flow = np.where(frac < tp, 0.5 * (1 - np.cos(np.pi * frac / tp)),
                  np.where(frac < tp + tn, np.cos(0.5 * np.pi * (frac - tp) / tn), 0.0))
  flow *= 1 + prosody.shimmer * rng.normal(0, 1, period[-1] + 1)[period]
  source = np.diff(flow, prepend=0.0)  # lip radiation: differentiated glottal flow
  source += prosody.breath * 0.05 * rng.normal(0, 1, len(f0)) * (0.3 + flow)
  return scipy.signal.lfilter([1 - prosody.tilt], [1, -prosody.tilt], source)


def _articulate(rng: np.random.Generator, source: np.ndarray, bounds: np.ndarray,
                pause: np.ndarray, scale: float, sr: int) -> np.ndarray:
  """[n] speech: each syllable a fricative burst then a vowel (formants scaled by `scale`)."""
  n = len(source)
  # Room for each vowel's resonator ring-out past the end of its syllable.
  out = np.zeros(n + sr // 20)
  for i in range(len(pause)):
    s, e = bounds[i], bounds[i + 1]
    if pause[i] or e - s < 8:
      continue
    onset = min(int(rng.uniform(0.15, 0.35) * (e - s)), e - s)
    env = np.sin(np.linspace(0, np.pi, e - s - onset)) ** 0.5
    vowel = VOWELS[rng.integers(len(VOWELS))] * scale * (1 + rng.normal(0, 0.03, 4))
    excitation = np.concatenate([source[s + onset:e] * env, np.zeros(sr // 20)])
    syl = _resonate(excitation, vowel, sr) * 10 ** (rng.normal(0, 2.0) / 20)
    syl = scipy.signal.lfilter([1, -0.9], [1], syl)  # pre-emphasis: visible upper formants
    out[s + onset:s + onset + len(syl)] += syl
    if onset > 0:  # consonant: a high-passed noise burst
      burst = rng.normal(0, 1, onset) * np.hanning(onset) * rng.uniform(0.01, 0.05)
      out[s:s + onset] += scipy.signal.lfilter(*_FRICATIVE, burst)
  return out[:n]


def _level_and_noise(rng: np.random.Generator, out: np.ndarray, energy_db: float) -> np.ndarray:
  """float32 `out` at its energy level, plus background noise, peaks kept under 0.95."""
  n = len(out)
  out *= 0.1 / (np.sqrt(np.mean(out ** 2)) + 1e-9) * 10 ** (energy_db / 20)
  noise = scipy.signal.lfilter(*_BACKGROUND, rng.normal(0, 1, n))
  out += noise * 0.1 * 10 ** (-rng.uniform(10, 28) / 20) * 3
  peak = np.abs(out).max()
  if peak > 0.95:
    out *= 0.95 / peak
  return out.astype(np.float32)


def synthesize(rng: np.random.Generator, duration: float, speaker: dict, category: str,
               vad: Sequence[float], sr: int = SAMPLE_RATE) -> np.ndarray:
  """float32 [round(duration * sr)] speech-like waveform whose prosody follows V/A/D.

  The helpers draw from `rng` in a fixed order (prosody, syllables, f0, source, articulation,
  noise): changing it changes every corpus written with the same seed.
  """
  n = int(round(duration * sr))
  prosody = _prosody(rng, speaker, category, vad)
  bounds, pause = _syllables(rng, duration, prosody.rate, n)
  f0 = _f0_contour(rng, duration, bounds, prosody, speaker['f0'], sr)
  source = _glottal_source(rng, f0, prosody, sr)
  scale = speaker['vtl'] * (1.03 if category in ('hap', 'exc') else 1.0)
  out = _articulate(rng, source, bounds, pause, scale, sr)
  return _level_and_noise(rng, out, prosody.energy_db)


__all__ = ['BANDWIDTHS', 'CATEGORY', 'SAMPLE_RATE', 'speaker_params', 'synthesize', 'VOWELS']
