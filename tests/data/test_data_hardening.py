"""Issue 19, data half: no value from a file escapes the workdir, integrity is checked on what
was stored, and every damaged input is one error that names its file."""

import csv
import errno
import json
import os
import re
import shutil
import threading
import time
import types

import ml_collections
import numpy as np
import pytest
import soundfile as sf

from mmtl_jax.configs import emodb
from mmtl_jax.data import corpus, store as store_lib, synthetic
from mmtl_jax.run import files
from mmtl_jax.ser import config_check, confusion_plot
from mmtl_jax.ser import train

HOSTILE = ['/../../../escaped', '..', '.', '', '.hidden', 'a/b', 'a_b', 'a\\b', 'a?b',
           'ünï cödé/名前', ' x', '-rf', '~root', 'x' * 300, 'x' * 301,
           'Ses01-testSes01M.stale-1/']


@pytest.mark.parametrize('name', ['Ses01-testSes01M', 'mmtl', 'seed1', 'test03',
                                  'Ses01-testSes01M.stale-1', 'cnn_lstm_mtl'])
def test_safe_component_keeps_plain_names(name):
  assert files.safe_component(name) == name


def test_safe_component_encodes_hostile_names_without_collisions(tmp_path):
  out = [files.safe_component(n) for n in HOSTILE]
  assert len(set(out)) == len(HOSTILE)  # 'a/b', 'a_b', 'a?b' stay distinct
  for name, component in zip(HOSTILE, out):
    assert re.fullmatch(r'[A-Za-z0-9_][A-Za-z0-9._~-]*', component), (name, component)
    assert len(component) <= 100 and component not in ('.', '..')
    path = tmp_path / component  # one component: it lands directly in tmp_path
    path.mkdir()
    assert os.path.dirname(os.path.realpath(path)) == os.path.realpath(tmp_path)
  assert files.safe_component('a/b') == files.safe_component('a/b')  # deterministic


def tone(path, seconds=0.25, freq=220.0, amplitude=0.1, subtype=None):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  t = np.arange(int(16000 * seconds)) / 16000.0
  sf.write(path, amplitude * np.sin(2 * np.pi * freq * t), 16000, subtype=subtype)


def write_manifest(directory, rows, header=('path', 'speaker', 'label'), audio=True):
  """rows: (path, speaker, label, ...); audio writes a 0.25 s tone at every path."""
  path = os.path.join(directory, 'm.csv')
  os.makedirs(directory, exist_ok=True)
  with open(path, 'w', newline='', encoding='utf-8') as f:
    w = csv.writer(f)
    w.writerow(header)
    w.writerows(rows)
  for i, row in enumerate(rows if audio else ()):
    tone(os.path.join(directory, row[0]), freq=200 + 20 * i)
  return path


def manifest_config(path, classes=('calm', 'angry'), minimum=1):
  c = emodb.get_config()
  c.data.manifest.path = path
  c.data.manifest.path_column, c.data.manifest.label_column = 'path', 'label'
  c.data.classes = classes
  c.data.aux_tasks = ()
  c.data.manifest.aux_columns = {}
  c.data.manifest.min_utterances_per_speaker = minimum
  c.features.n_frames = 20
  c.features.workers = 1
  return c


def rows_for(speakers, per_class=2, classes=('calm', 'angry')):
  return [(f'w/{k}_{c}{i}.wav', s, c) for k, s in enumerate(speakers) for c in classes
          for i in range(per_class)]


# ---- 1. names from files never leave the workdir ------------------------------------------

@pytest.mark.slow
def test_hostile_speaker_names_write_nothing_outside_the_workdir(tiny_config, tmp_path):
  speakers = ['..', '.hidden', '/../../../escaped', 'ünï cödé/名']
  data = tmp_path / 'data'
  path = write_manifest(str(data), rows_for(speakers, per_class=3))
  c = tiny_config('unused', models=('cnn_lstm',), steps=2)
  c.data.kind = 'manifest'
  c.data.manifest.path = path
  c.data.manifest.path_column, c.data.manifest.label_column = 'path', 'label'
  c.data.manifest.speaker_column = 'speaker'
  c.data.manifest.min_utterances_per_speaker = 1
  # 2 classes on the 4 outputs of the head: predictions must still be classes.
  c.data.classes, c.data.aux_tasks = ('calm', 'angry'), ()
  c.folds.scheme = 'speaker'
  c.folds.which = (1, 2)  # tests '.hidden' and '/../../../escaped'
  before = {p for p in tmp_path.rglob('*')}
  workdir = tmp_path / 'w'
  out = train.train_and_evaluate(c, str(workdir))
  assert {f['test_speaker'] for f in out['runs'][0]['folds']} == set(speakers[1:3])
  outside = [p for p in tmp_path.rglob('*') if p not in before and workdir not in p.parents
             and p != workdir]
  assert outside == []
  fold_dirs = sorted(p.name for p in (workdir / 'cnn_lstm').iterdir())
  assert len(fold_dirs) == 2 and all(not d.startswith('.') for d in fold_dirs), fold_dirs


