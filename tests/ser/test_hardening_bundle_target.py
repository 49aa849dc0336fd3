"""Writing an inference bundle replaces only an absent directory or an earlier bundle holding
nothing else: never a directory of the user's files, a workdir or a parent of one; and
experiments/make_pretrained.py refuses such an --out in one line, before any study."""

import os
import subprocess
import sys

import numpy as np
import pytest

from mmtl_jax.run import checkpoint
from mmtl_jax.run import errors

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PARAMS = {'w': np.ones(2, np.float32)}


def _save(directory, **kwargs):
  return checkpoint.save_inference_bundle(str(directory), PARAMS, {'x': 1}, storage='npz',
                                          **kwargs)


def test_a_directory_of_other_files_is_refused_and_kept(tmp_path):
  (tmp_path / 'mine.txt').write_text('precious')
  (tmp_path / 'sub').mkdir()
  with pytest.raises(checkpoint.BundleTargetError) as err:
    _save(tmp_path)
  assert str(tmp_path) in str(err.value) and 'not an inference bundle' in str(err.value)
  assert isinstance(err.value, errors.ExpectedError) and '\n' not in str(err.value)
  assert (tmp_path / 'mine.txt').read_text() == 'precious' and (tmp_path / 'sub').is_dir()
  assert sorted(os.listdir(tmp_path)) == ['mine.txt', 'sub']  # no temporary left either


def test_a_workdir_is_refused_as_bundle_directory(tmp_path):
  work = tmp_path / 'work'
  (work / 'loso').mkdir(parents=True)
  (work / '.mmtl_jax.lock').write_text('')
  (work / 'loso' / 'results.json').write_text('{}')
  for out in (work, tmp_path):  # the workdir, and a parent of it
    with pytest.raises(checkpoint.BundleTargetError):
      _save(out)
    with pytest.raises(checkpoint.BundleTargetError) as err:
      checkpoint.check_bundle_target(out, keep=[work])
    assert str(out) in str(err.value)
  assert (work / 'loso' / 'results.json').read_text() == '{}'


def test_keep_refuses_even_an_empty_parent_of_the_workdir(tmp_path):
  with pytest.raises(checkpoint.BundleTargetError, match='parent of'):
    checkpoint.check_bundle_target(tmp_path, keep=[tmp_path / 'not' / 'made' / 'yet'])
  assert checkpoint.check_bundle_target(tmp_path / 'b', keep=[tmp_path / 'w']) == str(
      tmp_path / 'b')


def test_an_earlier_bundle_is_replaced_but_not_with_user_files_in_it(tmp_path):
  bundle = _save(tmp_path / 'bundle')
  (tmp_path / 'bundle' / 'MODEL_CARD.md').write_text('card')
  assert _save(bundle) == bundle  # a bundle (and its card) is replaced
  assert sorted(os.listdir(bundle)) == ['bundle.json', 'config.json', 'params.npz']
  (tmp_path / 'bundle' / 'notes.txt').write_text('mine')
  with pytest.raises(checkpoint.BundleTargetError, match='notes.txt'):
    _save(bundle)
  assert (tmp_path / 'bundle' / 'notes.txt').read_text() == 'mine'


def test_a_file_or_link_at_the_bundle_path_is_refused(tmp_path):
  (tmp_path / 'afile').write_text('precious')
  with pytest.raises(checkpoint.BundleTargetError):
    _save(tmp_path / 'afile')
  assert (tmp_path / 'afile').read_text() == 'precious'
  bundle = _save(tmp_path / 'bundle')
  os.symlink(bundle, tmp_path / 'link')
  with pytest.raises(checkpoint.BundleTargetError):
    _save(tmp_path / 'link')


@pytest.mark.slow  # a subprocess importing the speech stack
def test_make_pretrained_refuses_out_equal_to_workdir_in_one_line(tmp_path):
  (tmp_path / 'annotations.csv').write_text('file,speaker\n')
  work = tmp_path / 'work'
  (work / 'loso').mkdir(parents=True)
  (work / 'loso' / 'results.json').write_text('{}')
  out = subprocess.run(
      [sys.executable, os.path.join(ROOT, 'experiments', 'make_pretrained.py'),
       f'--emodb={tmp_path}', f'--workdir={work}', f'--out={work}'],
      capture_output=True, text=True, timeout=300, check=False, cwd=ROOT)
  lines = [l for l in out.stderr.splitlines() if l.startswith('error: ')]
  assert out.returncode != 0 and 'Traceback' not in out.stderr, out.stderr[-2000:]
  assert len(lines) == 1 and str(work) in lines[0], out.stderr[-2000:]
  assert sorted(os.listdir(work)) == ['loso']  # no study started, nothing deleted
