"""Shared fixtures: the tiny model and the tiny demo-loop config, and the synthetic corpus.

Tests take these as fixtures (no test imports another test file). Both configs are factories,
since tests change a few fields of their own.

Where a test goes: tests/<part>/ for the package part it tests (meta, models, data, run, ser,
fewshot, tools, examples), the package-wide checks (architecture, packaging, README) here.
tests/meta runs with the core install alone (`pip install mmtl_jax[test]`): this file
imports the 'ser' extra's packages (ml_collections, the data layer) only inside the fixtures
that need them.
"""

import pytest


def make_tiny_model(dtype='float32', dropout=0.0):
  """config.model of a 2-block Table 1 model small enough for float64 checks (8 x 8 input)."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  c = ml_collections.ConfigDict()
  c.name = 'cnn_bilstm'
  c.conv_features = (2, 3)
  c.conv_kernels = ((3, 3), (2, 3))
  c.lstm_hidden = 4
  c.fc_hidden = 5
  c.num_outputs = 4
  c.dropout = dropout
  c.dtype = dtype
  return c


def make_tiny_config(corpus_root, models=('mmtl', 'cnn_lstm', 'cnn_lstm_mtl'), steps=4):
  """The demo config at test size: fold 0 of the synthetic corpus at `corpus_root`, 16 frames
  x 33 bins, a 3-block model of 2-4 channels, `steps` training steps."""
  from mmtl_jax.configs import demo  # pylint: disable=g-import-not-at-top
  c = demo.get_config()
  c.data.root = corpus_root
  c.features.n_fft = 128
  c.features.win_ms = 8.0
  c.features.hop_ms = 32.0
  c.features.n_frames = 16
  c.features.workers = 1
  c.model.conv_features = (2, 3, 4)
  c.model.conv_kernels = ((3, 3), (3, 3), (3, 3))
  c.model.lstm_hidden = 4
  c.model.fc_hidden = 4
  c.meta.mode = 'first_order'
  c.train.models = models
  c.train.steps = steps
  c.train.segments_per_speaker = 4
  c.train.eval_every = 2
  c.train.checkpoint_every = 2
  c.train.log_every = 1
  c.folds.which = (0,)
  c.eval.finetune_steps = 1
  c.eval.batch_size = 32
  # A compilation cache of this pytest run only (none in $HOME, none across runs): the demo
  # loop's tests compile many of the same tiny programs.
  c.compilation_cache_dir = _RUN_CACHE['dir']
  return c


_RUN_CACHE = {'dir': ''}


@pytest.fixture(scope='session', autouse=True)
def _run_compilation_cache(tmp_path_factory):
  """Points make_tiny_config at one cache directory per pytest run, shared by its xdist
  workers (the parent of their base temp directories is per run)."""
  _RUN_CACHE['dir'] = str(tmp_path_factory.getbasetemp().parent / 'jax-compilation-cache')
  yield


@pytest.fixture(scope='session')
def tiny_model():
  """Factory: tiny_model(dtype='float32', dropout=0.0) -> config.model."""
  return make_tiny_model


@pytest.fixture(scope='session')
def tiny_config():
  """Factory: tiny_config(corpus_root, models=..., steps=4) -> the full demo-loop config."""
  return make_tiny_config


@pytest.fixture(scope='session')
def corpus_root(tmp_path_factory):
  """The embedded synthetic corpus (seed 0), written once per test process."""
  from mmtl_jax.data import synthetic  # pylint: disable=g-import-not-at-top
  return synthetic.ensure_corpus(str(tmp_path_factory.mktemp('corpus')), seed=0)
