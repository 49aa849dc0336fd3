"""Emotion of wav files with a trained model (an inference bundle written by training).

A bundle holds the parameters and the run's config, so the features and the model are
rebuilt exactly as trained. Utterance posterior = mean of its segments' posteriors, each
segment read up to its valid frames only.

No confident label is given for a clip the model cannot judge; its result carries a
'warning' and 'emotion' None instead:
  digital silence  the decoded waveform's peak |amplitude| is below SILENCE_PEAK (1e-4, about
                   -80 dBFS; all-zero files included);
  too short        the clip's longest segment has fewer valid frames than `min_frames`:
                   a quarter of features.n_frames (0.26 s at the demo's 64 frames of 16 ms,
                   0.75 s at the paper's 300 of 10 ms), and never fewer than the
                   2 ** (conv blocks) frames the model's pools need to leave the BiLSTM one.
A missing file is an error 'file not found'; a bundle that cannot be loaded, or whose
parameters do not fit its model, raises `BundleError` with a one-line message.
"""

import glob
import math
import os
from typing import Any, Dict, List, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from mmtl_jax.run import checkpoint as ckpt_lib
from mmtl_jax.run import errors
from mmtl_jax.ser import systems as systems_lib
from mmtl_jax.data import features as features_lib

SILENCE_PEAK = 1e-4  # peak |amplitude| (full scale 1.0) below which a clip is digital silence


class BundleError(errors.ExpectedError, RuntimeError):
  """An inference bundle that exists but cannot be used; the message is one line."""
  exit_code = 2  # experiments/predict.py: 1 is "a file failed"


def find_bundle(path: str) -> str:
  """The bundle directory for `path`: a bundle itself, a fold directory holding `bundle/`, or
  a workdir (then the first MMTL fold's bundle, else the first of any model)."""
  path = os.path.abspath(path)
  candidates = [path, os.path.join(path, 'bundle')]
  for pattern in (('mmtl', '*'), ('mmtl', '*', '*'), ('*', '*'), ('*', '*', '*')):
    candidates += sorted(glob.glob(os.path.join(path, *pattern, 'bundle')))
  for c in candidates:
    if os.path.exists(os.path.join(c, 'bundle.json')):
      return c
  raise FileNotFoundError(
      f'no inference bundle at {path}: expected <workdir>/<model>/<fold>/bundle (with '
      'bundle.json), a fold directory, or a workdir produced by experiments/train.py')


def one_line(error: BaseException, limit: int = 300) -> str:
  """'Type: first line of the message', at most `limit` characters."""
  lines = [line.strip() for line in str(error).splitlines() if line.strip()]
  text = f'{type(error).__name__}: {lines[0] if lines else ""}'.rstrip(': ')
  return text if len(text) <= limit else text[:limit - 3] + '...'


def min_frames(config: ml_collections.ConfigDict) -> int:
  """The fewest valid frames a clip's longest segment needs for a label:
  max(ceil(features.n_frames / 4), 2 ** len(model.conv_features)).

  A quarter of a segment is the shortest stretch we treat as speech worth a label (0.26 s of
  the demo's 64 x 16 ms frames; 0.75 s of the paper's 300 x 10 ms); 2 ** blocks is the
  model's own floor, below which its 2x2 pools leave the BiLSTM no frame at all.
  """
  pools = len(tuple(config.model.get('conv_features', ())))
  return max(int(math.ceil(int(config.features.n_frames) / 4)), 2 ** pools)


def clip_warning(wave: np.ndarray, lengths: np.ndarray,
                 config: ml_collections.ConfigDict) -> str:
  """Why a clip (waveform [n], its segments' valid frames [S]) gets no label; '' if none."""
  peak = float(np.max(np.abs(wave))) if wave.size else 0.0
  if peak < SILENCE_PEAK:
    return f'digital silence (peak |amplitude| {peak:.1e} < {SILENCE_PEAK:.0e}); no label'
  need, have = min_frames(config), int(np.max(lengths)) if lengths.size else 0
  if have < need:
    hop = float(config.features.hop_ms) / 1000
    return (f'too short for one segment ({len(wave) / config.features.sample_rate:.3f} s, '
            f'{have} frames < {need} = {need * hop:.2f} s); no label')
  return ''


