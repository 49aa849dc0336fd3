"""Inference bundles shipped with the package, usable offline right after installation.

  emodb/   MMTL on EmoDB (acted German speech, 10 speakers), the 4 classes neutral, anger,
           happiness, sadness; trained on all ten speakers. What it is, how well the recipe
           did in a leave-one-speaker-out study, and its limits: emodb/MODEL_CARD.md.
           Made by experiments/make_pretrained.py (the command is in its bundle.json).

Each is a `mmtl_jax.run.checkpoint` bundle of storage 'npz' (params.npz, config.json,
bundle.json); the package data of pyproject.toml ships those files and the model card.
"""

from mmtl_jax import extras

extras.require('ser', 'mmtl_jax.pretrained')  # before any import that needs the extra


import os

from mmtl_jax.run import errors

NAMES = ('emodb',)


class UnknownPretrainedError(errors.ExpectedError, ValueError):
  """A pretrained name that is not one of NAMES."""


def bundle_path(name: str) -> str:
  """The directory of the shipped bundle `name`.

  Raises:
    UnknownPretrainedError: `name` is not in NAMES (the message lists them).
    FileNotFoundError: the bundle's files are not installed (a broken installation).
  """
  if name not in NAMES:
    raise UnknownPretrainedError(f'unknown pretrained model {name!r}; known: {", ".join(NAMES)}')
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)), name)
  if not os.path.isfile(os.path.join(path, 'bundle.json')):
    raise FileNotFoundError(f'the pretrained {name!r} bundle is not installed at {path} '
                            '(no bundle.json): reinstall mmtl_jax (pip install mmtl_jax)')
  return path


__all__ = ['NAMES', 'UnknownPretrainedError', 'bundle_path']
