"""The error boundary of the entry points (run/errors.py): an expected error is one line
'error: <what>, <which file or field>, <what to do>' and a non-zero exit; --verbose shows the
traceback; a bug keeps its traceback. Every experiments/*.py is run with a bad input."""

import errno
import json
import logging
import os
import re
import subprocess
import sys

import pytest

from mmtl_jax.run import errors
from mmtl_jax import configs

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ABSL_LOG = re.compile(r'^[IWEF]\d{4} ')  # absl/glog lines (a CPU-only jax warns once)


def run_entry(name, *args, env=None):
  return subprocess.run([sys.executable, os.path.join(ROOT, 'experiments', f'{name}.py'),
                         *args], capture_output=True, text=True, timeout=300, check=False,
                        env=dict(os.environ, **(env or {})), cwd=ROOT)


def message_lines(stderr):
  return [l for l in stderr.splitlines() if l.strip() and not ABSL_LOG.match(l)]


def assert_one_line(out, *fragments):
  lines = message_lines(out.stderr)
  assert out.returncode != 0, out
  assert 'Traceback' not in out.stderr, out.stderr[-3000:]
  assert len(lines) == 1 and lines[0].startswith('error: '), out.stderr[-3000:]
  for fragment in fragments:
    assert fragment in lines[0], lines[0]
  return lines[0]


def test_expected_lines():
  assert errors.expected_line(OSError(errno.ENOSPC, 'No space left on device', '/w/ckpt')) == (
      'no space left on the device, /w/ckpt, free space (or use another --workdir) and start '
      'the same command again, it resumes')
  wrapped = RuntimeError('orbax save failed')  # orbax and numpy wrap the OSError
  wrapped.__cause__ = OSError(errno.EROFS, 'Read-only file system', '/ro/x')
  assert errors.expected_line(wrapped).startswith('read-only file system, /ro/x, ')
  assert errors.expected_line(errors.ExpectedError('a\nb')) == 'a; b'
  assert errors.expected_line(KeyError('bug')) is None
  inner = RuntimeError('bug')  # a missing file deep inside is a bug, not a user's path
  inner.__context__ = FileNotFoundError(errno.ENOENT, 'No such file', '/x')
  assert errors.expected_line(inner) is None


def test_unknown_config_fields_have_close_matches():
  lines = errors.unknown_fields('config', configs.config_path('demo'),
                                ['--config.meta.mod=exact', '--config.train.steps=3'])
  assert len(lines) == 1
  assert '--config.meta.mod ' in lines[0] and '--config.meta.mode' in lines[0]
  assert errors.unknown_fields('config', configs.config_path('demo'),
                               ['--config.meta.mode=exact', '--config.data.iemocap=x']) == []


def test_boundary_exit_code_and_verbose(capsys, monkeypatch):
  class Locked(errors.ExpectedError):
    exit_code = 3

  def main():
    raise Locked('workdir locked, /w/.mmtl_jax.lock, wait for pid 7')

  with pytest.raises(SystemExit) as ex:
    errors.boundary(main)()
  assert ex.value.code == 3
  assert capsys.readouterr().err == 'error: workdir locked, /w/.mmtl_jax.lock, wait for pid 7\n'
  monkeypatch.setenv(errors.VERBOSE_ENV, '1')
  with pytest.raises(SystemExit):
    errors.boundary(main)()
  assert 'Traceback' in capsys.readouterr().err
  with pytest.raises(ZeroDivisionError):  # a bug keeps its traceback
    errors.boundary(lambda: 1 / 0)()


