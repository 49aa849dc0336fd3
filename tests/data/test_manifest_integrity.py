"""Manifest integrity: no class, row or speaker is lost silently; duplicates are errors."""

import csv
import json
import os
import re

import numpy as np
import pytest
import soundfile as sf

from mmtl_jax.configs import emodb
from mmtl_jax.data import corpus, store as store_lib
from mmtl_jax.ser import config_check


def write_manifest(directory, rows, with_audio=False):
  """rows: (path, speaker, label); with_audio writes a 0.25 s tone at every path."""
  path = os.path.join(directory, 'm.csv')
  with open(path, 'w', newline='') as f:
    w = csv.writer(f)
    w.writerow(('path', 'speaker', 'label'))
    w.writerows(rows)
  if with_audio:
    for i, (rel, _, _) in enumerate(rows):
      wav = os.path.join(directory, rel)
      os.makedirs(os.path.dirname(wav), exist_ok=True)
      t = np.arange(4000) / 16000.0
      sf.write(wav, 0.1 * np.sin(2 * np.pi * (200 + 20 * i) * t), 16000)
  return path


def config_for(path, classes=('calm', 'angry'), minimum=2):
  c = emodb.get_config()
  c.data.manifest.path = path
  c.data.manifest.path_column, c.data.manifest.label_column = 'path', 'label'
  c.data.classes = classes
  c.data.aux_tasks = ()
  c.data.manifest.aux_columns = {}
  c.data.manifest.min_utterances_per_speaker = minimum
  return c


ROWS = [('a/1.wav', 's1', 'calm'), ('a/2.wav', 's1', 'angry'), ('a/3.wav', 's2', 'calm'),
        ('a/4.wav', 's2', 'Angry'), ('a/5.wav', 's2', 'angry'), ('a/6.wav', 's3', 'calm'),
        ('a/7.wav', 's1', 'bored'), ('a/8.wav', 's2', 'Angry')]


def test_a_class_without_utterances_is_an_error_naming_the_labels(tmp_path):
  path = write_manifest(tmp_path, ROWS)
  with pytest.raises(ValueError, match=r"data.classes \['Calm'\] have no utterance") as e:
    corpus.read_corpus(config_for(path, classes=('Calm', 'angry'), minimum=1))
  assert "'calm': 3" in str(e.value) and "'Angry': 2" in str(e.value)


def test_dropped_rows_are_counted_per_raw_label_and_small_speakers_left_out(tmp_path):
  path = write_manifest(tmp_path, ROWS)
  utts, problems = corpus.read_corpus(config_for(path))
  # s3 has 1 utterance of the classes (< 2): left out; s1, s2 have 2 each.
  assert sorted(u.utt_id for u in utts) == ['a/1', 'a/2', 'a/3', 'a/5']
  assert [(p.get('label'), p.get('rows')) for p in problems[:2]] == [('Angry', 2), ('bored', 1)]
  assert "2 row(s) with label 'Angry' left out" in problems[0]['reason']
  assert problems[2]['speaker'] == 's3' and problems[2]['utterances'] == 1
  assert 'min_utterances_per_speaker=2' in problems[2]['reason']
  assert all(p['path'] == path for p in problems)
  utts, problems = corpus.read_corpus(config_for(path, minimum=1))
  assert 'a/6' in [u.utt_id for u in utts] and len(problems) == 2


def test_the_counts_reach_manifest_json_and_the_summary(tmp_path):
  path = write_manifest(tmp_path, ROWS, with_audio=True)
  c = config_for(path)
  c.features.n_frames = 20
  c.features.workers = 1
  s = store_lib.build_feature_store(c, str(tmp_path / 'work'))
  with open(s.manifest_path) as f:
    stored = json.load(f)['problems']
  assert [(p.get('label'), p.get('rows'), p.get('speaker')) for p in stored] == [
      ('Angry', 2, None), ('bored', 1, None), (None, None, 's3')]
  assert s.speakers == ['s1', 's2']
  summary = store_lib.format_summary(s)
  assert re.search(r"speaker 's3' left out: 1 utterance", summary), summary


@pytest.mark.parametrize('second', ['./a/../a/1.wav', 'a//1.wav', 'link.wav'])
def test_the_same_recording_twice_is_an_error_naming_both_lines(tmp_path, second):
  path = write_manifest(tmp_path, [('a/1.wav', 's1', 'calm'), ('a/2.wav', 's1', 'angry'),
                                   (second, 's2', 'calm')], with_audio=True)
  if second == 'link.wav':  # a symlink to the first recording
    os.remove(tmp_path / second)
    os.symlink(tmp_path / 'a' / '1.wav', tmp_path / 'link.wav')
  with pytest.raises(ValueError, match='listed twice') as e:
    corpus.read_corpus(config_for(path, minimum=1))
  assert f"{path}:2 ('a/1.wav', speaker 's1') and line 4 ({second!r}, speaker 's2')" \
      in str(e.value)


def test_the_minimum_is_a_checked_config_field():
  c = emodb.get_config()
  c.data.manifest.path = 'x.csv'
  assert c.data.manifest.min_utterances_per_speaker >= 2
  c.data.manifest.min_utterances_per_speaker = 0
  assert config_check.config_problems(c) == [
      'data.manifest.min_utterances_per_speaker: must be >= 1 (got 0)']
