"""Run hygiene: one run per workdir (a lock naming its holder), files honour the umask."""

import json
import os
import socket
import stat
import subprocess
import sys
import textwrap

import pytest

from mmtl_jax.run import checkpoint, files, lock
from mmtl_jax.ser import train

_HOLDER = textwrap.dedent('''
    import sys
    from mmtl_jax.run import lock
    held = lock.WorkdirLock(sys.argv[1]).acquire()
    print('locked', flush=True)
    sys.stdin.read()  # hold the lock until the test closes stdin (or kills us)
''')


@pytest.fixture
def holder(tmp_path):
  """A subprocess holding the lock of tmp_path/'work' (argv marker: --marker-xyz)."""
  proc = subprocess.Popen([sys.executable, '-c', _HOLDER, str(tmp_path / 'work'),
                           '--marker-xyz'], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          text=True)
  assert proc.stdout.readline().strip() == 'locked'
  yield proc
  if proc.poll() is None:
    proc.kill()
    proc.wait()


def test_second_run_stops_and_names_the_holder(holder, tmp_path, tiny_config, corpus_root):
  workdir = str(tmp_path / 'work')
  with pytest.raises(lock.WorkdirLockedError) as e:
    lock.WorkdirLock(workdir).acquire()
  assert e.value.holder['pid'] == holder.pid
  assert e.value.holder['host'] == socket.gethostname()
  assert '--marker-xyz' in e.value.holder['command'] and e.value.holder['started']
  assert f'pid {holder.pid} on host {socket.gethostname()}' in str(e.value)
  assert '--marker-xyz' in str(e.value)

  with pytest.raises(lock.WorkdirLockedError, match=f'pid {holder.pid}'):
    train.train_and_evaluate(tiny_config(corpus_root, models=('cnn_lstm',), steps=1), workdir)
  assert sorted(os.listdir(workdir)) == [lock.LOCK_NAME]  # nothing was done

  holder.kill()  # however the holder dies, the kernel releases the lock: nothing stale
  holder.wait()
  with lock.WorkdirLock(workdir) as held:
    with open(held.path, encoding='utf-8') as f:
      assert json.load(f)['pid'] == os.getpid()
    with pytest.raises(lock.WorkdirLockedError, match=f'pid {os.getpid()}'):
      lock.WorkdirLock(workdir).acquire()  # a second lock of this same process, too
  with open(held.path, encoding='utf-8') as f:
    assert f.read() == ''  # released: the record is cleared


@pytest.fixture(params=[0o022, 0o077, 0o002])
def umask(request):
  old = os.umask(request.param)
  yield request.param
  os.umask(old)


def test_result_files_and_bundles_honour_the_umask(umask, tmp_path):
  assert files.process_umask() == umask
  files.atomic_write_json(tmp_path / 'result.json', {'a': 1})
  assert stat.S_IMODE(os.stat(tmp_path / 'result.json').st_mode) == 0o666 & ~umask
  bundle = checkpoint.save_inference_bundle(tmp_path / 'bundle', {'w': [1.0, 2.0]}, {'x': 1})
  assert stat.S_IMODE(os.stat(bundle).st_mode) == 0o777 & ~umask
  for name in ('config.json', 'bundle.json'):
    assert stat.S_IMODE(os.stat(os.path.join(bundle, name)).st_mode) == 0o666 & ~umask
