"""Stride-1 SAME 2-D convolution whose derivatives, to second order, are plain NHWC convolutions.

Why: exact MAML differentiates through the inner gradient, i.e. it transposes the convolution
gradients JAX's own rules emit. Those second-order transposes come out with layouts such as
`01fb_o01i->f01b` plus a window reversal, which XLA:CPU cannot hand to its fast convolution
kernels, so they dominate the exact meta-gradient. Here every derivative is written by hand as
a forward NHWC/HWIO convolution (plus cheap flips and transposes of the small kernel), so each
order of differentiation stays on the fast path.

`conv2d_same(x, w)` equals `lax.conv_general_dilated(x, w, (1, 1), 'SAME', NHWC/HWIO/NHWC)`;
it supports reverse mode to any order and vmap, not forward mode (jvp): use `Conv(...,
custom_vjp=False)` (config `model.conv_vjp = False`) for forward-over-reverse work.

Under `jax.vmap` with per-task weights (the 'vmap' task strategy), lax batches a convolution
whose two operands are both batched into a grouped convolution, which XLA:CPU runs 10x below
its usual rate. So every convolution that the custom VJPs emit goes through `_task_looped`: a
`jax.custom_batching.custom_vmap` whose rule loops over the vmapped axis when both operands
are batched (one ordinary convolution per task, as the 'loop' strategy does) and folds the
vmapped axis into the batch when only the input is. custom_vmap has no autodiff rule, which is
why it only ever appears inside the custom VJPs' own functions: autodiff never linearises it,
at any order.
"""

from typing import Any, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import custom_batching
from jax import lax

_DN = ('NHWC', 'HWIO', 'NHWC')


