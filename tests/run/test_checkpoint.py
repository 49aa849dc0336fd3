"""Tests of mmtl_jax.run.checkpoint: round trips, retention, crash safety, inference bundles."""

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from mmtl_jax.run import checkpoint

from helpers import assert_trees_close


def _state(scale=1.0):
  params = {'conv': {'kernel': jnp.full((3, 4), scale, jnp.float32),
                     'bias': jnp.zeros((4,), jnp.bfloat16)},
            'transfer': {'kernel': jnp.eye(4) * scale}}
  opt_state = optax.adam(1e-3).init(params)
  # One update so the Adam moments and count are non-trivial.
  grads = jax.tree.map(lambda p: jnp.ones_like(p) * scale, params)
  _, opt_state = optax.adam(1e-3).update(grads, opt_state, params)
  return {'params': params, 'opt_state': opt_state, 'step': jnp.asarray(7, jnp.int32),
          'host': np.arange(5, dtype=np.int64)}


def test_round_trip_with_adam_state_and_extra(tmp_path):
  state = _state(2.0)
  extra = {'fold': 3, 'sampler_position': np.int64(123), 'rng': [1, 2], 'name': 'F03'}
  with checkpoint.Checkpointer(tmp_path / 'ckpt') as ckpt:
    assert ckpt.save(10, state, extra)
    ckpt.wait()
    restored_state, restored_extra = ckpt.restore(target=_state(0.0))
  assert_trees_close(restored_state, state, rtol=0, atol=0, check_dtype=True)
  assert isinstance(restored_state['opt_state'][0], optax.ScaleByAdamState)
  assert isinstance(restored_state['host'], np.ndarray)
  assert restored_extra == {'fold': 3, 'sampler_position': 123, 'rng': [1, 2], 'name': 'F03'}


def test_restore_into_abstract_target_casts_dtype(tmp_path):
  state = _state(1.5)
  with checkpoint.Checkpointer(tmp_path) as ckpt:
    ckpt.save(1, state)
    ckpt.wait()
    abstract = jax.eval_shape(lambda: _state(0.0))
    abstract['params']['conv']['kernel'] = jax.ShapeDtypeStruct((3, 4), jnp.bfloat16)
    restored, extra = ckpt.restore(1, target=abstract)
  assert extra == {}
  assert restored['params']['conv']['kernel'].dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(restored['params']['transfer']['kernel']),
                             np.eye(4) * 1.5)


def test_latest_step_and_max_to_keep(tmp_path):
  with checkpoint.Checkpointer(tmp_path, max_to_keep=2, save_interval_steps=5) as ckpt:
    saved = [ckpt.save(s, _state(float(s)), {'step': s}) for s in (0, 3, 5, 10, 15)]
    ckpt.wait()
    assert saved == [True, False, True, True, True]  # 3 is off the interval
    assert not ckpt.save(15, _state(), force=True)  # already saved: nothing to write
    assert ckpt.latest_step() == 15
    assert ckpt.all_steps() == [10, 15]
  # A new process (here: a new Checkpointer) sees the same steps.
  with checkpoint.Checkpointer(tmp_path, max_to_keep=2) as ckpt:
    state, extra = ckpt.restore(target=_state())
    assert extra == {'step': 15}
    np.testing.assert_array_equal(state['params']['conv']['kernel'], np.full((3, 4), 15.0))
    _, extra10 = ckpt.restore(10, target=_state())
    assert extra10 == {'step': 10}
    with pytest.raises(FileNotFoundError, match='step 5'):
      ckpt.restore(5, target=_state())


def test_restore_without_checkpoint_returns_none(tmp_path):
  with checkpoint.Checkpointer(tmp_path / 'empty') as ckpt:
    assert ckpt.latest_step() is None
    assert ckpt.restore(target=_state()) is None


def test_bad_extra_rejected_before_writing(tmp_path):
  with checkpoint.Checkpointer(tmp_path) as ckpt:
    with pytest.raises(TypeError):
      ckpt.save(1, _state(), {'fn': object()})
    assert ckpt.latest_step() is None


def test_structure_mismatch_is_an_error(tmp_path):
  with checkpoint.Checkpointer(tmp_path) as ckpt:
    ckpt.save(1, {'a': jnp.ones(3)})
    ckpt.wait()
    with pytest.raises(ValueError):
      ckpt.restore(target={'b': jnp.ones(3)})


