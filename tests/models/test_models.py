"""Tests of the Flax modules of Table 1 (tiny widths)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmtl_jax.models import BiLSTM, MetaLearner, TransferLearner

from helpers import assert_trees_close

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


@pytest.mark.slow  # measured
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


def _padded(segments, frames):
  """[len(segments), frames, F]: each segment [L_i, F] followed by noise (not zeros), which
  `lengths` must make irrelevant."""
  rng = np.random.default_rng(7)
  out = rng.normal(size=(len(segments), frames, segments[0].shape[1])) * 3.0
  for i, seg in enumerate(segments):
    out[i, :len(seg)] = seg
  return out


@pytest.mark.slow  # measured: float64 model, 4 paddings
@pytest.mark.parametrize('conv_vjp', [True, False])
def test_lengths_make_logits_independent_of_padding(conv_vjp):
  """One segment of valid length L gives the same logits alone ([1, L, F]) and padded to any
  T inside a batch of other lengths. Odd L at every resolution (5, 7, 11, 13) checks the pools'
  floor."""
  rng = np.random.default_rng(0)
  lengths = np.array([5, 7, 8, 11, 13])
  segments = [rng.normal(size=(n, 8)) for n in lengths]
  with jax.enable_x64(True):
    model = MetaLearner(**TINY, dtype=jnp.float64, conv_vjp=conv_vjp)
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 16, 8)))['params']
    params = jax.tree.map(lambda p: p.astype(jnp.float64), params)
    apply = jax.jit(model.apply)  # eager custom_vjp convolutions re-trace on every call
    alone = np.concatenate([apply({'params': params}, seg[None]) for seg in segments])
    for frames in (13, 14, 16, 23):
      padded = apply({'params': params}, _padded(segments, frames), lengths=lengths)
      np.testing.assert_allclose(padded, alone, rtol=1e-12, atol=1e-12)
    # Without lengths the padding leaks into the summary: what the masking fixes.
    leaky = apply({'params': params}, _padded(segments, 16))
    assert np.abs(leaky - alone).max(axis=1).min() > 1e-3
    # L = 3 and L = 0 leave no frame for the BiLSTM after two pools: the zero summary.
    empty = apply({'params': params}, _padded(segments[:2], 16), lengths=np.array([3, 0]))
    np.testing.assert_allclose(empty[0], empty[1], rtol=1e-12, atol=1e-12)


def test_lengths_in_float32_and_features_only():
  rng = np.random.default_rng(1)
  seg = rng.normal(size=(9, 8)).astype(np.float32)
  model = MetaLearner(**TINY, features_only=True)
  params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 16, 8)))['params']
  alone = model.apply({'params': params}, seg[None])
  padded = model.apply({'params': params}, _padded([seg], 20).astype(np.float32),
                       lengths=np.array([9], np.int32))
  np.testing.assert_allclose(padded, alone, rtol=1e-5, atol=1e-6)


def test_without_lengths_every_frame_counts():
  """lengths=None keeps the old behaviour: identical to lengths = T, and the last frame (here
  a padded one) reaches both the forward state and the logits."""
  x = jax.random.normal(jax.random.PRNGKey(1), (2, 16, 8))
  model = MetaLearner(**TINY)
  params = model.init(jax.random.PRNGKey(0), x)['params']
  plain = model.apply({'params': params}, x)
  np.testing.assert_allclose(plain, model.apply({'params': params}, x,
                                                lengths=jnp.array([16, 16])), rtol=1e-6)
  bumped = x.at[:, -1].add(1.0)
  assert not np.allclose(plain, model.apply({'params': params}, bumped))
  masked = model.apply({'params': params}, x, lengths=jnp.array([12, 12]))
  np.testing.assert_array_equal(
      masked, model.apply({'params': params}, bumped, lengths=jnp.array([12, 12])))
  with pytest.raises(ValueError, match='lengths must have shape'):
    model.apply({'params': params}, x, lengths=jnp.array([12]))


def test_bilstm_with_lengths_matches_reference_on_the_valid_frames():
  x = np.random.default_rng(2).normal(size=(3, 7, 6)).astype(np.float32)
  lengths = np.array([7, 4, 1])
  module = BiLSTM(hidden=4)
  params = module.init(jax.random.PRNGKey(0), x)['params']
  params = dict(params, bias=jax.random.normal(jax.random.PRNGKey(1), params['bias'].shape))
  out = module.apply({'params': params}, x, lengths)
  for b, n in enumerate(lengths):
    np.testing.assert_allclose(out[b], _reference_bilstm(params, x[b:b + 1, :n])[0],
                               rtol=1e-5, atol=1e-5)


@pytest.mark.slow  # measured: 3 gradient compiles
@pytest.mark.parametrize('conv_vjp', [True, False])
def test_gradients_with_lengths_ignore_padding(conv_vjp):
  """d logits / d params are those of the unpadded segment (custom conv VJPs included), and
  nothing flows into the padded frames."""
  rng = np.random.default_rng(3)
  seg = rng.normal(size=(11, 8)).astype(np.float32)
  model = MetaLearner(**TINY, conv_vjp=conv_vjp)
  params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 16, 8)))['params']

  def loss(p, x, lengths=None):
    return jnp.sum(model.apply({'params': p}, x, lengths=lengths) ** 2)

  x = jnp.asarray(_padded([seg], 16), jnp.float32)
  grad = jax.jit(jax.grad(loss))  # eager custom_vjp convolutions re-trace on every call
  g_alone = grad(params, seg[None])
  g_padded = grad(params, x, jnp.array([11]))
  assert_trees_close(g_padded, g_alone, rtol=1e-4, atol=1e-6)
  g_x = jax.jit(jax.grad(loss, argnums=1))(params, x, jnp.array([11]))
  assert np.all(g_x[0, 11:] == 0) and np.any(g_x[0, :11] != 0)
