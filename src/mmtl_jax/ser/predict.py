"""Emotion of wav files with a trained model (an inference bundle written by training).

A bundle holds the parameters and the run's config, so the features and the model are
rebuilt exactly as trained. Utterance posterior = mean of its segments' posteriors.
"""

import glob
import os
from typing import Any, Dict, List, Sequence

import jax
import numpy as np

from mmtl_jax.run import checkpoint as ckpt_lib
from mmtl_jax.ser import systems as systems_lib
from mmtl_jax.data import features as features_lib


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


class Predictor:
  """Loads a bundle once; `predict_files` scores any number of wav files."""

  def __init__(self, checkpoint: str):
    self.bundle = find_bundle(checkpoint)
    self.params, self.config = ckpt_lib.load_inference_bundle(self.bundle)
    self.model = str(self.config.get('bundle_model', 'mmtl'))
    self.classes = tuple(self.config.get('classes', self.config.data.classes))
    if 'name' not in self.config.model:  # bundles written before models were chosen by name
      self.config.model.name = 'cnn_bilstm'  # held the only model there was
    system = systems_lib.make_system(self.model, self.config)
    self._posteriors = jax.jit(
        lambda p, x: jax.nn.softmax(system.predict_logits(p, x), axis=-1))

  def predict_file(self, path: str) -> Dict[str, Any]:
    """{'path', 'emotion', 'posteriors': {class: p}, 'segments'}; raises on a bad file."""
    x = features_lib.file_features(path, self.config.features)
    probs = np.asarray(self._posteriors(self.params, x)).mean(axis=0)
    return {'path': path, 'emotion': self.classes[int(np.argmax(probs))],
            'posteriors': {c: float(p) for c, p in zip(self.classes, probs)},
            'segments': int(x.shape[0])}

  def predict_files(self, paths: Sequence[str]) -> List[Dict[str, Any]]:
    """One result per path; a file that cannot be read or decoded gets {'path', 'error'}
    and does not stop the others."""
    out = []
    for path in paths:
      try:
        out.append(self.predict_file(path))
      except Exception as e:  # pylint: disable=broad-except
        out.append({'path': path, 'error': f'{type(e).__name__}: {e}'})
    return out