def test_confusion_file_names_are_distinct_components():
  stems = {confusion_plot.confusion_basename(m, 'paper') for m in ('a/b', 'a_b', '../x', 'mmtl')}
  assert len(stems) == 4 and 'mmtl__paper' in stems
  assert all('/' not in s and not s.startswith('.') for s in stems)


# ---- 2. integrity on what was stored -------------------------------------------------------

def test_a_speaker_below_the_minimum_after_skips_is_refused(tmp_path):
  rows = rows_for(['s1', 's2', 's3'], per_class=2)
  path = write_manifest(str(tmp_path), rows)
  broken = os.path.join(tmp_path, rows[0][0])
  with open(broken, 'wb') as f:
    f.write(b'RIFF\x00\x00\x00\x00WAVEjunk')
  with pytest.raises(ValueError, match=r"speaker 's1'.*3 stored utterance.*fewer than "
                     r'data.manifest.min_utterances_per_speaker=4') as e:
    store_lib.build_feature_store(manifest_config(path, minimum=4), str(tmp_path / 'w'))
  assert broken in str(e.value) and '\n' not in str(e.value)
  assert not os.listdir(tmp_path / 'w' / 'features')  # nothing half-built left


def test_a_class_emptied_by_skipped_files_is_refused(tmp_path):
  rows = rows_for(['s1', 's2', 's3'], per_class=1)
  path = write_manifest(str(tmp_path), rows)
  angry = [os.path.join(tmp_path, r[0]) for r in rows if r[2] == 'angry']
  for wav in angry:
    os.remove(wav)
  with pytest.raises(ValueError, match=r"class 'angry' has no stored utterance") as e:
    store_lib.build_feature_store(manifest_config(path), str(tmp_path / 'w'))
  assert angry[0] in str(e.value) and 'missing wav' in str(e.value)


def test_iemocap_speaker_with_every_wav_missing_is_refused(tmp_path):
  root = tmp_path / 'corpus'
  synthetic.write_corpus(str(root), seed=0, sessions=1, impro_counts={'neu': 1, 'ang': 1},
                         script_counts={}, min_duration=0.3, max_duration=0.5)
  c = manifest_config('unused')
  c.data.kind, c.data.root = 'synthetic', str(root)
  c.data.classes, c.data.aux_tasks = ('neu', 'ang'), ('valence',)
  c.data.iemocap.sessions = (1,)
  utts, _ = corpus.read_corpus(c)
  for u in utts:
    if u.speaker == 'Ses01M' and os.path.exists(u.path):
      os.remove(u.path)
  with pytest.raises(ValueError, match=r"speaker 'Ses01M'.*0 stored utterance"):
    store_lib.build_feature_store(c, str(tmp_path / 'w'))


# ---- 3. non-finite audio is a named skip ---------------------------------------------------

def test_non_finite_features_are_a_named_skip(tmp_path):
  rows = rows_for(['s1', 's2', 's3'], per_class=2)
  path = write_manifest(str(tmp_path), rows)
  huge = os.path.join(tmp_path, rows[1][0])
  tone(huge, amplitude=1e20, subtype='FLOAT')
  s = store_lib.build_feature_store(manifest_config(path), str(tmp_path / 'w'))
  assert [x['path'] for x in s.manifest['skipped']] == [huge]
  assert 'non-finite' in s.manifest['skipped'][0]['reason']
  assert np.isfinite(np.asarray(s.features, np.float32)).all()
  # only the synthetic corpus' own broken wav is labelled deliberate, never a real skip
  assert 'deliberate' not in store_lib.format_summary(s)


def test_a_fifo_or_directory_in_the_manifest_is_a_named_skip(tmp_path):
  rows = rows_for(['s1', 's2', 's3'], per_class=2)
  path = write_manifest(str(tmp_path), rows + [('fifo.wav', 's1', 'calm'),
                                               ('dir.wav', 's2', 'calm')], audio=False)
  for i, row in enumerate(rows):
    tone(os.path.join(tmp_path, row[0]), freq=200 + 20 * i)
  os.mkfifo(tmp_path / 'fifo.wav')
  os.mkdir(tmp_path / 'dir.wav')

  def unblock():  # without the check the reader waits for a writer forever: end it (EOF)
    for _ in range(100):
      try:
        os.close(os.open(tmp_path / 'fifo.wav', os.O_WRONLY | os.O_NONBLOCK))
        return
      except OSError:
        time.sleep(0.1)

  threading.Thread(target=unblock, daemon=True).start()
  s = store_lib.build_feature_store(manifest_config(path), str(tmp_path / 'w'))
  assert {x['path']: x['reason'] for x in s.manifest['skipped']} == {
      str(tmp_path / n): 'not a regular file (a directory, FIFO or device)'
      for n in ('fifo.wav', 'dir.wav')}


