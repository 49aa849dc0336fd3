"""Everything a run writes, renames or deletes is inside the real workdir (issue 28): a model,
seed or fold directory that is a symbolic link is refused before anything is moved aside."""

import os
import types

import pytest

from mmtl_jax.run import errors
from mmtl_jax.run import files
from mmtl_jax.ser import fingerprint
from mmtl_jax.ser import train


def _fold(name):
  return types.SimpleNamespace(name=name, index=0)


def _outside(tmp_path):
  """A directory outside the workdir holding a sentinel file and a stale-looking fold."""
  outside = tmp_path / 'outside'
  (outside / 'S1').mkdir(parents=True)
  (outside / 'sentinel').write_text('keep me')
  (outside / 'S1' / 'result.json').write_text('{}')  # no fingerprint: stale, restart moves it
  return outside


def _listing(root):
  return sorted(os.path.relpath(os.path.join(d, f), root)
                for d, _, names in os.walk(root) for f in names + [''])


@pytest.mark.parametrize('link', ['mmtl', 'mmtl/S1', 'mmtl/S1/checkpoints'])
def test_a_symlinked_model_or_fold_dir_is_refused_on_restart(tiny_config, corpus_root,
                                                            tmp_path, link):
  # Before: the restart renamed <outside>/S1 to S1.stale-1 and wrote fingerprint.json there.
  outside = _outside(tmp_path)
  workdir = tmp_path / 'work'
  entry = workdir / link
  entry.parent.mkdir(parents=True, exist_ok=True)
  os.symlink(outside if link == 'mmtl' else outside / 'S1', entry)
  before = _listing(outside)
  config = tiny_config(corpus_root, models=('mmtl',))
  config.train.on_changed_config = 'restart'
  store = types.SimpleNamespace(manifest={'config_hash': 'abc'})
  with pytest.raises(files.PathError) as e:
    train.check_fold_dirs(config, store, [_fold('S1')], (0,), str(workdir))
  line = errors.expected_line(e.value)
  assert line == (f'{entry} is a symbolic link (to {os.readlink(entry)}): the workdir\'s '
                  'entries must be real directories; remove the link'), line
  assert _listing(outside) == before
  assert (outside / 'sentinel').read_text() == 'keep me'


def test_real_directories_and_a_linked_workdir_pass(tmp_path):
  real = tmp_path / 'real'
  (real / 'mmtl' / 'S1' / 'checkpoints').mkdir(parents=True)
  os.symlink(real, tmp_path / 'work')  # the workdir itself is the user's choice of place
  fingerprint.refuse_links(str(tmp_path / 'work'), str(tmp_path / 'work' / 'mmtl' / 'S1'))
