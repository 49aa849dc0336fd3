"""experiments/prepare_emodb.py's library (mmtl_jax.data.emodb): the EmoDB manifest from the
original download's layout, checked against the shipped annotations.csv of ../shared/data/emodb
(skipped when absent). Nothing is written beside the shared copy: every CSV goes to tmp_path."""

import csv
import os

import numpy as np
import pytest

from mmtl_jax.configs import emodb as emodb_config
from mmtl_jax.data import corpus
from mmtl_jax.data import emodb

EMODB = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', '..',
                                      'shared', 'data', 'emodb'))


@pytest.fixture(scope='module')
def shipped():
  """(emodb dir, rows of the shipped annotations.csv)."""
  path = os.path.join(EMODB, 'annotations.csv')
  if not (os.path.isfile(path) and os.path.isdir(os.path.join(EMODB, 'wav'))):
    pytest.skip(f'EmoDB copy not found at {EMODB}')
  with open(path, encoding='utf-8', newline='') as f:
    return EMODB, list(csv.DictReader(f))


def _read(path):
  with open(path, encoding='utf-8', newline='') as f:
    return list(csv.DictReader(f))


def _erkennung(path, rows, naturalness=True):
  """A perception-test file in the release's style: Latin-1, decimal commas, a no-break
  space in a number, a title line before the header."""
  header = 'Satz\tEmotion\terkannt' + ('\tnatürlich' if naturalness else '')
  lines = ['Ergebnisse des Perzeptionstests', header]
  for r in rows:
    cells = [os.path.basename(r['file']), r['emotion'][:1].upper(),
             r['recognition_pct'].replace('.', ',')]
    if naturalness:
      cells.append(r['naturalness_pct'].replace('.', ','))
    lines.append('\t'.join(cells))
  lines[2] = lines[2].replace(',', ',\xa0', 1) if ',' in lines[2] else lines[2]
  with open(path, 'w', encoding='latin-1') as f:
    f.write('\n'.join(lines) + '\n')


def test_file_names_give_speaker_sex_text_and_emotion():
  assert emodb.parse_name('03a01Fa') == {'speaker': '03', 'sex': 'M', 'text': 'a01',
                                         'emotion': 'happiness'}
  assert emodb.parse_name('16b10Wb')['emotion'] == 'anger'
  for bad in ('03a01Xa', '99a01Fa', 'a01Fa', '03a01Fa_copy'):
    with pytest.raises(emodb.EmoDBLayoutError, match='not an EmoDB file name'):
      emodb.parse_name(bad)


def test_wav_dir_alone_matches_the_shipped_columns(shipped, tmp_path):
  # The shared copy has no erkennung.txt: the manifest has the name-derived columns only,
  # and they agree with the shipped CSV row for row (paths resolved from each CSV's dir).
  emodb_dir, rows = shipped
  out = tmp_path / 'emodb.csv'
  path, columns, notes = emodb.prepare(os.path.join(emodb_dir, 'wav'), str(out))
  assert columns == ['file', 'speaker', 'sex', 'text', 'emotion']
  assert any('recognition_pct left out' in n for n in notes)
  mine = _read(path)
  assert len(mine) == len(rows) == 535
  for m, s in zip(mine, rows):
    assert (os.path.normpath(os.path.join(tmp_path, m['file']))
            == os.path.normpath(os.path.join(emodb_dir, s['file'])))
    assert [m[k] for k in columns[1:]] == [s[k] for k in columns[1:]]


def test_ratings_files_give_the_shipped_manifest(shipped, tmp_path):
  # The download's layout: wav/ and erkennung.txt side by side; annotations.csv is written
  # beside wav/ and equals the shipped one, ratings included.
  emodb_dir, rows = shipped
  os.symlink(os.path.join(emodb_dir, 'wav'), tmp_path / 'wav')
  _erkennung(tmp_path / 'erkennung.txt', rows)
  path, columns, _ = emodb.prepare(str(tmp_path))
  assert path == str(tmp_path / 'annotations.csv')
  assert columns == list(rows[0])
  assert _read(path) == rows
  with pytest.raises(emodb.EmoDBLayoutError, match='already exists'):
    emodb.prepare(str(tmp_path))  # never replaced unasked
  # Naturalness in its own file beside erkennung.txt.
  _erkennung(tmp_path / 'erkennung.txt', rows, naturalness=False)
  with open(tmp_path / 'natuerlichkeit.txt', 'w', encoding='utf-8') as f:
    f.write('Satz nat\n' + ''.join(f"{os.path.basename(r['file'])} {r['naturalness_pct']}\n"
                                   for r in rows))
  emodb.prepare(str(tmp_path), overwrite=True)
  assert _read(path) == rows


def test_without_ratings_the_config_names_what_is_missing_and_sex_works(shipped, tmp_path):
  out = tmp_path / 'emodb.csv'
  emodb.prepare(os.path.join(shipped[0], 'wav'), str(out))
  c = emodb_config.get_config()
  c.data.manifest.path = str(out)
  with pytest.raises(ValueError, match=r"recognition_pct.*are data.aux_tasks.*':sex' variant"):
    corpus.read_corpus(c)
  c = emodb_config.get_config('sex')
  c.data.manifest.path = str(out)
  utts, _ = corpus.read_corpus(c)
  assert len(utts) == 339
  assert set(np.array([u.aux for u in utts])[:, 0]) == {0, 1}  # F, M


def test_not_an_emodb_directory_is_one_clear_error(tmp_path):
  with pytest.raises(emodb.EmoDBLayoutError, match='no .wav files'):
    emodb.prepare(str(tmp_path))
  (tmp_path / 'wav').mkdir()
  (tmp_path / 'wav' / 'hello.wav').write_bytes(b'')
  with pytest.raises(emodb.EmoDBLayoutError, match='not an EmoDB file name'):
    emodb.prepare(str(tmp_path), str(tmp_path / 'out.csv'))
  (tmp_path / 'erkennung.txt').write_text('no header here\n')
  with pytest.raises(emodb.EmoDBLayoutError, match="no header row with a 'Satz' column"):
    emodb.read_ratings(str(tmp_path / 'erkennung.txt'))
