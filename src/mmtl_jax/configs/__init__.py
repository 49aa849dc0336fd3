"""Experiment configs: Python files with `get_config()` returning a `ConfigDict`."""

from mmtl_jax import extras

extras.require('ser', 'mmtl_jax.configs')  # before any import that needs the extra


import os

CONFIG_DIR = os.path.dirname(os.path.abspath(__file__))


def config_path(name: str) -> str:
  """Path of the config file `<name>.py` shipped with the package."""
  path = os.path.join(CONFIG_DIR, f'{name}.py')
  if not os.path.exists(path):
    raise FileNotFoundError(f'no config named {name!r} in {CONFIG_DIR}')
  return path


__all__ = ['CONFIG_DIR', 'config_path']
