"""A feature-store build's temporary directory is removed by another build only when its owner
(pid, host, start time in its marker) is provably gone: never by its age or modification time;
a directory of another host is kept and reported; the marker never reaches the store."""

import json
import logging
import os
import subprocess
import sys
import time

import psutil
import pytest

from mmtl_jax.data import store as store_lib
from mmtl_jax.run import tmp_dirs

KEY = '0123456789abcdef'
_BUILDER = '''
import sys, time
from mmtl_jax.run import tmp_dirs
print(tmp_dirs.make_tmp_dir(sys.argv[1], sys.argv[2]), flush=True)
time.sleep(120)
'''


def _marked(root, pid, started, host=None, key=KEY):
  """A temporary directory of `pid` with an owner marker (what make_tmp_dir writes)."""
  host = host or tmp_dirs.host_name()
  path = root / f'.tmp-{key}-{host}-{pid}'
  path.mkdir()
  (path / tmp_dirs.OWNER).write_text(json.dumps({'pid': pid, 'host': host,
                                                 'started': started}))
  (path / 'features.npy').write_bytes(b'half written')
  return path


@pytest.fixture
def builder(tmp_path):
  """A live process that made its temporary directory with make_tmp_dir, as a build does."""
  proc = subprocess.Popen([sys.executable, '-c', _BUILDER, str(tmp_path), KEY],
                          stdout=subprocess.PIPE, text=True)
  try:
    yield proc, proc.stdout.readline().strip()
  finally:
    proc.kill()
    proc.wait()


def test_a_live_build_that_looks_old_is_kept(tmp_path, builder):
  proc, path = builder
  assert os.path.basename(path) == f'.tmp-{KEY}-{tmp_dirs.host_name()}-{proc.pid}'
  day_ago = time.time() - 86400  # a clock step, or a file server's clock: not its owner's age
  os.utime(path, (day_ago, day_ago))
  assert tmp_dirs.remove_stale_tmp(str(tmp_path)) == []
  assert os.path.isdir(path)
  proc.kill()
  proc.wait()
  assert tmp_dirs.remove_stale_tmp(str(tmp_path)) == [path]  # its owner is gone now


def test_a_marked_directory_of_a_live_parent_that_looks_old_is_kept(tmp_path):
  parent = os.getppid()
  path = _marked(tmp_path, parent, psutil.Process(parent).create_time())
  day_ago = time.time() - 86400
  os.utime(path, (day_ago, day_ago))
  assert tmp_dirs.remove_stale_tmp(str(tmp_path)) == []
  assert (path / 'features.npy').exists()


def test_a_reused_pid_is_told_apart_by_its_start_time(tmp_path):
  parent = os.getppid()  # runs, but is not the process that made the directory
  path = _marked(tmp_path, parent, psutil.Process(parent).create_time() - 1000.0)
  assert tmp_dirs.remove_stale_tmp(str(tmp_path)) == [str(path)]


def test_a_directory_of_another_host_is_kept_and_reported(tmp_path, caplog):
  done = subprocess.run([sys.executable, '-c', 'import os; print(os.getpid())'],
                        capture_output=True, text=True, check=True)
  path = _marked(tmp_path, int(done.stdout), 0.0, host='another_host')
  with caplog.at_level(logging.WARNING):
    assert tmp_dirs.remove_stale_tmp(str(tmp_path)) == []
  assert path.is_dir() and str(path) in caplog.text and 'another_host' in caplog.text


def test_the_marker_is_no_file_of_the_store(tmp_path, tiny_config, corpus_root):
  config = tiny_config(corpus_root)
  store = store_lib.build_feature_store(config, str(tmp_path))
  directory = os.path.dirname(store.manifest_path)
  assert tmp_dirs.OWNER not in os.listdir(directory)
  assert [n for n in os.listdir(os.path.dirname(directory)) if n.startswith('.tmp-')] == []