_KILLED_WRITER = textwrap.dedent('''
    import os, signal, sys
    import numpy as np
    from mmtl_jax.run import checkpoint
    ckpt = checkpoint.Checkpointer(sys.argv[1])
    ckpt.save(1, {'w': np.ones((4,), np.float32)}, {'step': 1})
    ckpt.wait()
    # A big asynchronous save, then the process dies without waiting for it.
    ckpt.save(2, {'w': np.ones((4,), np.float32), 'big': np.ones((64, 1024, 1024), np.uint8)},
              {'step': 2})
    os.kill(os.getpid(), signal.SIGKILL)
''')


@pytest.mark.slow  # subprocess
def test_killed_process_leaves_previous_checkpoint_restorable(tmp_path):
  directory = tmp_path / 'ckpt'
  proc = subprocess.run([sys.executable, '-c', _KILLED_WRITER, str(directory)],
                        capture_output=True, text=True, timeout=120)
  assert proc.returncode == -9, proc.stderr[-2000:]
  with checkpoint.Checkpointer(directory) as ckpt:
    latest = ckpt.latest_step()
    assert latest in (1, 2)  # 2 only if the background write won the race
    state, extra = ckpt.restore(target={'w': np.zeros((4,), np.float32)} if latest == 1 else
                                {'w': np.zeros((4,), np.float32),
                                 'big': np.zeros((64, 1024, 1024), np.uint8)})
    assert extra == {'step': latest}
    np.testing.assert_array_equal(state['w'], np.ones(4))
    # The interrupted step can be saved again; orbax removes the killed save's temporary
    # directory in the background before the first save of the new manager.
    ckpt.save(3, {'w': np.full((4,), 3, np.float32)}, {'step': 3})
    ckpt.wait()
    assert ckpt.all_steps()[-1] == 3
  assert not [p for p in os.listdir(directory) if 'tmp' in p]


def test_inference_bundle_round_trip(tmp_path):
  config = ml_collections.ConfigDict()
  config.model = ml_collections.ConfigDict({'conv_kernels': ((12, 16), (8, 12)),
                                            'lstm_hidden': 128})
  config.data = ml_collections.ConfigDict({'classes': ('neu', 'ang', 'hap', 'sad'),
                                           'aux_columns': {}})
  params = _state(3.0)['params']
  bundle = checkpoint.save_inference_bundle(tmp_path / 'bundle', params, config)
  loaded, cfg = checkpoint.load_inference_bundle(bundle)
  assert_trees_close(loaded, params, rtol=0, atol=0, check_dtype=True)
  assert isinstance(cfg, ml_collections.ConfigDict)
  assert cfg.model.conv_kernels == ((12, 16), (8, 12))
  assert cfg.data.classes == ('neu', 'ang', 'hap', 'sad')
  assert cfg.model.lstm_hidden == 128

  # Overwrite replaces the whole bundle; overwrite=False refuses.
  checkpoint.save_inference_bundle(bundle, _state(4.0)['params'], config)
  loaded, _ = checkpoint.load_inference_bundle(bundle, target=params)
  np.testing.assert_array_equal(loaded['conv']['kernel'], np.full((3, 4), 4.0))
  with pytest.raises(FileExistsError):
    checkpoint.save_inference_bundle(bundle, params, config, overwrite=False)
  assert sorted(os.listdir(tmp_path)) == ['bundle']  # no temporary leftovers
  with pytest.raises(FileNotFoundError, match='not an inference bundle'):
    checkpoint.load_inference_bundle(tmp_path)


def test_inference_bundle_restores_the_base_config_exactly(tmp_path):
  from mmtl_jax.configs import base  # pylint: disable=g-import-not-at-top
  config = base.get_config()
  bundle = checkpoint.save_inference_bundle(tmp_path / 'b', {'w': jnp.ones(2)}, config)
  _, restored = checkpoint.load_inference_bundle(bundle)
  assert restored.to_dict() == config.to_dict()


def _wide_state(width, scale=1.0):
  """60 leaves, as a real model has many: orbax's own shape error comes once per leaf."""
  return {'params': {f'layer{i}': {'kernel': jnp.full((3, width), scale)} for i in range(60)}}


