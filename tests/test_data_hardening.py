"""Issue 19, data half: no value from a file escapes the workdir, integrity is checked on what
was stored, and every damaged input is one error that names its file."""

import csv
import errno
import json
import os
import re
import shutil

import numpy as np
import pytest
import soundfile as sf

from mmtl_jax.configs import emodb
from mmtl_jax.data import corpus, store as store_lib, synthetic
from mmtl_jax.run import files
from mmtl_jax.ser import config_check
from mmtl_jax.ser import train

HOSTILE = ['/../../../escaped', '..', '.', '', '.hidden', 'a/b', 'a_b', 'a\\b', 'a?b',
           'ünï cödé/名前', ' x', '-rf', '~root', 'x' * 300, 'x' * 301, 'Ses01-testSes01M.stale-1/']


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
  c.data.classes, c.data.aux_tasks = ('calm', 'angry'), ()
  c.model.num_outputs = 2
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
