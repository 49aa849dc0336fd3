"""Flax modules only, no training logic, chosen by name from config.

`MODELS` maps `config.model.name` to a module class, and `build(config.model)` constructs it
from the other fields of `config.model` as keyword arguments (as big_vision does). A model
registered here is a Flax module whose constructor takes those fields and whose
`__call__(x, train=False)` maps a segment batch [B, T, F] to logits [B, num_outputs]. To serve
the CNN-LSTM+MTL baseline too, it takes `features_only=True` (then returns [B, D] features)
and `dropout` (active when train=True, drawing from the 'dropout' rng).

  'cnn_bilstm': the meta learner of Table 1 (`MetaLearner`, in models/cnn_bilstm.py).

The transfer learner phi (`TransferLearner`, Table 1's FC 4 -> 4) is fixed by the paper and
built directly.
"""

from typing import Any

import flax.linen as nn

from mmtl_jax.models.cnn_bilstm import DTYPES, BiLSTM, MetaLearner, compute_dtype
from mmtl_jax.models.transfer import TransferLearner
from mmtl_jax.registry import Registry

MODELS: Registry[Any] = Registry('model', 'config.model.name')
MODELS.register('cnn_bilstm', MetaLearner)


def _plain(value: Any) -> Any:
  """Config values as module attributes: lists -> tuples (hashable), recursively."""
  if isinstance(value, (list, tuple)):
    return tuple(_plain(v) for v in value)
  return value


def model_kwargs(model_config: Any, **overrides: Any) -> dict:
  """The constructor arguments of config.model's module: every field but `name`, with the
  dtype name ('float32', 'bfloat16', ...) as a jnp dtype; `overrides` win."""
  kwargs = {k: _plain(v) for k, v in dict(model_config).items() if k != 'name'}
  kwargs.update(overrides)
  if 'dtype' in kwargs:
    kwargs['dtype'] = compute_dtype(kwargs['dtype'])
  return kwargs


def build(model_config: Any, **overrides: Any) -> nn.Module:
  """The module named `model_config.name`, built from the rest of `model_config`.

  Raises:
    ValueError: an unknown name (listing the registered ones).
  """
  return MODELS.get(str(model_config.name))(**model_kwargs(model_config, **overrides))


def transfer_learner(model_config: Any) -> TransferLearner:
  """phi of section 2.3: FC num_outputs -> num_outputs, in config.model's compute dtype."""
  return TransferLearner(num_outputs=int(model_config.num_outputs),
                         dtype=compute_dtype(model_config.get('dtype', 'float32')))


__all__ = ['BiLSTM', 'DTYPES', 'MODELS', 'MetaLearner', 'TransferLearner', 'build', 'compute_dtype',
           'model_kwargs', 'transfer_learner']
