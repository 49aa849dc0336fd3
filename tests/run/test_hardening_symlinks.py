"""Files written in place in a workdir (the lock, train.log, metrics.jsonl) are never
followed through a symbolic link to a file outside it: the link is refused in one line naming
it, and the outside file keeps its content."""

import os

import pytest

from mmtl_jax.run import errors
from mmtl_jax.run import files
from mmtl_jax.run import lock
from mmtl_jax.run import metric_log
from mmtl_jax.run import progress


@pytest.fixture
def outside(tmp_path):
  path = tmp_path / 'outside.txt'
  path.write_text('precious\n')
  (tmp_path / 'work').mkdir()
  return path


def _refused(err, link):
  assert isinstance(err.value, errors.ExpectedError) and isinstance(err.value, files.PathError)
  assert str(link) in str(err.value) and 'symbolic link' in str(err.value)
  assert '\n' not in str(err.value)


def test_lock_file_symlink_is_refused_not_truncated(tmp_path, outside):
  link = tmp_path / 'work' / lock.LOCK_NAME
  os.symlink(outside, link)
  with pytest.raises(files.PathError) as err:
    lock.WorkdirLock(tmp_path / 'work').acquire()
  _refused(err, link)
  assert outside.read_text() == 'precious\n'


def test_train_log_symlink_is_refused_not_appended(tmp_path, outside):
  link = tmp_path / 'work' / 'train.log'
  os.symlink(outside, link)
  with pytest.raises(files.PathError) as err:
    with progress.log_to(str(link)):
      progress.line('a line', to_stream=False)
  _refused(err, link)
  assert outside.read_text() == 'precious\n'


def test_metrics_jsonl_symlink_is_refused_not_appended(tmp_path, outside):
  logs = tmp_path / 'work' / 'logs'
  logs.mkdir()
  link = logs / metric_log.JSONL_NAME
  os.symlink(outside, link)
  with pytest.raises(files.PathError) as err:
    metric_log.MetricWriter(logs, tensorboard=False, enabled=True)
  _refused(err, link)
  assert outside.read_text() == 'precious\n'


def test_dangling_symlink_is_refused_and_creates_nothing(tmp_path):
  (tmp_path / 'work').mkdir()
  target = tmp_path / 'elsewhere.log'
  os.symlink(target, tmp_path / 'work' / 'train.log')
  with pytest.raises(files.PathError):
    with progress.log_to(str(tmp_path / 'work' / 'train.log')):
      pass
  assert not target.exists()


def test_plain_files_still_work(tmp_path):
  work = tmp_path / 'work'
  with lock.WorkdirLock(work):
    assert '"pid"' in (work / lock.LOCK_NAME).read_text()
  with progress.log_to(str(work / 'train.log')):
    progress.line('hello', to_stream=False)
  with progress.log_to(str(work / 'train.log')):
    progress.line('again', to_stream=False)
  text = (work / 'train.log').read_text()
  assert 'hello' in text and 'again' in text
  with metric_log.MetricWriter(work / 'logs', tensorboard=False, enabled=True) as writer:
    writer.write_scalars(1, {'loss': 0.5})
  assert metric_log.read_jsonl(work / 'logs' / metric_log.JSONL_NAME)[0]['loss'] == 0.5
