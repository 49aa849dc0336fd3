"""The 4-block convolutional classifier of few-shot learning (Vinyals et al. 2016; Finn et al.
2017, section 5.2), with BatchNorm, in its two published forms:

  downsample='stride' (the default; Finn et al.'s Omniglot network, as in their code
  cbfinn/maml: `conv_block` with stride 2 and `reduce_mean` over space before the head):
      [conv 3x3 stride 2 (SAME) -> BatchNorm -> ReLU] x 4 -> spatial mean -> Dense `way`
      a 28 x 28 image becomes 14, 7, 4, 2 pixels; the last BatchNorm normalises over
      N * 2 * 2 values per channel and the head sees `channels` spatially averaged features.
  downsample='max' (their MiniImagenet form; the narrow option of earlier versions here):
      [conv 3x3 (SAME) -> BatchNorm -> ReLU -> 2x2 max pool] x 4 -> flatten -> Dense `way`
      28 becomes 14, 7, 3, 1, so the last BatchNorm normalises over only N values per channel
      (5 at 5-way 1-shot), which makes the support loss sharply curved.

Param names are fixed so that meta-learning can adapt groups by name: 'conv0'..'conv3',
'bn0'..'bn3' (BatchNorm scale and bias) and 'head'; collection 'batch_stats' holds
'bn0'..'bn3'.

Not registered in `models.MODELS`: that registry's contract is a stateless segment classifier
[B, T, F] -> logits trained by the speech systems, which do not thread BatchNorm statistics.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmtl_jax.models.cnn_bilstm import max_pool_2x2

BLOCKS = 4
DOWNSAMPLE = ('stride', 'max')


class Conv4(nn.Module):
  """Images [B, H, W] or [B, H, W, C] -> logits [B, way].

  Attributes:
    way: number of output classes (N of an N-way task).
    channels: filters of every conv layer (64 in Finn et al.).
    downsample: 'stride' (stride-2 convolutions, spatial mean; Finn et al.'s Omniglot net)
      or 'max' (2x2 max pooling after each block, flatten).
    momentum: BatchNorm running-average momentum (used only when train=False).
    dtype: compute dtype; params stay float32.

  `__call__(x, train=True)` normalises with the batch's own statistics (MAML's transductive
  BatchNorm) and then needs `mutable=['batch_stats']`; train=False uses the running averages.
  """

  way: int = 5
  channels: int = 64
  downsample: str = 'stride'
  momentum: float = 0.9
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
    if self.downsample not in DOWNSAMPLE:
      raise ValueError(f'Conv4 downsample must be one of {DOWNSAMPLE}, got '
                       f'{self.downsample!r}')
    if x.ndim == 3:
      x = x[..., None]
    if x.ndim != 4:
      raise ValueError(f'Conv4 expects images [B, H, W] or [B, H, W, C], got {x.shape}')
    strides = (2, 2) if self.downsample == 'stride' else (1, 1)
    y = x.astype(self.dtype)
    for i in range(BLOCKS):
      y = nn.Conv(self.channels, (3, 3), strides=strides, padding='SAME', dtype=self.dtype,
                  name=f'conv{i}')(y)
      y = nn.BatchNorm(use_running_average=not train, momentum=self.momentum, dtype=self.dtype,
                       name=f'bn{i}')(y)
      y = nn.relu(y)
      if self.downsample == 'max':
        y = max_pool_2x2(y)
    if self.downsample == 'stride':
      y = y.mean(axis=(1, 2))
    else:
      y = y.reshape(y.shape[0], -1)
    return nn.Dense(self.way, dtype=self.dtype, name='head')(y).astype(jnp.float32)


__all__ = ['BLOCKS', 'Conv4', 'DOWNSAMPLE']
