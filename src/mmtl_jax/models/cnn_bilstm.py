"""The meta learner of Table 1 (registered as 'cnn_bilstm'): CNN blocks, a BiLSTM over
time, two FC layers.

Pure Flax (linen) modules: parameters in, logits out. Dropout, when enabled, draws from an
explicit 'dropout' rng passed to `apply`; nothing else is stateful (no batch norm).
"""

from typing import Any, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmtl_jax.models.conv import Conv

Dtype = Any

DTYPES = {
    'float32': jnp.float32,
    'bfloat16': jnp.bfloat16,
    'float16': jnp.float16,
    'float64': jnp.float64,
}


def compute_dtype(name: Any) -> Dtype:
  """Maps a config string ('float32', 'bfloat16', ...) or a dtype to a jnp dtype."""
  if isinstance(name, str):
    if name not in DTYPES:
      raise ValueError(f'unknown compute dtype {name!r}; expected one of {sorted(DTYPES)}')
    return DTYPES[name]
  return jnp.dtype(name).type


def max_pool_2x2(y: jax.Array) -> jax.Array:
  """2x2 max pool, stride 2, floor on odd sizes: [B, H, W, C] -> [B, H // 2, W // 2, C].

  A reshape and a max instead of `nn.max_pool`: same values and, away from ties, the same
  gradients, but XLA:CPU runs its backward pass much faster than select-and-scatter, and its
  second-order derivatives are elementwise selects instead of select-and-scatter transposes.
  """
  b, h, w, c = y.shape
  if h < 2 or w < 2:
    raise ValueError(f'input too small for another 2x2 max pool: {y.shape}')
  y = y[:, :h - h % 2, :w - w % 2, :].reshape(b, h // 2, 2, w // 2, 2, c)
  return y.max(axis=(2, 4))


def valid_lengths(lengths: jax.Array, batch: int, frames: int) -> jax.Array:
  """`lengths` as int32 [batch] clipped to [0, frames]: a segment cut at `frames` is valid
  up to `frames`.

  Raises:
    ValueError: `lengths` is not of shape [batch].
  """
  lengths = jnp.asarray(lengths)
  if lengths.shape != (batch,):
    raise ValueError(f'lengths must have shape [batch] = ({batch},), got {lengths.shape}')
  return jnp.clip(lengths.astype(jnp.int32), 0, frames)


def mask_frames(y: jax.Array, lengths: jax.Array) -> jax.Array:
  """y [B, T, ...] with every frame t >= lengths[b] set to zero (lengths int32 [B])."""
  batch, frames = y.shape[:2]
  valid = jnp.arange(frames, dtype=jnp.int32)[None, :] < lengths[:, None]  # [B, T]
  valid = valid.reshape((batch, frames) + (1,) * (y.ndim - 2))
  return jnp.where(valid, y, jnp.zeros((), y.dtype))


def _direction_masks(lengths: jax.Array, steps: int) -> jax.Array:
  """bool [T, 2, B, 1]: whether scan step s updates the carry of each direction.

  The forward direction reads frames 0 .. L-1 at steps 0 .. L-1, then holds its state. The
  backward direction reads time reversed: step s is frame T-1-s, valid when T-1-s < L, i.e.
  its carry stays at zero over the padded prefix and it starts at the last valid frame.
  """
  s = jnp.arange(steps, dtype=jnp.int32)[:, None]  # [T, 1]
  forward = s < lengths[None, :]
  backward = s >= steps - lengths[None, :]
  return jnp.stack([forward, backward], axis=1)[..., None]


class BiLSTM(nn.Module):
  """One bidirectional LSTM layer returning [final forward h, final backward h].

  Input [B, T, D] (and optionally `lengths` int32 [B], the valid frames of each row) ->
  output [B, 2 * hidden]. We summarise the sequence by the final hidden state of each
  direction (what PyTorch's `h_n` holds, or a packed sequence's with `lengths`) rather than a
  mean over time: the inputs are zero-padded to a fixed length, and a time mean would average
  the padding in. With `lengths`, the forward state is the one after frame L-1 and the
  backward state starts at frame L-1, so neither has seen a padded frame: the output equals
  that of the unpadded [B, L, D] input. Without it, every frame counts as valid.

  Efficiency: the input projections of both directions and all timesteps are ONE matmul
  [B*T, D] x [D, 8H] before the scan; the scan body only does the recurrent matmul, with
  both directions batched as one einsum over a leading direction axis of size 2.
  Gate order i, f, g, o (PyTorch's). The cell state is carried in at least float32 whatever
  the compute dtype, since it accumulates over time.
  """

  hidden: int
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def _params(self, features: int):
    """(w_in [D, 2, 4H], bias [2, 4H], w_rec [2, H, 4H]) in the compute dtype."""
    h = self.hidden
    init = nn.initializers.uniform(scale=1.0)  # rescaled below to PyTorch's U(-1/sqrt(H), .)
    bound = 1.0 / jnp.sqrt(h)

    def uniform_init(key, shape, dtype):
      return (init(key, shape, dtype) * 2.0 - 1.0) * bound

    w_in = self.param('input_kernel', uniform_init, (features, 2, 4 * h), self.param_dtype)
    bias = self.param('bias', nn.initializers.zeros, (2, 4 * h), self.param_dtype)
    w_rec = self.param('recurrent_kernel', uniform_init, (2, h, 4 * h), self.param_dtype)
    return tuple(a.astype(self.dtype) for a in (w_in, bias, w_rec))

  @nn.compact
  def __call__(self, x: jax.Array, lengths: Optional[jax.Array] = None) -> jax.Array:
    batch, steps, features = x.shape
    h = self.hidden
    w_in, bias, w_rec = self._params(features)
    proj = jnp.einsum('btd,dkg->tkbg', x.astype(self.dtype), w_in) + bias[:, None, :]
    # The backward direction reads time reversed: flip its projections once, up front.
    proj = jnp.stack([proj[:, 0], proj[::-1, 1]], axis=1)  # [T, 2, B, 4H]

    cell_dtype = jnp.promote_types(self.dtype, jnp.float32)

    def cell(carry, p_t):
      h_t, c_t = carry  # [2, B, H] each; h in compute dtype, c in at least float32
      gates = p_t + jnp.einsum('kbh,khg->kbg', h_t, w_rec)
      i, f, g, o = jnp.split(gates.astype(cell_dtype), 4, axis=-1)
      c_t = jax.nn.sigmoid(f) * c_t + jax.nn.sigmoid(i) * jnp.tanh(g)
      h_t = (jax.nn.sigmoid(o) * jnp.tanh(c_t)).astype(self.dtype)
      return (h_t, c_t)

    def masked_cell(carry, inputs):
      p_t, valid_t = inputs  # valid_t [2, B, 1]: past the valid frames the carry is held
      new = cell(carry, p_t)
      return tuple(jnp.where(valid_t, n, old) for n, old in zip(new, carry)), None

    carry0 = (jnp.zeros((2, batch, h), self.dtype), jnp.zeros((2, batch, h), cell_dtype))
    if lengths is None:
      (h_final, _), _ = jax.lax.scan(lambda c, p: (cell(c, p), None), carry0, proj)
    else:
      masks = _direction_masks(valid_lengths(lengths, batch, steps), steps)
      (h_final, _), _ = jax.lax.scan(masked_cell, carry0, (proj, masks))
    return jnp.concatenate([h_final[0], h_final[1]], axis=-1)


class MetaLearner(nn.Module):
  """Table 1 meta learner: [B, T, F] spectrogram -> [B, num_outputs] logits.

  Conv blocks: `Conv(features, kernel=(time, freq), stride 1, SAME) -> ReLU -> max-pool 2x2
  stride 2` for each entry of `conv_features`; the time axis then becomes the sequence
  (frequency x channels flattened per frame), a BiLSTM, FC `fc_hidden` + ReLU, and FC
  `num_outputs`: the ONE head shared by all auxiliary tasks (paper section 2.2).
  Odd sizes are floored by each pool, so T and F shrink to T // 2**n and F // 2**n; both
  must stay >= 1. `lengths` (see `__call__`) makes the logits independent of the zero padding
  after each segment's valid frames; a segment with L // 2**n == 0 has no valid frame left
  for the BiLSTM, whose summary is then its initial (zero) state.
  """

  conv_features: Sequence[int] = (16, 24, 32)
  conv_kernels: Sequence[Tuple[int, int]] = ((12, 16), (8, 12), (5, 7))
  lstm_hidden: int = 128
  fc_hidden: int = 64
  num_outputs: int = 4
  dropout: float = 0.0
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  # True: stop after the BiLSTM and return [B, 2 * lstm_hidden] (the shared extractor of the
  # CNN-LSTM+MTL baseline, which puts its own FC layers per task on top).
  features_only: bool = False
  # True: convolutions with hand-written VJPs (models/conv.py), whose second-order derivatives
  # stay on XLA:CPU's fast kernels; False: lax's own rules, needed for forward-mode autodiff.
  conv_vjp: bool = True

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False,
               lengths: Optional[jax.Array] = None) -> jax.Array:
    """x [B, T, F] -> logits [B, num_outputs] ([B, 2 * lstm_hidden] if features_only).

    lengths: int32 [B], the valid (unpadded) frames of each segment, or None: all T frames
    are valid. With lengths, frames t >= L are zeroed on input and after every conv block
    (at that block's resolution, L // 2**i: the same floor as the pools), so each block sees
    exactly what an unpadded [1, L, F] input would, and the BiLSTM summarises only the
    L // 2**n valid frames: the output does not depend on how much padding follows.
    """
    if x.ndim != 3:
      raise ValueError(f'MetaLearner expects [batch, time, freq], got shape {x.shape}')
    if len(self.conv_features) != len(self.conv_kernels):
      raise ValueError('conv_features and conv_kernels must have the same length')
    y = x[..., None].astype(self.dtype)  # NHWC with H = time, W = frequency
    if lengths is not None:
      lengths = valid_lengths(lengths, x.shape[0], x.shape[1])
      y = mask_frames(y, lengths)
    for i, (feat, kernel) in enumerate(zip(self.conv_features, self.conv_kernels)):
      y = Conv(feat, tuple(kernel), custom_vjp=self.conv_vjp, dtype=self.dtype,
               param_dtype=self.param_dtype, name=f'conv_{i}')(y)
      y = max_pool_2x2(nn.relu(y))
      if lengths is not None:
        # Pooled frame j reads frames 2j and 2j+1: valid iff 2j+1 < L, i.e. j < L // 2.
        lengths = lengths // 2
        y = mask_frames(y, lengths)
    batch, frames, bins, channels = y.shape
    y = y.reshape(batch, frames, bins * channels)
    y = BiLSTM(self.lstm_hidden, dtype=self.dtype, param_dtype=self.param_dtype,
               name='bilstm')(y, lengths)
    if self.features_only:
      return y
    y = nn.Dropout(self.dropout, deterministic=not train)(y)
    y = nn.Dense(self.fc_hidden, dtype=self.dtype, param_dtype=self.param_dtype,
                 name='fc_hidden')(y)
    y = nn.Dropout(self.dropout, deterministic=not train)(nn.relu(y))
    y = nn.Dense(self.num_outputs, dtype=self.dtype, param_dtype=self.param_dtype,
                 name='head')(y)
    return y.astype(jnp.promote_types(self.dtype, jnp.float32))  # f32, or f64 in x64 tests


__all__ = [
    'BiLSTM', 'compute_dtype', 'Dtype', 'DTYPES', 'mask_frames', 'max_pool_2x2', 'MetaLearner',
    'valid_lengths',
]
