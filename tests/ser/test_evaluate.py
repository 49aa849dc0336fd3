"""Meta-test protocols: what the 'paper' fine-tuning may touch and read; config variants."""

import jax
import numpy as np
import pytest

from mmtl_jax.ser import evaluate
from mmtl_jax.ser import losses
from mmtl_jax.ser import systems
from mmtl_jax.configs import aux_tasks as aux_tasks_config
from mmtl_jax.data import store as store_lib

from helpers import assert_trees_close


@pytest.fixture(scope='module')
def setup(tiny_config, corpus_root, tmp_path_factory):
  config = tiny_config(corpus_root)
  store = store_lib.build_feature_store(config, str(tmp_path_factory.mktemp('work')))
  return config, store


def _leaves(tree):
  return [np.asarray(x) for x in jax.tree.leaves(tree)]


@pytest.mark.parametrize('name, optimizer', [  # the fast tier keeps MMTL with the paper's SGD
    ('mmtl', 'sgd'), pytest.param('mmtl', 'adam', marks=pytest.mark.slow),
    pytest.param('cnn_lstm_mtl', 'sgd', marks=pytest.mark.slow),
    pytest.param('cnn_lstm_mtl', 'adam', marks=pytest.mark.slow)])
def test_paper_finetune_moves_only_the_tuned_part(setup, name, optimizer):
  config, store = setup
  config = config.copy_and_resolve_references()
  config.eval.finetune_optimizer = optimizer
  config.eval.finetune_lr = 0.05
  system = systems.make_system(name, config)
  params = system.init(jax.random.key(0), (1,) + store.features.shape[1:])
  tuned = evaluate.Evaluator(system, store, config).finetune(params, 'Ses01M', seed=0)
  labels = system.finetune_labels(params)
  for label, before, after in zip(jax.tree.leaves(labels), _leaves(params), _leaves(tuned)):
    if label == 'freeze':
      np.testing.assert_array_equal(before, after)
  moved = [not np.array_equal(b, a) for b, a in zip(_leaves(params), _leaves(tuned))]
  assert any(moved)


@pytest.mark.slow  # measured: two fine-tunings
def test_paper_finetune_never_reads_emotion_labels(setup):
  config, store = setup
  system = systems.make_system('mmtl', config)
  params = system.init(jax.random.key(0), (1,) + store.features.shape[1:])
  ev = evaluate.Evaluator(system, store, config)
  a = ev.finetune(params, 'Ses01M', seed=0)
  ev.speaker_data('Ses01M')['target'][:] = (ev.speaker_data('Ses01M')['target'] + 1) % 4
  b = ev.finetune(params, 'Ses01M', seed=0)
  assert_trees_close(a, b, rtol=0, atol=0)


def test_strict_and_cnn_lstm_use_no_test_labels(setup):
  config, store = setup
  system = systems.make_system('cnn_lstm', config)
  params = system.init(jax.random.key(0), (1,) + store.features.shape[1:])
  ev = evaluate.Evaluator(system, store, config)
  paper = ev.evaluate(params, 'Ses01M', 'paper')
  strict = ev.evaluate(params, 'Ses01M', 'strict')
  np.testing.assert_array_equal(paper['y_pred'], strict['y_pred'])
  with pytest.raises(ValueError, match='protocol'):
    ev.evaluate(params, 'Ses01M', 'oracle')


def test_aux_task_subsets_config():
  assert aux_tasks_config.get_config('VA').data.aux_tasks == ('valence', 'activation')
  assert aux_tasks_config.get_config('dv,demo').data.aux_tasks == ('valence', 'dominance')
  assert aux_tasks_config.get_config('D,demo').train.models == ('mmtl',)
  with pytest.raises(ValueError, match='V, A, D'):
    aux_tasks_config.get_config('VX')


def _pad_with(x, lengths, value):
  """x [N, T, F] with the frames t >= lengths[n] set to `value` [N, T, F] (or a scalar)."""
  valid = np.arange(x.shape[1])[None, :, None] < lengths[:, None, None]
  return np.where(valid, x, value).astype(np.float32)


@pytest.mark.slow  # measured: trains, fine-tunes and predicts each system
@pytest.mark.parametrize('name', ['mmtl', 'cnn_lstm', 'cnn_lstm_mtl'])
def test_every_system_ignores_what_follows_the_valid_frames(setup, name):
  """Training loss, 'paper' fine-tuning and prediction all pass the segments' lengths to the
  model: replacing the zero padding by noise changes nothing. Without lengths it would."""
  config, store = setup
  system = systems.make_system(name, config)
  params = system.init(jax.random.key(0), (1,) + store.features.shape[1:])
  ev = evaluate.Evaluator(system, store, config)
  data = ev.speaker_data('Ses01M')
  n, frames = data['x'].shape[:2]
  rng = np.random.default_rng(0)
  data['lengths'][:] = rng.integers(5, frames, n)  # 3 pools: 0 or 1 frame for the BiLSTM
  noise = rng.normal(size=data['x'].shape) * 3.0
  data['x'][:] = _pad_with(data['x'], data['lengths'], 0.0)
  zero_padded = ev.evaluate(params, 'Ses01M', 'paper')['probs']
  data['x'][:] = _pad_with(data['x'], data['lengths'], noise)
  np.testing.assert_allclose(ev.evaluate(params, 'Ses01M', 'paper')['probs'], zero_padded,
                             rtol=1e-5, atol=1e-6)
  full = np.full(n, frames, np.int32)
  assert not np.allclose(ev.segment_posteriors(params, data['x'], full),
                         ev.segment_posteriors(params, data['x'], data['lengths']), atol=1e-4)

  batch = losses.random_batch(2, 3, frames, data['x'].shape[2], num_aux=3, seed=1,
                              with_lengths=True)
  noisy = dict(batch, x=_pad_with(batch['x'].reshape(6, frames, -1), batch['lengths'].ravel(),
                                  rng.normal(size=(6, frames, batch['x'].shape[3])))
               .reshape(batch['x'].shape))
  step = jax.jit(system.train_step)
  loss = lambda b: float(step(params, system.init_opt(params), b, jax.random.key(1))[2]['loss'])
  np.testing.assert_allclose(loss(noisy), loss(batch), rtol=1e-5)
  assert not np.isclose(loss({k: v for k, v in noisy.items() if k != 'lengths'}), loss(batch),
                        rtol=1e-5)
