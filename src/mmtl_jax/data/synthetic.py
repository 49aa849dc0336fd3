"""A small synthetic speech-emotion corpus written in exactly the IEMOCAP release layout.

IEMOCAP is licensed, so the embedded default corpus is this one: the same reader
(`mmtl_jax.data.iemocap`) parses it. What it has, by design:

- 5 sessions x 2 speakers (F, M); improvised and scripted dialogs, odd dialog names
  ('Ses03M_impro05a', 'Ses05M_script01_1b') and utterances of the other speaker inside a
  dialog ('Ses01F_impro01_M003');
- categories neu/ang/hap/sad plus exc, fru and xxx; V/A/D values as averages of 2 or 3 integer
  ratings on 1-5, so values lie exactly on bin edges (2.0, 3.0, 4.0) and at 5.0;
- EmoEvaluation files with a '%' header, summary lines and fake annotator lines;
- utterances of 1.5-5 s (most longer than 3 s, so segmentation kicks in), 16 kHz mono;
- exactly one unreadable wav (garbage bytes after a truncated RIFF header), an improvised
  'neu' utterance of the F speaker of session 2, which the feature store must list as skipped.

Audio is a source-filter model, not tones: a Rosenberg glottal pulse train (with jitter,
shimmer and aspiration noise) through a one-pole spectral-tilt filter and a cascade of four
2nd-order formant resonators whose frequencies follow a vowel sequence (one vowel per
syllable), scaled by the speaker's vocal-tract length, plus fricative noise bursts and
background noise. Prosody (pitch level and range, speaking rate, energy, spectral tilt,
jitter/shimmer, breathiness) is driven by the utterance's DRAWN valence/activation/dominance
values (class-conditional means plus independent variation) and only a little by the category
itself, so V/A/D carry information partly independent of the category, and speaker variation
and noise keep the 4-class task far from trivial.

Everything is a deterministic function of the seed: a rerun writes byte-identical files.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
from typing import NamedTuple, Optional, Sequence

import ml_collections
import numpy as np
import scipy.signal
import soundfile as sf

from mmtl_jax.data import iemocap
from mmtl_jax.data.iemocap import RELEASE_DIR
from mmtl_jax.records import Problem, Utterance

SAMPLE_RATE = 16000
MARKER = 'SYNTHETIC.json'  # written inside IEMOCAP_full_release; marks a complete corpus
VERSION = 1

# Improvised utterances per speaker and category (IEMOCAP-like imbalance), and scripted ones.
IMPRO_COUNTS = {'neu': 8, 'ang': 5, 'hap': 5, 'sad': 6, 'exc': 2, 'fru': 2, 'xxx': 1}
SCRIPT_COUNTS = {'neu': 2, 'ang': 1, 'hap': 1, 'sad': 1, 'fru': 1}
IMPRO_DIALOGS = 4

# Class-conditional V/A/D means (1-5 scale), roughly IEMOCAP's.
VAD_MEAN = {
    'neu': (3.0, 2.4, 2.6), 'ang': (1.9, 3.7, 3.7), 'hap': (3.9, 3.1, 3.0),
    'sad': (2.0, 2.1, 2.2), 'exc': (4.0, 3.7, 3.3), 'fru': (2.1, 3.2, 3.3),
    'xxx': (2.8, 2.9, 2.9),
}
VAD_SD = 0.6
# Category-only prosody (the part V/A/D do not explain): pitch offset (semitones), rate
# factor, extra jitter, extra breathiness, final contour (semitones, + rises).
CATEGORY = {
    'neu': (0.0, 1.00, 0.000, 0.00, -1.0), 'ang': (0.5, 1.05, 0.010, 0.00, -2.0),
    'hap': (1.0, 1.05, 0.000, 0.02, 2.0), 'sad': (-1.0, 0.85, 0.006, 0.10, -1.5),
    'exc': (1.5, 1.10, 0.000, 0.02, 2.5), 'fru': (0.0, 1.00, 0.008, 0.04, -0.5),
    'xxx': (0.0, 1.00, 0.000, 0.00, 0.0),
}
CATEGORY_NAMES = {'neu': 'Neutral', 'ang': 'Anger', 'hap': 'Happiness', 'sad': 'Sadness',
                  'exc': 'Excited', 'fru': 'Frustration', 'xxx': 'Other'}
# Formants F1-F4 (Hz) of five vowels for a male vocal tract, and their bandwidths.
VOWELS = np.array([[730, 1090, 2440, 3400], [270, 2290, 3010, 3500], [300, 870, 2240, 3300],
                   [530, 1840, 2480, 3500], [570, 840, 2410, 3300]], np.float64)
BANDWIDTHS = np.array([80.0, 100.0, 150.0, 200.0])


def _dialog_names(session: int) -> tuple[list[str], str]:
  """Improvised dialog names and the scripted one of a session (with IEMOCAP's odd names)."""
  impro = [f'Ses{session:02d}{"FM"[j % 2]}_impro{j + 1:02d}' for j in range(IMPRO_DIALOGS)]
  script = f'Ses{session:02d}F_script01_1'
  if session == 3:
    impro[-1] = 'Ses03M_impro05a'
  if session == 5:
    script = 'Ses05M_script01_1b'
  return impro, script


def _speaker_params(seed: int, session: int, gender: str) -> dict:
  rng = np.random.default_rng([seed, 1, session, 'FM'.index(gender)])
  female = gender == 'F'
  return {
      'f0': (205.0 if female else 115.0) * 2 ** (rng.normal(0, 2.0) / 12),
      'vtl': (1.17 if female else 1.0) * (1 + rng.normal(0, 0.04)),
      'tilt': rng.normal(0, 0.08),  # speaker voice quality: brighter or darker
      'rate': 1 + rng.normal(0, 0.1),
      'breath': abs(rng.normal(0.04, 0.02)),
  }


def _draw_vad(rng: np.random.Generator, category: str) -> tuple[float, float, float]:
  """Class mean + independent variation, as the average of 2 or 3 integer ratings."""
  raters = int(rng.integers(2, 4))
  vad = []
  for mean in VAD_MEAN[category]:
    ratings = np.clip(np.rint(rng.normal(mean, VAD_SD * 1.2, raters)), 1, 5)
    vad.append(float(round(ratings.mean(), 4)))
  return tuple(vad)


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


def _annotator_lines(rng: np.random.Generator, category: str) -> list[str]:
  name = CATEGORY_NAMES[category]
  lines = [f'C-{e}:\t{name};\t()' for e in ('E1', 'E2', 'F1')]
  for e in ('E3', 'F2'):
    val, act, dom = (int(x) for x in rng.integers(1, 6, 3))
    lines.append(f'A-{e}:\tval {val}; act {act}; dom  {dom};\t()')
  return lines


def _session_plan(seed: int, session: int, impro_counts: dict, script_counts: dict):
  """[(dialog, [(gender, category), ...])] of a session, deterministic from the seed."""
  rng = np.random.default_rng([seed, 2, session])
  impro, script = _dialog_names(session)
  plan = {name: [] for name in impro + [script]}
  for gender in 'FM':
    labels = [c for c, k in impro_counts.items() for _ in range(k)]
    for i, c in enumerate(rng.permutation(labels)):
      plan[impro[i % len(impro)]].append((gender, str(c)))
    for c in [c for c, k in script_counts.items() for _ in range(k)]:
      plan[script].append((gender, c))
  return [(name, [items[j] for j in rng.permutation(len(items))])
          for name, items in plan.items()]


def _turn_line(start: float, duration: float, utt_id: str, category: str,
               vad: Sequence[float]) -> str:
  """An EmoEvaluation summary line: '[start - end]<TAB>utt_id<TAB>category<TAB>[V, A, D]'."""
  return (f'[{start:.4f} - {start + duration:.4f}]\t{utt_id}\t{category}\t'
          f'[{vad[0]:.4f}, {vad[1]:.4f}, {vad[2]:.4f}]')


def _write_dialog(wav_dir: str, eval_path: str, rng_key: Sequence[int], dialog: str,
                  items: Sequence[tuple[str, str]], speakers: dict,
                  durations: tuple[float, float], break_one: bool) -> Optional[str]:
  """Writes one dialog's wavs and its EmoEvaluation file.

  Args:
    wav_dir: the dialog's wav directory (existing).
    eval_path: path of its EmoEvaluation .txt file.
    rng_key: utterance k is drawn from default_rng([*rng_key, k]).
    dialog: the dialog name; items: [(gender, category)] in turn order.
    speakers: {gender: `_speaker_params`}.
    durations: (min, max) utterance duration in seconds.
    break_one: write the first improvised 'neu' utterance of the F speaker unreadable.

  Returns:
    The path of the unreadable wav, or None if none was written.
  """
  lines = ['% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]', '']
  numbers, clock, broken = {'F': 0, 'M': 0}, 0.0, None
  for k, (gender, category) in enumerate(items):
    rng = np.random.default_rng([*rng_key, k])
    utt_id = f'{dialog}_{gender}{numbers[gender]:03d}'
    numbers[gender] += 1
    duration = round(float(rng.uniform(durations[0], durations[1])), 2)
    vad = _draw_vad(rng, category)
    clock += round(float(rng.uniform(0.2, 2.0)), 4)
    lines.append(_turn_line(clock, duration, utt_id, category, vad))
    lines += _annotator_lines(rng, category) + ['']
    clock += duration
    path = os.path.join(wav_dir, utt_id + '.wav')
    if (break_one and broken is None and 'impro' in dialog and gender == 'F'
        and category == 'neu'):
      with open(path, 'wb') as f:  # a truncated RIFF header followed by garbage
        f.write(b'RIFF\x24\x00\x00\x00WAVEfmt ' + rng.bytes(13))
      broken = path
    else:
      wave = synthesize(rng, duration, speakers[gender], category, vad)
      sf.write(path, wave, SAMPLE_RATE, subtype='PCM_16', format='WAV')
  with open(eval_path, 'w', encoding='utf-8', newline='\n') as f:
    f.write('\n'.join(lines) + '\n')
  return broken


def _write_session(tmp: str, seed: int, session: int, impro_counts: dict, script_counts: dict,
                   durations: tuple[float, float], break_one: bool
                   ) -> tuple[Optional[str], int]:
  """Writes Session<session> under `tmp`; (path of the unreadable wav or None, utterances)."""
  speakers = {g: _speaker_params(seed, session, g) for g in 'FM'}
  eval_dir = os.path.join(tmp, f'Session{session}', 'dialog', 'EmoEvaluation')
  os.makedirs(eval_dir)
  unreadable, total = None, 0
  for dialog_index, (dialog, items) in enumerate(
      _session_plan(seed, session, impro_counts, script_counts)):
    wav_dir = os.path.join(tmp, f'Session{session}', 'sentences', 'wav', dialog)
    os.makedirs(wav_dir)
    broken = _write_dialog(wav_dir, os.path.join(eval_dir, dialog + '.txt'),
                           [seed, 3, session, dialog_index], dialog, items, speakers,
                           durations, break_one and unreadable is None)
    if broken is not None:
      unreadable = broken
    total += len(items)
  return unreadable, total


def _publish(tmp: str, final: str, params: dict) -> None:
  """Writes the marker into `tmp`, then renames it to `final` (replacing any old corpus)."""
  with open(os.path.join(tmp, MARKER), 'w') as f:
    json.dump(params, f, indent=1, sort_keys=True)
  shutil.rmtree(final, ignore_errors=True)
  os.rename(tmp, final)


def write_corpus(root: str, seed: int = 0, sessions: int = 5,
                 impro_counts: Optional[dict] = None, script_counts: Optional[dict] = None,
                 min_duration: float = 1.5, max_duration: float = 5.0) -> dict:
  """Writes the corpus under `root`/IEMOCAP_full_release (atomically: tmp dir, then rename).

  Args:
    root: parent directory; it is created if needed. An existing complete corpus is replaced.
    seed: everything (audio, labels, names) is a deterministic function of it.
    sessions: number of sessions (2 speakers each).
    impro_counts / script_counts: utterances per speaker and category (defaults: module
      constants IMPRO_COUNTS, SCRIPT_COUNTS).
    min_duration / max_duration: utterance durations are uniform in this range (seconds).

  Returns:
    {'root': release dir, 'utterances': total, 'unreadable': path of the broken wav}.
  """
  impro_counts = dict(IMPRO_COUNTS if impro_counts is None else impro_counts)
  script_counts = dict(SCRIPT_COUNTS if script_counts is None else script_counts)
  root = os.path.abspath(root)
  os.makedirs(root, exist_ok=True)
  tmp = os.path.join(root, f'.tmp-{os.getpid()}')
  shutil.rmtree(tmp, ignore_errors=True)
  broken_session = 2 if sessions >= 2 else 1
  unreadable, total = None, 0
  for session in range(1, sessions + 1):
    broken, count = _write_session(tmp, seed, session, impro_counts, script_counts,
                                   (min_duration, max_duration),
                                   unreadable is None and session == broken_session)
    if broken is not None:
      unreadable = os.path.join(root, RELEASE_DIR, os.path.relpath(broken, tmp))
    total += count
  params = {'version': VERSION, 'seed': seed, 'sessions': sessions,
            'impro_counts': impro_counts, 'script_counts': script_counts,
            'durations': [min_duration, max_duration], 'utterances': total,
            'unreadable': os.path.relpath(unreadable, os.path.join(root, RELEASE_DIR))}
  final = os.path.join(root, RELEASE_DIR)
  _publish(tmp, final, params)
  return {'root': final, 'utterances': total, 'unreadable': unreadable}


def ensure_corpus(root: str, seed: int = 0) -> str:
  """The release dir of the synthetic corpus under `root`, written first if absent.

  A complete corpus (its marker file present, same seed and version) is reused. A release dir
  without a marker is taken as a corpus the user provides and returned as is.
  """
  final = os.path.join(os.path.abspath(root), RELEASE_DIR)
  marker = os.path.join(final, MARKER)
  if os.path.isdir(final):
    if not os.path.exists(marker):
      return final
    with open(marker) as f:
      params = json.load(f)
    if params.get('seed') == seed and params.get('version') == VERSION:
      return final
    raise ValueError(f'{final} holds a synthetic corpus of seed {params.get("seed")} '
                     f'(version {params.get("version")}), not seed {seed} (version {VERSION}); '
                     'use another directory or delete it')
  return write_corpus(root, seed=seed)['root']


def read(data: ml_collections.ConfigDict, workdir: Optional[str] = None
         ) -> tuple[list[Utterance], list[Problem]]:
  """The corpus reader of kind 'synthetic' (see `mmtl_jax.data.corpus`).

  The corpus lives in data.root, or else <workdir>/synthetic_corpus; it is written there first
  (deterministically from data.synthetic.seed) unless already complete, then read with the
  IEMOCAP reader, so the same code path runs as on the real corpus.
  """
  root = data.root or (os.path.join(workdir, 'synthetic_corpus') if workdir else '')
  if not root:
    raise ValueError("data.kind='synthetic' needs config.data.root or a workdir "
                     '(the corpus is then written to <workdir>/synthetic_corpus)')
  root = ensure_corpus(root, seed=int(data.synthetic.seed))
  return iemocap.read_iemocap(data, root=root)


def main(argv: Optional[Sequence[str]] = None) -> None:
  """CLI `mmtl-make-synthetic ROOT [--seed N]`: writes the corpus and prints a summary."""
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('root', help='parent directory of IEMOCAP_full_release')
  parser.add_argument('--seed', type=int, default=0)
  args = parser.parse_args(argv)
  info = write_corpus(args.root, seed=args.seed)
  print(f"wrote {info['utterances']} utterances to {info['root']}")
  print(f"unreadable on purpose: {info['unreadable']}")


if __name__ == '__main__':
  main()