# ---- 4. the CSV itself ---------------------------------------------------------------------

def read_csv_text(tmp_path, text, encoding='utf-8', **config):
  path = os.path.join(tmp_path, 'm.csv')
  with open(path, 'w', newline='', encoding=encoding) as f:
    f.write(text)
  return path, lambda: corpus.read_corpus(manifest_config(path, **config))


GOOD = 'w/1.wav,s1,calm\nw/2.wav,s1,angry\n'


def test_duplicate_header_columns_are_refused(tmp_path):
  path, read = read_csv_text(tmp_path, 'path,speaker,label,speaker\n' + 'w/1.wav,s1,calm,s2\n')
  with pytest.raises(ValueError, match=re.escape(f"{path}:1: column(s) ['speaker'] appear")):
    read()


def test_non_utf8_csv_names_file_and_line(tmp_path):
  path, read = read_csv_text(tmp_path, 'path,speaker,label\n' + GOOD + 'w/3.wav,Zoë,calm\n',
                             encoding='latin-1')
  with pytest.raises(ValueError, match=re.escape(f'{path}:4: not UTF-8')):
    read()


def test_utf8_bom_is_accepted(tmp_path):
  _, read = read_csv_text(tmp_path, 'path,speaker,label\n' + GOOD, encoding='utf-8-sig')
  utts, _ = read()
  assert [u.speaker for u in utts] == ['s1', 's1']


@pytest.mark.parametrize('last, line', [('w/3.wav,s1\n', 4), ('w/3.wav,s1,calm,extra\n', 4),
                                        ('"w/3.wav,s1,calm\n', 4)])
def test_short_long_or_truncated_rows_name_file_and_line(tmp_path, last, line):
  path, read = read_csv_text(tmp_path, 'path,speaker,label\n' + GOOD + last)
  with pytest.raises(ValueError, match=re.escape(f'{path}:{line}:')):
    read()


def test_a_field_over_the_csv_limit_names_file_and_line(tmp_path):
  path, read = read_csv_text(tmp_path, 'path,speaker,label\n' + GOOD
                             + f'w/3.wav,{"s" * 200_000},calm\n')
  with pytest.raises(ValueError, match=re.escape(f'{path}:4:') + '.*field'):
    read()


def test_more_categorical_values_than_outputs_is_refused_before_extraction(tmp_path,
                                                                           monkeypatch):
  rows = [r + (f'g{i}',) for i, r in enumerate(rows_for(['s1', 's2', 's3'], per_class=1))]
  path = write_manifest(str(tmp_path), rows, header=('path', 'speaker', 'label', 'group'),
                        audio=False)
  c = manifest_config(path)
  c.data.aux_tasks = ('group',)
  c.data.manifest.aux_columns = {'group': 'categorical'}
  monkeypatch.setattr(store_lib, '_compute', lambda *a, **k: pytest.fail('extracted'))
  with pytest.raises(ValueError, match=re.escape(path) + r".*'group' has 6 values.*"
                     r'model.num_outputs=4'):
    store_lib.build_feature_store(c, str(tmp_path / 'w'))


# ---- 5. and 6. a stored store that was edited, damaged or half-written ---------------------

@pytest.fixture(scope='module')
def built(tmp_path_factory):
  """(config, workdir, store directory) of one small manifest store."""
  directory = str(tmp_path_factory.mktemp('m'))
  path = write_manifest(directory, rows_for(['s1', 's2', 's3'], per_class=2))
  c = manifest_config(path)
  s = store_lib.build_feature_store(c, os.path.join(directory, 'w'))
  return c, os.path.join(directory, 'w'), s.directory


@pytest.fixture()
def copy(built, tmp_path):
  """A fresh copy of the built workdir: (config, workdir, store directory)."""
  c, workdir, directory = built
  shutil.copytree(workdir, tmp_path / 'w')
  return c, str(tmp_path / 'w'), str(tmp_path / 'w' / os.path.relpath(directory, workdir))


def test_the_store_manifest_holds_a_content_hash_and_reuse_checks_it(copy):
  c, workdir, directory = copy
  s = store_lib.build_feature_store(c, workdir)
  assert s.cache_hit and set(s.manifest['content_hash']) >= {'features.npy', 'manifest.json'}


