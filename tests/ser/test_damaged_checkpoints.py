"""Every kept checkpoint of a fold damaged: one error naming every damaged step and how to go
on (--config.train.on_changed_config=restart), and with restart the fold starts afresh."""

import numpy as np
import pytest

from mmtl_jax.run import checkpoint
from mmtl_jax.run import errors
from mmtl_jax.ser import fold


def _state(value=0.0):
  return fold.TrainState(params={'w': np.full((3,), value, np.float32)}, opt_state={},
                          best={}, best_dev={}, step=0, sampler_position=0, seed=0)


def _damaged_fold(tmp_path):
  directory = tmp_path / 'fold' / 'checkpoints'
  with checkpoint.Checkpointer(str(directory), max_to_keep=2) as ckpt:
    for step in (1, 2):
      fold.save_state(fold.dataclasses.replace(_state(float(step)), step=step), ckpt)
  for step in (1, 2):
    (directory / str(step) / 'state' / '_METADATA').write_text('')
  return directory


def test_every_checkpoint_damaged_names_them_and_how_to_go_on(tmp_path):
  directory = _damaged_fold(tmp_path)
  with checkpoint.Checkpointer(str(directory), max_to_keep=2) as ckpt:
    with pytest.raises(checkpoint.CheckpointDamagedError) as err:
      fold.restore_state(ckpt, _state(), lambda s: s, str(tmp_path / 'fold'))
  line = errors.expected_line(err.value)
  assert '\n' not in line
  assert str(directory / '2') in line and str(directory / '1') in line  # 2 moved aside first
  assert '--config.train.on_changed_config=restart' in line


def test_restart_moves_damaged_checkpoints_aside_and_starts_afresh(tmp_path):
  directory = _damaged_fold(tmp_path)
  with checkpoint.Checkpointer(str(directory), max_to_keep=2) as ckpt:
    state = fold.restore_state(ckpt, _state(7.0), lambda s: s, str(tmp_path / 'fold'),
                                restart=True)
    assert state.step == 0 and float(state.params['w'][0]) == 7.0
    assert ckpt.all_steps() == []
  assert sorted(p.name for p in directory.iterdir() if 'damaged' in p.name) == [
      '1.damaged-1', '2.damaged-1']
