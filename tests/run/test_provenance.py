"""results.json says what produced it: versions, git commit, backend, devices, command, times."""

import datetime
import importlib.metadata
import os
import shutil
import subprocess
import sys

import jax
import pytest

from mmtl_jax.run import provenance
from mmtl_jax.ser import results


def test_provenance_fields():
  info = provenance.provenance(1_700_000_000.0, 1_700_000_090.5)
  assert info['packages']['jax'] == importlib.metadata.version('jax')
  assert info['packages']['orbax-checkpoint'] == importlib.metadata.version('orbax-checkpoint')
  assert set(provenance.PROVENANCE_PACKAGES) <= set(info['packages'])
  assert info['python'] == sys.version.split()[0]
  assert info['backend'] == jax.default_backend()
  assert info['devices'] == [str(d) for d in jax.devices()] and info['process_count'] == 1
  assert info['command'] == sys.argv
  assert datetime.datetime.fromisoformat(info['started']).timestamp() == 1_700_000_000.0
  assert datetime.datetime.fromisoformat(info['ended']).timestamp() == 1_700_000_090.5
  assert info['seconds'] == 90.5
  source = os.path.dirname(os.path.dirname(os.path.abspath(provenance.__file__)))  # mmtl_jax/
  head = subprocess.run(['git', '-C', source, 'rev-parse', 'HEAD'], capture_output=True,
                        text=True, check=False)
  tracked = subprocess.run(['git', '-C', source, 'ls-files', '--error-unmatch', 'ser/train.py'],
                           capture_output=True, check=False)
  if shutil.which('git') and head.returncode == 0 and tracked.returncode == 0:
    assert info['git_commit'] == head.stdout.strip()  # this checkout's commit
  else:
    assert info['git_commit'] is None  # an installed copy: no commit to name


@pytest.mark.skipif(shutil.which('git') is None, reason='no git')
def test_git_state_of_a_checkout_and_of_an_untracked_copy(tmp_path):
  def git(*args):
    return subprocess.run(['git', '-C', str(tmp_path), *args], check=True, capture_output=True,
                          text=True).stdout.strip()
  package = tmp_path / 'pkg'
  package.mkdir()
  (package / '__init__.py').write_text('x = 1\n')
  git('init', '-q')
  assert provenance.git_state(str(package)) == (None, None)  # inside a repository, untracked
  git('add', '.')
  git('-c', 'user.name=t', '-c', 'user.email=t@t', 'commit', '-qm', 'c')
  assert provenance.git_state(str(package)) == (git('rev-parse', 'HEAD'), False)
  (package / '__init__.py').write_text('x = 2\n')
  assert provenance.git_state(str(package)) == (git('rev-parse', 'HEAD'), True)
  assert provenance.git_state(str(tmp_path / 'nowhere')) == (None, None)


def test_write_results_stores_provenance(tmp_path):
  info = provenance.provenance(0.0, 1.0)
  results.write_results(tmp_path / 'a', {'seed': 0}, [], provenance_info=info)
  assert results.load_results(tmp_path / 'a')['provenance'] == info
  results.write_results(tmp_path / 'b', {'seed': 0}, [])
  assert 'provenance' not in results.load_results(tmp_path / 'b')