BAD_FIELD = '--config.nosuchfield=1'
ENTRY_POINTS = [
    ('train', [BAD_FIELD], ['--config.nosuchfield']),
    ('train', ['--config.meta.foo=1'], ['--config.meta.foo', 'close matches']),
    ('preprocess', ['--workdir=/tmp/unused', '--config.meta.mod=x'], ['--config.meta.mode']),
    ('preprocess', ['--workdir=/tmp/unused', '--config.features.dtype=uint8'],
     ['features.dtype: must be one of']),
    ('train', ['--workdir=/tmp/unused', '--config.seed=-1'], ['seed: must be an integer']),
    ('predict', ['--checkpoint=/nowhere/at/all'], ['wav']),  # no wav given
    ('sweep', ['--grid=meta.gamma'], ['meta.gamma']),
    ('sweep', ['--nosuchflag=1'], ['nosuchflag']),
    ('study', ['--seeds=0,x'], ['--seeds']),
    ('fewshot', [BAD_FIELD], ['--config.nosuchfield']),
    ('benchmark', [BAD_FIELD], ['--config.nosuchfield']),
    ('compare_gradients', ['--checkpoints=/nowhere/ckpt'], ['/nowhere/ckpt']),
    ('prepare_emodb', ['/nowhere/emodb'], ['/nowhere/emodb', 'EmoDB download']),
    ('gradient_curve', [BAD_FIELD], ['--config.nosuchfield']),
    ('sinusoid', [BAD_FIELD], ['--config.nosuchfield']),
    ('accelerator_checks', [BAD_FIELD], ['--config.nosuchfield']),
    ('make_pretrained', ['--emodb=/nowhere/emodb', '--out=/tmp/unused'],
     ['/nowhere/emodb', 'annotations.csv']),
]


@pytest.mark.slow
@pytest.mark.parametrize('name,args,fragments', ENTRY_POINTS)
def test_every_entry_point_prints_one_line(name, args, fragments):
  assert_one_line(run_entry(name, *args), *fragments)


@pytest.mark.slow
def test_gather_without_results_and_verbose(tmp_path):
  assert_one_line(run_entry('gather', str(tmp_path)), str(tmp_path), 'results.json')
  out = run_entry('gather', str(tmp_path), '--verbose')
  assert out.returncode != 0 and 'Traceback' in out.stderr
  assert message_lines(out.stderr)[-1].startswith('error: ')
  out = run_entry('gather', str(tmp_path), env={errors.VERBOSE_ENV: '1'})
  assert 'Traceback' in out.stderr


@pytest.mark.slow
def test_train_workdir_is_a_file(tmp_path):
  path = tmp_path / 'a_file'
  path.write_text('x')
  assert_one_line(run_entry('train', f'--workdir={path}', '--config.train.steps=1'),
                  str(path))


ORBAX_DISK_FULL = (
    'RESOURCE_EXHAUSTED: Error writing "w/0.0" in OCDBT database at local file "/w/mmtl/f0/'
    'checkpoints/1.orbax-checkpoint-tmp/state.orbax-checkpoint-tmp/ocdbt.process_0/": Failed '
    'to write 2844385 bytes to file 4: No space left on device [os_error_code=\'28\']')


def test_disk_full_reported_by_orbax_is_one_line():
  """What a save into a full tmpfs raised (probed): tensorstore's text, no OSError."""
  line = errors.expected_line(ValueError(ORBAX_DISK_FULL))
  assert line.startswith('no space left on the device, /w/mmtl/f0/checkpoints/1, free space')


def test_orbax_thread_tracebacks_of_a_full_disk_are_dropped():
  quiet = errors.QuietEnvironmentErrors()
  try:
    raise ValueError(ORBAX_DISK_FULL)
  except ValueError:
    exc_info = sys.exc_info()
  record = logging.LogRecord('absl', logging.ERROR, 'f.py', 1, '_SignalingThread.run() raised',
                             None, exc_info)
  assert not quiet.filter(record)
  other = logging.LogRecord('absl', logging.ERROR, 'f.py', 1, 'a bug', None, None)
  assert quiet.filter(other)


@pytest.mark.slow
@pytest.mark.parametrize('name,args,fragments', [
    ('train', ['--config=/nonexistent/config.py'], ['cannot load the config file',
                                                    '/nonexistent/config.py']),
    ('fewshot', ['--methods=nope'], ["unknown few-shot method 'nope'", 'nearest_centroid']),
    ('fewshot', ['--ways=a'], ['--ways']),
    ('study', ['--workdir=/tmp/unused_study', '--reference_mode=first_order'],
     ['--reference_mode']),
])
def test_hostile_probes_print_one_line(name, args, fragments):
  assert_one_line(run_entry(name, *args), *fragments)
