"""Cleanup of killed writes removes only the temporaries this project names
(`.<name>.mmtl_jax-tmp-<16 hex>`): a user's own dot-files ending `.tmp` or `.tmp-X` stay.
Atomic writes onto a symbolic link replace the link, never the file it points at."""

import os

from mmtl_jax.run import files


def test_cleanup_keeps_user_dot_files_ending_tmp(tmp_path):
  users = ['.notes.tmp', '.draft.tmp-1', '.x.json.abc.json.tmp', '.bundle.tmp-mine']
  for name in users:
    (tmp_path / name).write_text('mine')
  (tmp_path / '.scratch.tmp-dir').mkdir()
  (tmp_path / '.scratch.tmp-dir' / 'keep.txt').write_text('mine')
  assert files.remove_killed_writes(tmp_path) == []
  ours_file = tmp_path / files.temp_name('result.json', keep_extension=True)
  ours_file.write_text('{"rec')
  ours_dir = tmp_path / files.temp_name('bundle')
  (ours_dir / 'params').mkdir(parents=True)
  removed = files.remove_killed_writes(tmp_path)
  assert sorted(removed) == sorted([str(ours_file), str(ours_dir)])
  assert sorted(os.listdir(tmp_path)) == sorted(users + ['.scratch.tmp-dir'])
  assert (tmp_path / '.scratch.tmp-dir' / 'keep.txt').read_text() == 'mine'


def test_temporaries_of_the_project_match_the_cleanup_pattern(tmp_path):
  """What a killed atomic_write / make_temp_dir would leave is what cleanup removes."""
  made = files.make_temp_dir('bundle', str(tmp_path))
  assert os.path.dirname(made) == str(tmp_path) and '.mmtl_jax-tmp-' in made
  for name in ('results.json', 'metrics.jsonl', 'MODEL_CARD.md', 'noext', '.hidden'):
    assert files._KILLED_WRITE.match(files.temp_name(name, keep_extension=True)), name
  assert files.remove_killed_writes(tmp_path) == [made]
  files.atomic_write_text(tmp_path / 'a.json', '{}')
  assert os.listdir(tmp_path) == ['a.json']  # its temporary renamed, nothing left


def test_atomic_write_onto_a_symlink_leaves_the_outside_file(tmp_path):
  outside = tmp_path / 'outside.txt'
  outside.write_text('precious')
  work = tmp_path / 'work'
  work.mkdir()
  os.symlink(outside, work / 'results.json')
  files.atomic_write_json(work / 'results.json', {'a': 1})
  assert outside.read_text() == 'precious'
  assert not os.path.islink(work / 'results.json')
  assert (work / 'results.json').read_text().startswith('{')
