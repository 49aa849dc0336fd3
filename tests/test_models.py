"""Tests of the Flax modules of Table 1 (tiny widths)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmtl_jax.models import BiLSTM, MetaLearner, TransferLearner

TINY = dict(conv_features=(2, 3), conv_kernels=((3, 3), (2, 3)), lstm_hidden=4, fc_hidden=5,
            num_outputs=4)


def _sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def _reference_bilstm(params, x):
  """Textbook per-timestep LSTM in numpy, each direction separately (gates i, f, g, o)."""
  w_in = np.asarray(params['input_kernel'])  # [D, 2, 4H]
  bias = np.asarray(params['bias'])  # [2, 4H]
  w_rec = np.asarray(params['recurrent_kernel'])  # [2, H, 4H]
  batch, steps, _ = x.shape
  hidden = w_rec.shape[1]
  finals = []
  for direction in range(2):
    h = np.zeros((batch, hidden))
    c = np.zeros((batch, hidden))
    order = range(steps) if direction == 0 else reversed(range(steps))
    for t in order:
      gates = x[:, t] @ w_in[:, direction] + bias[direction] + h @ w_rec[direction]
      i, f, g, o = np.split(gates, 4, axis=-1)
      c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
      h = _sigmoid(o) * np.tanh(c)
    finals.append(h)
  return np.concatenate(finals, axis=-1)


def test_bilstm_matches_per_timestep_reference():
  x = np.random.default_rng(0).normal(size=(3, 5, 6)).astype(np.float32)
  module = BiLSTM(hidden=4)
  params = module.init(jax.random.PRNGKey(0), x)['params']
  # Non-zero biases so a wrong gate order or direction cannot hide.
  params = dict(params, bias=jax.random.normal(jax.random.PRNGKey(1), params['bias'].shape))
  out = module.apply({'params': params}, x)
  assert out.shape == (3, 8)
  np.testing.assert_allclose(out, _reference_bilstm(params, x), rtol=1e-5, atol=1e-5)


def test_bilstm_backward_state_depends_on_first_frame():
  """The backward direction's final state has read the sequence down to frame 0."""
  x = np.random.default_rng(0).normal(size=(1, 6, 3)).astype(np.float32)
  module = BiLSTM(hidden=4)
  params = module.init(jax.random.PRNGKey(0), x)['params']
  x2 = x.copy()
  x2[:, 0] += 1.0
  out, out2 = module.apply({'params': params}, x), module.apply({'params': params}, x2)
  assert not np.allclose(out[:, 4:], out2[:, 4:])  # backward half changed


def test_meta_learner_shapes_and_param_tree():
  model = MetaLearner(**TINY)
  x = jnp.ones((2, 8, 8))
  params = model.init(jax.random.PRNGKey(0), x)['params']
  assert set(params) == {'conv_0', 'conv_1', 'bilstm', 'fc_hidden', 'head'}
  assert params['conv_0']['kernel'].shape == (3, 3, 1, 2)
  assert params['conv_1']['kernel'].shape == (2, 3, 2, 3)
  # 8x8 -> two 2x2 pools -> 2 frames x (2 bins * 3 channels) into the LSTM.
  assert params['bilstm']['input_kernel'].shape == (6, 2, 16)
  assert params['head']['kernel'].shape == (5, 4)
  out = model.apply({'params': params}, x)
  assert out.shape == (2, 4) and out.dtype == jnp.float32


def test_bfloat16_compute_keeps_float32_params():
  model = MetaLearner(**TINY, dtype=jnp.bfloat16)
  x = jax.random.normal(jax.random.PRNGKey(1), (2, 8, 8))
  params = model.init(jax.random.PRNGKey(0), x)['params']
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(params))
  out = model.apply({'params': params}, x)
  ref = MetaLearner(**TINY).apply({'params': params}, x)
  assert out.dtype == jnp.float32
  np.testing.assert_allclose(out, ref, atol=0.05)


def test_dropout_uses_explicit_rng():
  model = MetaLearner(**TINY, dropout=0.5)
  x = jax.random.normal(jax.random.PRNGKey(1), (4, 8, 8))
  params = model.init(jax.random.PRNGKey(0), x)['params']
  run = lambda seed: model.apply({'params': params}, x, train=True,
                                 rngs={'dropout': jax.random.PRNGKey(seed)})
  np.testing.assert_array_equal(run(3), run(3))
  assert not np.allclose(run(3), run(4))
  np.testing.assert_array_equal(model.apply({'params': params}, x),
                                model.apply({'params': params}, x))


def test_transfer_learner_is_one_dense_layer():
  module = TransferLearner(num_outputs=4)
  z = jax.random.normal(jax.random.PRNGKey(1), (3, 4))
  params = module.init(jax.random.PRNGKey(0), z)['params']
  out = module.apply({'params': params}, z)
  np.testing.assert_allclose(out, z @ params['fc']['kernel'] + params['fc']['bias'], rtol=1e-6)


def test_input_too_small_for_pools_is_an_error():
  model = MetaLearner(**TINY)
  with pytest.raises(ValueError, match='too small'):
    model.init(jax.random.PRNGKey(0), jnp.ones((1, 2, 8)))
