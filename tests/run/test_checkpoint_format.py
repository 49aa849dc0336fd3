"""Checkpoint format across the one-API change: MMTL's step state (`meta.MetaState`, with a
None model state) round-trips, and a checkpoint of the earlier format (no format key, as
mmtl_jax 0.1.0 wrote them) is one clear error that says what to do, not a traceback from
orbax or a silent misload."""

import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from mmtl_jax import meta
from mmtl_jax.configs import demo
from mmtl_jax.run import checkpoint as ckpt_lib
from mmtl_jax.ser import losses as ser


def _mmtl_state():
  config = demo.get_config()
  config.model = ml_collections.ConfigDict(dict(config.model.to_dict(), conv_features=(2, 2, 2),
                                                lstm_hidden=4, fc_hidden=4))
  params = ser.init_params(config.model, jax.random.PRNGKey(0), (1, 16, 12))
  init_fn, _ = ser.make_mmtl_step(config)
  return params, init_fn(params)


def test_mmtl_step_state_round_trips(tmp_path):
  params, state = _mmtl_state()
  assert isinstance(state, meta.MetaState) and state.model is None
  with ckpt_lib.Checkpointer(tmp_path, async_save=False) as ckpt:
    ckpt.save(3, {'params': params, 'opt_state': state}, {'step': 3})
  with ckpt_lib.Checkpointer(tmp_path, async_save=False) as ckpt:
    restored, extra = ckpt.restore(target={'params': params, 'opt_state': state})
  assert extra == {'step': 3}  # the format key is the checkpointer's, not the caller's
  assert isinstance(restored['opt_state'], meta.MetaState)
  assert restored['opt_state'].model is None
  for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves({'params': params,
                                                             'opt_state': state})):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def _write_format_1(directory):
  """A checkpoint as mmtl_jax 0.1.0 wrote it: same orbax items, extra without the key."""
  with ckpt_lib.Checkpointer(directory, async_save=False) as ckpt:
    ckpt.save(5, {'opt_state': {'mu': jnp.ones(3)}}, {'step': 5})
  path = os.path.join(directory, '5', 'extra', 'metadata')
  with open(path, encoding='utf-8') as f:
    extra = json.load(f)
  del extra['checkpoint_format']
  with open(path, 'w', encoding='utf-8') as f:
    json.dump(extra, f)


def test_format_1_checkpoint_is_one_clear_error(tmp_path):
  _write_format_1(tmp_path)
  _, state = _mmtl_state()
  with ckpt_lib.Checkpointer(tmp_path, async_save=False) as ckpt:
    with pytest.raises(ckpt_lib.CheckpointFormatError) as info:
      ckpt.restore(target={'opt_state': state})
  message = str(info.value)
  assert len(message.splitlines()) == 1, message
  assert 'format 1' in message and 'mmtl_jax 0.1.0' in message and 'retrain' in message
  assert str(tmp_path) in message
  # Not moved aside as damaged: the checkpoint is intact, only of another format.
  assert os.path.isdir(os.path.join(tmp_path, '5'))


def test_format_error_is_a_mismatch_error():
  """Callers that handle CheckpointMismatchError handle the format error too."""
  assert issubclass(ckpt_lib.CheckpointFormatError, ckpt_lib.CheckpointMismatchError)
