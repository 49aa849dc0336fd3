"""models/conv.py and max_pool_2x2 against lax / flax references, to second order."""

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmtl_jax.models.conv import Conv, conv2d_same
from mmtl_jax.models.cnn_bilstm import MetaLearner, max_pool_2x2

from helpers import assert_trees_close


def _lax_conv(x, w):
  return jax.lax.conv_general_dilated(x, w, (1, 1), 'SAME',
                                      dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


def _loss(conv):
  return lambda x, w: jnp.sum(jnp.sin(conv(x, w)) ** 2)


def _second_order(conv):
  """A scalar of both first derivatives, like exact MAML's outer loss of the inner gradient."""
  f = _loss(conv)
  return lambda x, w: (jnp.sum(jnp.cos(jax.grad(f, 1)(x, w)))
                       + jnp.sum(jax.grad(f, 0)(x, w) ** 3))


# One input channel (the spectrogram) takes the frequency-shift path of `_conv`. The two cases
# measured slowest run in the full suite only.
@pytest.mark.parametrize('kernel, channels', [
    pytest.param((3, 3), 3, marks=pytest.mark.slow), ((2, 3), 3), ((4, 5), 3), ((1, 1), 3),
    pytest.param((4, 5), 1, marks=pytest.mark.slow), ((3, 2), 1)])
def test_conv2d_same_matches_lax_to_second_order(kernel, channels):
  with jax.enable_x64(True):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(2, 7, 6, channels)))
    w = jnp.asarray(rng.normal(size=kernel + (channels, 4)))
    assert_trees_close(conv2d_same(x, w), _lax_conv(x, w), rtol=0, atol=1e-12)
    assert_trees_close(jax.grad(_loss(conv2d_same), (0, 1))(x, w),
                       jax.grad(_loss(_lax_conv), (0, 1))(x, w), rtol=0, atol=1e-10)
    ours = jax.grad(_second_order(conv2d_same), (0, 1))(x, w)
    ref = jax.grad(_second_order(_lax_conv), (0, 1))(x, w)
    assert_trees_close(ours, ref, rtol=0, atol=1e-9)
    # Per-task weights under vmap (the 'vmap' task strategy).
    xs, ws = jnp.stack([x, x + 1.0]), jnp.stack([w, 2.0 * w])
    ours = jax.vmap(jax.grad(_second_order(conv2d_same), (0, 1)))(xs, ws)
    ref = jax.vmap(jax.grad(_second_order(_lax_conv), (0, 1)))(xs, ws)
    assert_trees_close(ours, ref, rtol=0, atol=1e-9)


def _optimized_conv_labels(conv):
  x, w = jnp.ones((4, 16, 16, 3)), jnp.ones((3, 4, 3, 5))
  hlo = jax.jit(jax.grad(_second_order(conv), (0, 1))).lower(x, w).compile().as_text()
  return re.findall(r'convolution\(.*?dim_labels=([^,\s]+)', hlo)


def test_second_order_convolutions_stay_nhwc():
  """The point of the module: after exact-MAML-style double differentiation, XLA is left with
  only NHWC/HWIO convolutions (its fast kernels), where lax's own rules leave a transposed one."""
  ours = _optimized_conv_labels(conv2d_same)
  assert ours and set(ours) == {'b01f_01io->b01f'}, ours
  if jax.default_backend() == 'cpu':  # the reference's layout is XLA:CPU's choice
    assert set(_optimized_conv_labels(_lax_conv)) != {'b01f_01io->b01f'}


def test_conv_module_params_match_flax_conv():
  x = jnp.ones((2, 6, 5, 3))
  ours = Conv(4, (3, 2)).init(jax.random.PRNGKey(0), x)['params']
  ref = nn.Conv(4, (3, 2), padding='SAME').init(jax.random.PRNGKey(0), x)['params']
  assert jax.tree.map(jnp.shape, ours) == jax.tree.map(jnp.shape, ref)
  assert_trees_close(ours, ref, rtol=0, atol=0)
  y = Conv(4, (3, 2)).apply({'params': ours}, x)
  y_lax = Conv(4, (3, 2), custom_vjp=False).apply({'params': ours}, x)
  y_flax = nn.Conv(4, (3, 2), padding='SAME').apply({'params': ref}, x)
  assert_trees_close(y, y_flax, rtol=0, atol=1e-5)
  assert_trees_close(y, y_lax, rtol=0, atol=0)