def test_a_swapped_class_order_in_the_store_manifest_is_refused(copy):
  c, workdir, directory = copy
  manifest = os.path.join(directory, 'manifest.json')
  with open(manifest) as f:
    m = json.load(f)
  m['classes'] = m['classes'][::-1]
  with open(manifest, 'w') as f:
    json.dump(m, f)
  with pytest.raises(store_lib.StoreDamagedError, match='manifest.json') as e:
    store_lib.build_feature_store(c, workdir)
  assert f'delete {directory}' in str(e.value)


def test_a_zeroed_span_of_features_is_refused(copy):
  c, workdir, directory = copy
  with open(os.path.join(directory, 'features.npy'), 'r+b') as f:
    f.seek(200)
    f.write(b'\0' * 64)
  with pytest.raises(store_lib.StoreDamagedError, match=r'features\.npy.*content hash'):
    store_lib.build_feature_store(c, workdir)


def test_a_truncated_features_file_is_refused_with_its_size(copy):
  c, workdir, directory = copy
  features = os.path.join(directory, 'features.npy')
  os.truncate(features, os.path.getsize(features) - 100)
  with pytest.raises(store_lib.StoreDamagedError, match=re.escape(features) + '.*truncated'
                     ) as e:
    store_lib.build_feature_store(c, workdir)
  assert 'delete' in str(e.value)


@pytest.mark.parametrize('what', ['no manifest', 'empty', 'a file'])
def test_a_half_written_store_directory_is_rebuilt(copy, what):
  c, workdir, directory = copy
  if what == 'no manifest':
    os.remove(os.path.join(directory, 'manifest.json'))
  else:
    shutil.rmtree(directory)
  if what == 'empty':
    os.makedirs(os.path.join(directory, 'junk'))
  elif what == 'a file':
    with open(directory, 'w') as f:
      f.write('x')
  s = store_lib.build_feature_store(c, workdir)
  assert not s.cache_hit and s.directory == directory and len(s) == 12


def test_too_little_free_space_is_refused_before_writing(built, tmp_path, monkeypatch):
  c, _, _ = built
  real = os.statvfs

  def small(path):
    st = real(path)
    return os.statvfs_result((st.f_bsize, 4096, st.f_blocks, 1, 1) + tuple(st)[5:])

  monkeypatch.setattr(os, 'statvfs', small)
  with pytest.raises(OSError, match=r'no space.*features') as e:
    store_lib.build_feature_store(c, str(tmp_path / 'w'))
  assert e.value.errno == errno.ENOSPC


def test_disk_full_while_writing_features_is_one_error(built, tmp_path, monkeypatch):
  c, _, _ = built
  monkeypatch.setattr(store_lib, '_open_new', lambda path: open('/dev/full', 'wb'),
                      raising=False)
  with pytest.raises(OSError, match=r'features\.npy.*no space') as e:
    store_lib.build_feature_store(c, str(tmp_path / 'w'))
  assert e.value.errno == errno.ENOSPC
  assert not os.listdir(tmp_path / 'w' / 'features')


# ---- 7. and 8. config values refused before the store is built ------------------------------

def test_fewer_than_two_classes_is_a_config_problem():
  c = emodb.get_config()
  c.data.manifest.path = 'x.csv'
  c.data.classes = ('neutral',)
  assert config_check.config_problems(c) == [
      "data.classes: needs at least 2 classes (got ('neutral',))"]


def test_folds_which_out_of_range_is_refused_before_extraction(tiny_config, corpus_root,
                                                               tmp_path, monkeypatch):
  c = tiny_config(corpus_root, models=('cnn_lstm',))
  c.folds.which = (0, 70)
  monkeypatch.setattr(store_lib, '_compute', lambda *a, **k: pytest.fail('extracted'))
  with pytest.raises(ValueError, match=r'folds.which .*indices \[70\] outside 0..'):
    train.train_and_evaluate(c, str(tmp_path / 'w'))


def test_fold_directories_stay_apart_on_case_insensitive_file_systems(tmp_path):
  # The bug it catches: speakers 'S1' and 's1' got fold directories 'S1' and 's1', one and
  # the same directory on macOS or Windows, so the two folds overwrote each other's
  # checkpoints and results.
  names = ['S1', 's1', 'Ses01', 'a/b', 'Ses01']
  out = files.safe_components(names)
  assert out[2] == out[4] == 'Ses01'  # plain and unique up to case: unchanged
  assert out[3] == files.safe_component('a/b')
  assert len({c.casefold() for c in out[:4]}) == 4
  assert out == files.safe_components(names)  # the same run resumes into the same dirs
  folds = [types.SimpleNamespace(index=i, name=n) for i, n in enumerate(['S1', 's1'])]
  dirs = [d for *_, d in train._fold_dirs(  # pylint: disable=protected-access
      ml_collections.ConfigDict({'seed': 0}), 'mmtl', folds, (0,), str(tmp_path))]
  assert len({d.casefold() for d in dirs}) == 2, dirs