class Predictor:
  """Loads a bundle once; `predict_files` scores any number of wav files.

  Raises (constructor):
    FileNotFoundError: no bundle at `checkpoint`.
    BundleError: the bundle is damaged (unreadable files, or parameters that do not fit the
      model its config describes); one-line message.
  """

  def __init__(self, checkpoint: str):
    self.bundle = find_bundle(checkpoint)
    try:
      self.params, self.config = ckpt_lib.load_inference_bundle(self.bundle)
      self.model = str(self.config.get('bundle_model', 'mmtl'))
      self.classes = tuple(self.config.get('classes', self.config.data.classes))
      if 'name' not in self.config.model:  # bundles written before models were chosen by name
        self.config.model.name = 'cnn_bilstm'  # held the only model there was
      system = systems_lib.make_system(self.model, self.config)
      self._posteriors = jax.jit(
          lambda p, x, lengths: jax.nn.softmax(system.predict_logits(p, x, lengths), axis=-1))
      self._check_shapes()
    except Exception as e:  # pylint: disable=broad-except
      raise BundleError(f'damaged inference bundle {self.bundle}: {one_line(e)}') from e

  def _check_shapes(self) -> None:
    """Traces one prediction (no compilation): params that do not fit the model fail here."""
    shape = (1, int(self.config.features.n_frames), features_lib.n_bins(self.config.features))
    out = jax.eval_shape(self._posteriors, self.params, jax.ShapeDtypeStruct(shape, jnp.float32),
                         jax.ShapeDtypeStruct((1,), jnp.int32))
    if out.shape != (1, len(self.classes)):
      raise ValueError(f'the model gives {out.shape[-1]} posteriors for {len(self.classes)} '
                       'classes')

  def predict_file(self, path: str) -> Dict[str, Any]:
    """{'path', 'emotion', 'posteriors': {class: p}, 'segments', 'seconds'}, plus 'warning'
    (and 'emotion' None) for a clip that gets no label (see the module docstring).

    Raises:
      FileNotFoundError: 'file not found'; any decoding error of the file.
    """
    if not os.path.isfile(path):
      raise FileNotFoundError('file not found')
    wave = features_lib.load_audio(path, self.config.features.sample_rate)
    seconds = len(wave) / float(self.config.features.sample_rate)
    if wave.size == 0:
      return {'path': path, 'emotion': None, 'posteriors': None, 'segments': 0,
              'seconds': 0.0, 'warning': 'empty audio (0 samples); no label'}
    x, lengths = features_lib.waveform_segments(wave, self.config.features)
    probs = np.asarray(self._posteriors(self.params, x, lengths)).mean(axis=0)
    result = {'path': path, 'emotion': self.classes[int(np.argmax(probs))],
              'posteriors': {c: float(p) for c, p in zip(self.classes, probs)},
              'segments': int(x.shape[0]), 'seconds': seconds}
    warning = clip_warning(wave, lengths, self.config)
    if warning:
      result.update(emotion=None, warning=warning)
    return result

  def predict_files(self, paths: Sequence[str]) -> List[Dict[str, Any]]:
    """One result per path; a file that is missing ({'path', 'error': 'file not found'}) or
    cannot be decoded ({'path', 'error': 'Type: message'}) does not stop the others."""
    out: List[Dict[str, Any]] = []
    for path in paths:
      try:
        out.append(self.predict_file(path))
      except FileNotFoundError as e:
        out.append({'path': path, 'error': str(e) if str(e) == 'file not found' else one_line(e)})
      except Exception as e:  # pylint: disable=broad-except
        out.append({'path': path, 'error': one_line(e)})
    return out


__all__ = ['BundleError', 'Predictor', 'SILENCE_PEAK', 'clip_warning', 'find_bundle',
           'min_frames', 'one_line']
