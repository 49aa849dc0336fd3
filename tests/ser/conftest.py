"""Fixtures of the SER tests: an untrained inference bundle of the tiny config."""

import pytest


def _tiny_bundle(directory, config, classes=None, info=None):
  """Saves an untrained MMTL bundle of `config` (the tiny config) at `directory`; `classes`
  replaces config.data.classes in the bundle's config, `info` goes to bundle.json."""
  import jax  # pylint: disable=g-import-not-at-top
  import ml_collections  # pylint: disable=g-import-not-at-top
  from mmtl_jax.data import features  # pylint: disable=g-import-not-at-top
  from mmtl_jax.run import checkpoint as ckpt_lib  # pylint: disable=g-import-not-at-top
  from mmtl_jax.ser import systems  # pylint: disable=g-import-not-at-top
  params = systems.make_system('mmtl', config).init(
      jax.random.key(0), (1, config.features.n_frames, features.n_bins(config.features)))
  bundle_config = ml_collections.ConfigDict(config.to_dict())
  bundle_config.bundle_model = 'mmtl'
  bundle_config.classes = tuple(classes or config.data.classes)
  kwargs = {} if info is None else {'info': info}
  return ckpt_lib.save_inference_bundle(str(directory), params, bundle_config, **kwargs)


@pytest.fixture(scope='session')
def tiny_bundle():
  """Factory: tiny_bundle(directory, config, classes=None, info=None) -> the bundle's path."""
  return _tiny_bundle