@pytest.mark.slow  # measured: eager jvp through the custom-VJP convolutions
def test_forward_mode_needs_conv_vjp_off():
  model = MetaLearner(conv_features=(2,), conv_kernels=((3, 3),), lstm_hidden=3, fc_hidden=3,
                      conv_vjp=False)
  x = jnp.ones((1, 8, 8))
  params = model.init(jax.random.PRNGKey(0), x)['params']
  tangent = jax.tree.map(jnp.ones_like, params)
  _, out = jax.jvp(lambda p: model.apply({'params': p}, x), (params,), (tangent,))
  assert out.shape == (1, 4)


@pytest.mark.parametrize('shape', [(2, 8, 6, 3), (1, 7, 5, 2)])
def test_max_pool_2x2_matches_flax(shape):
  x = jnp.asarray(np.random.default_rng(1).normal(size=shape), jnp.float32)
  ref_fn = lambda v: nn.max_pool(v, (2, 2), strides=(2, 2))
  assert_trees_close(max_pool_2x2(x), ref_fn(x), rtol=0, atol=0)
  g = jax.grad(lambda v: jnp.sum(jnp.sin(max_pool_2x2(v))))(x)
  g_ref = jax.grad(lambda v: jnp.sum(jnp.sin(ref_fn(v))))(x)
  assert_trees_close(g, g_ref, rtol=0, atol=1e-6)


def test_max_pool_2x2_rejects_too_small_input():
  with pytest.raises(ValueError, match='too small'):
    max_pool_2x2(jnp.ones((1, 1, 4, 2)))


# (0, 0), the loop rule, measured slowest: full suite only.
@pytest.mark.parametrize('in_axes', [pytest.param((0, 0), marks=pytest.mark.slow), (0, None),
                                     (None, 0)])
def test_vmap_rule_matches_lax_to_second_order(in_axes):
  """Both operands batched (the loop rule), only x (folded into the batch), only w
  (broadcast and looped), and a nested vmap over two task axes."""
  with jax.enable_x64(True):
    rng = np.random.default_rng(2)
    xs = jnp.asarray(rng.normal(size=(3, 2, 6, 5, 2)))
    ws = jnp.asarray(rng.normal(size=(3, 3, 2, 2, 4)))
    x, w = (xs if in_axes[0] == 0 else xs[0]), (ws if in_axes[1] == 0 else ws[0])
    for order in (_loss, _second_order):
      ours = jax.vmap(jax.grad(order(conv2d_same), (0, 1)), in_axes)(x, w)
      ref = jax.vmap(jax.grad(order(_lax_conv), (0, 1)), in_axes)(x, w)
      assert_trees_close(ours, ref, rtol=0, atol=1e-9, err_msg=order.__name__)
    nested = lambda conv: jax.vmap(jax.vmap(jax.grad(_second_order(conv), (0, 1))))
    x2, w2 = jnp.stack([xs, 2.0 * xs]), jnp.stack([ws, ws - 1.0])
    assert_trees_close(nested(conv2d_same)(x2, w2), nested(_lax_conv)(x2, w2), rtol=0,
                       atol=1e-9)


def _grouped_convolutions(conv):
  """How many convolutions of the optimised HLO of a vmapped second-order gradient (per-task
  x and w, as the 'vmap' task strategy makes them) have a feature or batch group count > 1."""
  xs, ws = jnp.ones((4, 2, 16, 16, 3)), jnp.ones((4, 3, 4, 3, 5))
  fn = jax.jit(jax.vmap(jax.grad(_second_order(conv), (0, 1))))
  hlo = fn.lower(xs, ws).compile().as_text()
  convs = [line for line in hlo.splitlines() if ' convolution(' in line]
  assert convs
  return sum(1 for line in convs if re.search(r'(feature|batch)_group_count=([2-9]|\d\d)', line))


def test_vmapped_per_task_weights_never_make_grouped_convolutions():
  """lax batches a convolution of per-task inputs and weights into a grouped convolution,
  far below XLA:CPU's usual rate; conv2d_same's vmap rule loops over the tasks instead."""
  assert _grouped_convolutions(_lax_conv) > 0  # what the rule avoids (the test can fail)
  assert _grouped_convolutions(conv2d_same) == 0