def _same_pads(kernel: Tuple[int, int]) -> Tuple[Tuple[int, int], ...]:
  """SAME padding of a stride-1 convolution: (k - 1) // 2 before, the rest after."""
  return tuple(((k - 1) // 2, k - 1 - (k - 1) // 2) for k in kernel)


def _conv(x, w, pads):
  """Stride-1 NHWC/HWIO convolution with explicit pads ((lo, hi), (lo, hi))."""
  if x.shape[-1] == 1 and w.shape[1] > 1:
    return _conv_one_channel(x, w, pads)
  return lax.conv_general_dilated(x, w, (1, 1), pads, dimension_numbers=_DN)


def _conv_one_channel(x, w, pads):
  """`_conv` for a 1-channel input (the spectrogram entering the first block).

  XLA:CPU runs a convolution with one input channel far below its usual rate. Stacking the kw
  frequency shifts of the input as channels turns it into a (kh, 1) convolution over kw
  channels with the same products, which XLA:CPU runs at its usual, much higher rate.
  """
  kh, kw, _, out = w.shape
  (pad_h, (lo, hi)) = pads
  width = x.shape[2] + lo + hi - kw + 1
  padded = jnp.pad(x[..., 0], ((0, 0), (0, 0), (lo, hi)))
  shifts = jnp.stack([padded[:, :, j:j + width] for j in range(kw)], axis=-1)  # [N, H, W', kw]
  return lax.conv_general_dilated(shifts, w.reshape(kh, 1, kw, out), (1, 1), (pad_h, (0, 0)),
                                  dimension_numbers=_DN)


def _fold_into_batch(op, x, w):
  """op(x, w) for x [T, N, ...] batched and w shared: the T axis folded into the batch N."""
  out = op(x.reshape((-1,) + x.shape[2:]), w)
  return out.reshape(x.shape[:2] + out.shape[1:])


def _task_looped(fn, fold=None):
  """`fn(a, b)` (one convolution) whose vmap rule never emits a grouped convolution.

  Both operands batched: one `fn` per index of the vmapped axis, stacked (a Python loop,
  unrolled into the jit like the 'loop' strategy). Only `a` batched and `fold` given:
  fold(op, a, b), e.g. the vmapped axis folded into the convolution's batch. Otherwise the
  unbatched operand is broadcast and looped over. Nested vmaps reach the same rule again.
  Not differentiable (custom_vmap): call it only inside custom_vjp functions.
  """
  @custom_batching.custom_vmap
  def op(a, b):
    return fn(a, b)

  @op.def_vmap
  def rule(axis_size, in_batched, a, b):
    a_batched, b_batched = in_batched
    if a_batched and not b_batched and fold is not None:
      return fold(op, a, b), True
    a = a if a_batched else jnp.broadcast_to(a, (axis_size,) + a.shape)
    b = b if b_batched else jnp.broadcast_to(b, (axis_size,) + b.shape)
    return jnp.stack([op(a[i], b[i]) for i in range(axis_size)]), True

  return op


_LOOPED_CONVS = {}


def _looped_conv(x, w, pads):
  """`_conv(x, w, pads)` with `_task_looped`'s vmap rule (for the custom VJPs only)."""
  if pads not in _LOOPED_CONVS:
    _LOOPED_CONVS[pads] = _task_looped(lambda a, b, pads=pads: _conv(a, b, pads),
                                       _fold_into_batch)
  return _LOOPED_CONVS[pads](x, w)


@jax.custom_vjp
def _input_grad(dy: jax.Array, w: jax.Array) -> jax.Array:
  """d(conv2d_same(x, w))/dx applied to dy [N, H, W, O]: a SAME convolution with the kernel
  flipped in space and its in/out axes swapped; the padding swaps ends."""
  pads = tuple((hi, lo) for lo, hi in _same_pads(w.shape[:2]))
  return _looped_conv(dy, jnp.flip(w, (0, 1)).transpose(0, 1, 3, 2), pads)


def _input_grad_fwd(dy, w):
  return _input_grad(dy, w), (dy, w)


def _input_grad_bwd(res, g):  # g: cotangent of dx, [N, H, W, I]
  dy, w = res
  return (_looped_conv(g, w, _same_pads(w.shape[:2])),
          _filter_grad_for(tuple(w.shape[:2]))(g, dy).astype(w.dtype))


_input_grad.defvjp(_input_grad_fwd, _input_grad_bwd)


def _make_filter_grad(kernel: Tuple[int, int]):
  """The filter gradient for one kernel size, with a hand-written VJP (two NHWC convs)."""
  pads = _same_pads(kernel)

  def raw(x, dy):
    # Batch becomes the contraction axis: lhs [I, H, W, N], rhs [H, W, N, O] -> [I, kh, kw, O].
    out = lax.conv_general_dilated(x.transpose(3, 1, 2, 0), dy.transpose(1, 2, 0, 3), (1, 1),
                                   pads, dimension_numbers=_DN)
    return out.transpose(1, 2, 0, 3)

  looped = _task_looped(raw)

  @jax.custom_vjp
  def filter_grad(x, dy):
    return looped(x, dy)

  def fwd(x, dy):
    return filter_grad(x, dy), (x, dy)

  def bwd(res, g):  # g: cotangent of dW, [kh, kw, I, O]
    x, dy = res
    return _input_grad(dy, g), _looped_conv(x, g, pads)

  filter_grad.defvjp(fwd, bwd)
  return filter_grad


_FILTER_GRADS = {}


def _filter_grad_for(kernel: Tuple[int, int]):
  if kernel not in _FILTER_GRADS:
    _FILTER_GRADS[kernel] = _make_filter_grad(kernel)
  return _FILTER_GRADS[kernel]


@jax.custom_vjp
def conv2d_same(x: jax.Array, w: jax.Array) -> jax.Array:
  """Stride-1 SAME convolution, x [N, H, W, I], w [kh, kw, I, O] -> [N, H, W, O]."""
  return _looped_conv(x, w, _same_pads(w.shape[:2]))


def _conv_fwd(x, w):
  return conv2d_same(x, w), (x, w)


def _conv_bwd(res, dy):
  x, w = res
  return _input_grad(dy, w), _filter_grad_for(tuple(w.shape[:2]))(x, dy).astype(w.dtype)


conv2d_same.defvjp(_conv_fwd, _conv_bwd)


class Conv(nn.Module):
  """`nn.Conv(features, kernel_size, strides=1, padding='SAME')` with the same parameters
  ('kernel' [kh, kw, I, O], lecun-normal; 'bias' [O], zeros), computed by `conv2d_same` when
  `custom_vjp` (else by lax's own rules, which allow jvp)."""

  features: int
  kernel_size: Tuple[int, int]
  custom_vjp: bool = True
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param('kernel', nn.initializers.lecun_normal(),
                        tuple(self.kernel_size) + (x.shape[-1], self.features), self.param_dtype)
    bias = self.param('bias', nn.initializers.zeros, (self.features,), self.param_dtype)
    x, kernel, bias = (a.astype(self.dtype) for a in (x, kernel, bias))
    if self.custom_vjp:
      y = conv2d_same(x, kernel)
    else:
      y = _conv(x, kernel, _same_pads(self.kernel_size))
    return y + bias


__all__ = ['Conv', 'conv2d_same']