def test_shape_mismatch_is_one_error_naming_checkpoint_and_leaves(tmp_path):
  with checkpoint.Checkpointer(tmp_path / 'ckpt') as ckpt:
    ckpt.save(4, _wide_state(4))
  with checkpoint.Checkpointer(tmp_path / 'ckpt') as ckpt:
    with pytest.raises(checkpoint.CheckpointMismatchError) as e:
      ckpt.restore(target=_wide_state(16))
    assert ckpt.all_steps() == [4]  # a mismatch is not damage: nothing is moved
  message = str(e.value)
  assert f'checkpoint {tmp_path / "ckpt" / "4"} does not fit' in message
  assert 'params.layer0.kernel: checkpoint (3, 4) vs model (3, 16)' in message
  assert '60 leaves differ' in message and '... and 48 more' in message
  assert isinstance(e.value, ValueError)


_MISMATCHED_RESTORE = textwrap.dedent('''
    import sys
    import jax.numpy as jnp
    from mmtl_jax.run import checkpoint
    tree = lambda w: {'p': {f'l{i}': jnp.ones((3, w)) for i in range(60)}}
    with checkpoint.Checkpointer(sys.argv[1]) as ckpt:
      ckpt.save(1, tree(4))
    with checkpoint.Checkpointer(sys.argv[1]) as ckpt:
      ckpt.restore(target=tree(16))
''')


@pytest.mark.slow  # subprocess
def test_failed_restore_does_not_flood_the_terminal(tmp_path):
  proc = subprocess.run([sys.executable, '-c', _MISMATCHED_RESTORE, str(tmp_path / 'c')],
                        capture_output=True, text=True, timeout=120)
  assert proc.returncode == 1
  assert 'CheckpointMismatchError' in proc.stderr
  assert 'Event loop is closed' not in proc.stderr and 'Exception ignored' not in proc.stderr
  assert len(proc.stderr.splitlines()) < 40, proc.stderr[-3000:]


def test_damaged_latest_step_warns_and_falls_back(tmp_path, caplog):
  directory = tmp_path / 'ckpt'
  with checkpoint.Checkpointer(directory, max_to_keep=2) as ckpt:
    for step in (1, 2, 3):
      ckpt.save(step, _state(float(step)), {'step': step})
  data = [p for p in (directory / '3' / 'state').rglob('*') if p.is_file()
          and p.parent.name == 'd']
  assert data
  for p in data:  # truncated array data: the metadata still reads, the arrays do not
    p.write_bytes(b'')
  with checkpoint.Checkpointer(directory, max_to_keep=2) as ckpt:
    with pytest.raises(checkpoint.CheckpointDamagedError, match=f'{directory / "3"} cannot'):
      ckpt.restore(3, target=_state())  # an explicit step does not fall back
    with caplog.at_level('WARNING', logger='mmtl_jax.run.checkpoint'):
      state, extra = ckpt.restore(target=_state())
    assert extra == {'step': 2}
    assert_trees_close(state, _state(2.0), rtol=0, atol=0, check_dtype=True)
    assert f'{directory / "3"} cannot be read' in caplog.text
    assert 'restoring step 2 instead' in caplog.text
    assert ckpt.all_steps() == [2] and (directory / '3.damaged-1').is_dir()
    assert ckpt.save(3, _state(3.5), {'step': 3})  # the step can be written again
    ckpt.wait()
    assert_trees_close(ckpt.restore(target=_state())[0], _state(3.5), rtol=0, atol=0,
                       check_dtype=True)


def test_only_damaged_steps_is_an_error_and_check_extra_comes_first(tmp_path):
  directory = tmp_path / 'ckpt'
  with checkpoint.Checkpointer(directory) as ckpt:
    ckpt.save(1, _state(), {'step': 1, 'tag': 'a'})
  (directory / '1' / 'state' / '_METADATA').write_text('')
  seen = []
  with checkpoint.Checkpointer(directory) as ckpt:
    with pytest.raises(checkpoint.CheckpointDamagedError, match='_METADATA|JSON|Expecting'):
      ckpt.restore(target=_state(), check_extra=seen.append)
  assert seen == [{'step': 1, 'tag': 'a'}]  # the JSON item was read and checked first

  def refuse(extra):
    raise KeyError(f'refused {extra["tag"]}')

  with checkpoint.Checkpointer(tmp_path / 'ok') as ckpt:
    ckpt.save(1, _state(), {'tag': 'b'})
    ckpt.wait()
    with pytest.raises(KeyError, match='refused b'):
      ckpt.restore(target=_state(), check_extra=refuse)
    assert ckpt.all_steps() == [1]
