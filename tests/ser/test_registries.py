"""Extensions by registration alone: a model, a meta mode, a corpus and a system are each one
definition plus one registry entry, with no library file edited."""

import dataclasses
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from mmtl_jax import meta, models
from mmtl_jax.configs import base
from mmtl_jax.data import corpus
from mmtl_jax.registry import Registry
from mmtl_jax.ser import losses as ser
from mmtl_jax.ser import systems
from mmtl_jax.ser import train

from helpers import assert_trees_close


class TinyMLP(nn.Module):
  """Mean over time, then FC layers: [B, T, F] -> [B, num_outputs] (the models contract)."""
  fc_hidden: int = 8
  num_outputs: int = 4
  dropout: float = 0.0
  dtype: jnp.dtype = jnp.float32
  features_only: bool = False

  @nn.compact
  def __call__(self, x, train=False):
    h = nn.relu(nn.Dense(self.fc_hidden, dtype=self.dtype, name='fc_in')(x.mean(axis=1)))
    if self.features_only:
      return h
    h = nn.Dropout(self.dropout, deterministic=not train)(h)
    return nn.Dense(self.num_outputs, dtype=self.dtype, name='head')(h).astype(jnp.float32)


@pytest.fixture
def tiny_mlp():
  models.MODELS.register('tiny_mlp', TinyMLP)
  yield ml_collections.ConfigDict(dict(name='tiny_mlp', fc_hidden=8, num_outputs=4,
                                       dropout=0.0, dtype='float32'))
  models.MODELS.unregister('tiny_mlp')


def test_registry_errors_list_the_known_names():
  reg = Registry('widget', 'config.widget')
  reg.register('a', 1)
  with pytest.raises(ValueError, match=r"unknown widget 'b' \(config.widget\); known: \('a',\)"):
    reg.get('b')
  with pytest.raises(ValueError, match='already registered'):
    reg.register('a', 2)
  reg.register('a', 2, replace=True)
  assert reg.get('a') == 2 and list(reg) == ['a'] and 'a' in reg


@pytest.mark.parametrize('kind, registry, name', [
    ('model', models.MODELS, 'cnn_bilstm'),
    ('meta mode', meta.MODES, 'reptile'),
    ('corpus', corpus.CORPORA, 'manifest'),
    ('system', systems.SYSTEMS, 'cnn_lstm_mtl'),
])
def test_builtin_entries_and_unknown_names(kind, registry, name):
  assert name in registry
  with pytest.raises(ValueError, match=f"unknown {kind} 'nope'.*known: .*'{name}'"):
    registry.get('nope')


def test_unknown_meta_mode_is_refused_when_configured():
  config = base.get_config()
  config.meta.mode = 'maml'
  with pytest.raises(ValueError, match=r"unknown meta mode 'maml'.*config.meta.mode.*"
                                       r"'exact', 'first_order'"):
    ser.mmtl_spec(config)


@pytest.mark.slow  # the demo loop end to end
def test_a_registered_model_runs_through_the_demo_loop(tiny_mlp, tiny_config, corpus_root,
                                                       tmp_path):
  config = tiny_config(corpus_root, steps=2)
  config.model = tiny_mlp
  out = train.train_and_evaluate(config, str(tmp_path / 'work'))
  assert {(r['model'], r['protocol']) for r in out['runs']} == {
      (m, p) for m in ('mmtl', 'cnn_lstm', 'cnn_lstm_mtl') for p in ('paper', 'strict')}
  bundle = tmp_path / 'work' / 'mmtl' / out['runs'][0]['folds'][0]['fold'] / 'bundle'
  assert bundle.exists()
  params = ser.init_params(tiny_mlp, jax.random.PRNGKey(0), (1, 16, 33))
  assert set(params['theta']) == {'fc_in', 'head'}  # the MLP, not the CNN-BiLSTM


@pytest.mark.slow  # over 5 s alone
def test_a_registered_meta_mode_runs_through_make_step(tiny_model):
  calls = []

  @dataclasses.dataclass(frozen=True)
  class HalfFirstOrder(meta.Estimator):
    """First order, scaled by `scale`: an estimator a researcher might add."""
    scale: float = 0.5

    def direction(self, params, task):
      calls.append(1)
      grads, loss, adapted, stats = meta.FirstOrder().direction(params, task)
      return jax.tree.map(lambda g: self.scale * g, grads), loss, adapted, stats

  meta.MODES.register('half_first_order', HalfFirstOrder)
  try:
    model = tiny_model()
    params = ser.init_params(model, jax.random.PRNGKey(0), (1, 8, 8))
    batch = ser.random_batch(2, 3, 8, 8, seed=0)
    inner_loss, transfer_loss = ser.make_losses(model)
    grads = {}
    for mode in ('first_order', 'half_first_order'):
      spec = meta.recipes.mmtl(inner_loss, transfer_loss, alpha=0.01, beta=0.01, mode=mode,
                               strategy='loop')
      grads[mode] = meta.meta_gradient(spec, params, batch, jax.random.PRNGKey(1)).grads
      init_fn, step_fn = meta.make_step(spec, meta.recipes.mmtl_optimizer(1e-3))
      new, _, metrics = jax.jit(step_fn)(params, init_fn(params), batch, jax.random.PRNGKey(1))
      assert np.isfinite(float(metrics['outer_loss']))
      assert not np.allclose(new['theta']['head']['kernel'], params['theta']['head']['kernel'])
  finally:
    meta.MODES.unregister('half_first_order')
  assert calls
  halved = jax.tree.map(lambda g: 0.5 * g, grads['first_order'])
  assert_trees_close(grads['half_first_order'], halved, rtol=1e-5, atol=1e-8)


def test_a_registered_corpus_is_read_by_kind(tiny_config, corpus_root):
  def first_session_only(data, workdir):
    """A corpus reader: the synthetic corpus's session 1, speakers renamed."""
    del workdir
    data = ml_collections.ConfigDict(data.to_dict())
    data.iemocap.sessions = (1,)
    utts, problems = corpus.iemocap.read_iemocap(data)
    return [u.__class__(**{**u.__dict__, 'speaker': 'spk_' + u.speaker}) for u in utts], problems

  corpus.CORPORA.register('session_one', first_session_only)
  try:
    config = tiny_config(corpus_root)
    config.data.kind = 'session_one'
    utts, _ = corpus.read_corpus(config)
  finally:
    corpus.CORPORA.unregister('session_one')
  assert {u.speaker for u in utts} == {'spk_Ses01F', 'spk_Ses01M'}
