"""CSV manifest reader on EmoDB (../shared/data/emodb, 22.05 kHz) and on hand-written CSVs."""

import csv
import os
import re

import numpy as np
import pytest

from mmtl_jax.configs import emodb
from mmtl_jax.data import corpus, folds, store as store_lib

EMODB = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', '..', 'shared', 'data',
                     'emodb')


@pytest.fixture(scope='module')
def emodb_dir():
  if not os.path.isfile(os.path.join(EMODB, 'annotations.csv')):
    pytest.skip(f'EmoDB copy not found at {os.path.normpath(EMODB)}')
  return os.path.normpath(EMODB)


def emodb_config(emodb_dir):
  c = emodb.get_config()
  c.data.manifest.path = os.path.join(emodb_dir, 'annotations.csv')
  return c


def test_emodb_config_requires_the_manifest_path():
  with pytest.raises(ValueError, match='config.data.manifest.path'):
    corpus.read_corpus(emodb.get_config())


def test_reads_the_full_manifest(emodb_dir):
  c = emodb_config(emodb_dir)
  utts, problems = corpus.read_corpus(c)
  assert len(utts) == 339  # every speaker has >= 21: none below the minimum
  # The other 3 emotions are left out, and counted per raw label.
  assert [(p['label'], p['rows']) for p in problems] == [('boredom', 81), ('disgust', 46),
                                                         ('fear', 69)]
  assert sorted({u.speaker for u in utts}) == ['03', '08', '09', '10', '11', '12', '13', '14',
                                                '15', '16']
  assert all(os.path.isfile(u.path) for u in utts)
  aux = np.array([u.aux for u in utts])
  for j in range(2):  # every one of the 4 bins of both aux tasks is populated
    assert set(aux[:, j]) == {0, 1, 2, 3}
  u = next(u for u in utts if u.utt_id == 'wav/03a01Fa')
  assert (u.label, u.aux, u.aux_raw) == ('happiness', (1, 1), (90.0, 75.0))


def test_subset_features_and_speaker_folds(emodb_dir, tmp_path):
  c = emodb_config(emodb_dir)
  with open(c.data.manifest.path) as f:
    rows = list(csv.DictReader(f))
  # 2 utterances of each of the 4 classes for 3 speakers, from the real CSV.
  keep = []
  for spk in ('03', '08', '16'):
    for emo in c.data.classes:
      keep += [r for r in rows if r['speaker'] == spk and r['emotion'] == emo][:2]
  subset = tmp_path / 'subset.csv'
  with open(subset, 'w', newline='') as f:
    w = csv.DictWriter(f, fieldnames=rows[0].keys())
    w.writeheader()
    for r in keep:
      w.writerow({**r, 'file': os.path.join(emodb_dir, r['file'])})  # absolute paths work too
  c.data.manifest.path = str(subset)
  c.features.n_frames = 100
  c.features.workers = 1
  c.model.num_outputs = 4
  s = store_lib.build_feature_store(c, str(tmp_path / 'work'))
  assert s.manifest['skipped'] == []
  assert len(s.utterances) == 24 and len(s) == 24  # 2.0 s at 22.05 kHz: one segment each
  assert s.features.shape == (24, 100, 200)
  assert s.speakers == ['03', '08', '16']
  assert s.manifest['counts']['utterances']['08'] == {c_: 2 for c_ in sorted(c.data.classes)}
  (fold0, fold1, fold2) = folds.make_folds(s, c)
  assert (fold0.test_speaker, fold0.dev_speaker, fold0.train_speakers) == ('03', '08', ('16',))
  assert (fold2.test_speaker, fold2.dev_speaker) == ('16', '03')


def write_csv(path, rows, header=('path', 'speaker', 'label', 'score', 'group')):
  with open(path, 'w', newline='') as f:
    w = csv.writer(f)
    w.writerow(header)
    w.writerows(rows)
  return str(path)


def manifest_config(path):
  c = emodb.get_config()
  c.data.manifest.path = path
  c.data.manifest.path_column, c.data.manifest.label_column = 'path', 'label'
  c.data.classes = ('calm', 'angry')
  c.data.manifest.label_map = {'N': 'calm', 'W': 'angry'}
  c.data.aux_tasks = ('group', 'score')
  c.data.manifest.aux_columns = {'score': (0.0, 50.0, 100.0), 'group': 'categorical'}
  c.data.manifest.min_utterances_per_speaker = 1  # these CSVs have 1-2 rows per speaker
  return c


def test_generic_manifest_label_map_and_aux_columns(tmp_path):
  path = write_csv(tmp_path / 'm.csv', [('a/1.wav', 's1', 'N', '50', 'z'),
                                         ('a/2.wav', 's2', 'W', '0', 'b'),
                                         ('a/3.wav', 's2', 'L', '99', 'a')])
  utts, _ = corpus.read_corpus(manifest_config(path))
  assert [(u.utt_id, u.speaker, u.label, u.aux) for u in utts] == [
      ('a/1', 's1', 'calm', (2, 1)), ('a/2', 's2', 'angry', (1, 0))]
  assert utts[0].path == str(tmp_path / 'a' / '1.wav') and utts[0].aux_raw is None


def test_manifest_errors_name_file_and_line(tmp_path):
  path = write_csv(tmp_path / 'm.csv', [('1.wav', 's1', 'N', '10', 'a'),
                                         ('2.wav', 's1', 'N', '100', 'a')])
  with pytest.raises(ValueError, match=rf"{re.escape(path)}:3 \(column 'score'\): value 100.0"):
    corpus.read_corpus(manifest_config(path))
  path = write_csv(tmp_path / 'n.csv', [('1.wav', 's1', 'N', '10')],
                   header=('path', 'speaker', 'label', 'score'))
  with pytest.raises(ValueError, match=rf"{re.escape(path)}:1: missing column\(s\) \['group'\]"):
    corpus.read_corpus(manifest_config(path))
  with pytest.raises(FileNotFoundError, match='does not exist'):
    corpus.read_corpus(manifest_config(str(tmp_path / 'none.csv')))
