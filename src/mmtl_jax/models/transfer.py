"""The transfer learner (paper section 2.3, Table 1 FC_3): one FC layer on the meta logits."""

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmtl_jax.models.cnn_bilstm import Dtype


class TransferLearner(nn.Module):
  """Dense num_outputs -> num_outputs on the meta learner's logits: [B, C] -> [B, C]."""

  num_outputs: int = 4
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, meta_logits: jax.Array) -> jax.Array:
    y = nn.Dense(self.num_outputs, dtype=self.dtype, param_dtype=self.param_dtype,
                 name='fc')(meta_logits)
    return y.astype(jnp.promote_types(self.dtype, jnp.float32))


__all__ = ['TransferLearner']
