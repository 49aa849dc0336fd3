"""Every refusal of a manifest, the corpus, the folds and the store is an ExpectedError (issue
28): the entry points print it as one line instead of a 25-72-line traceback. Each case is
checked with `errors.expected_line`, the boundary's own test of "expected"."""

import os

import numpy as np
import pytest

from helpers import assert_one_error_line
from mmtl_jax.configs import emodb
from mmtl_jax.data import corpus, folds as folds_lib, store as store_lib
from mmtl_jax.records import Utterance
from mmtl_jax.run import errors

HEADER = 'path,speaker,label\n'
ROWS = ''.join(f'a/{i}.wav,s{i % 3},{"calm" if i % 2 else "angry"}\n' for i in range(9))


def config_for(path, aux=False):
  c = emodb.get_config()
  c.data.manifest.path = str(path)
  c.data.manifest.path_column, c.data.manifest.label_column = 'path', 'label'
  c.data.classes = ('calm', 'angry')
  c.data.aux_tasks = ('arousal',) if aux else ()
  c.data.manifest.aux_columns = {'arousal': (0.0, 0.5, 1.0)} if aux else {}
  c.data.manifest.min_utterances_per_speaker = 1
  return c


def refusal(path, text=None, data=None, aux=False):
  if text is not None or data is not None:
    with open(path, 'wb') as f:
      f.write(data if data is not None else text.encode('utf-8'))
  with pytest.raises(Exception) as e:
    corpus.read_corpus(config_for(path, aux=aux))
  return e.value


@pytest.mark.parametrize('name, text, fragment', [
    ('duplicate header', 'path,speaker,label,label\n' + ROWS.replace('\n', ',x\n'),
     'more than once'),
    ('semicolons', (HEADER + ROWS).replace(',', ';'), "holding ';'"),
    ('header only', HEADER, 'no rows'),
    ('short row', HEADER + 'a/1.wav,s1\n', 'field(s)'),
    ('empty speaker', HEADER + 'a/1.wav,,calm\n', 'empty'),
    ('listed twice', HEADER + 'a/1.wav,s1,calm\n./a/1.wav,s2,calm\n', 'listed twice'),
    ('no class left', HEADER + 'a/1.wav,s1,calm\n', 'have no utterance'),
])
def test_manifest_refusals_are_assert_one_error_line(tmp_path, name, text, fragment):
  del name
  assert_one_error_line(refusal(tmp_path / 'm.csv', text), fragment)


def test_utf16_and_latin1_are_assert_one_error_line(tmp_path):
  assert_one_error_line(refusal(tmp_path / 'm.csv', data=(HEADER + ROWS).encode('utf-16')), 'not UTF-8')
  assert_one_error_line(refusal(tmp_path / 'm.csv', data=(HEADER + 'ä.wav,s1,calm\n').encode('latin-1')),
           'not UTF-8')


def test_nan_or_out_of_range_in_a_numeric_column_is_assert_one_error_line(tmp_path):
  rows = 'path,speaker,label,arousal\n' + ROWS.replace('\n', ',0.2\n')
  assert_one_error_line(refusal(tmp_path / 'm.csv', rows.replace('a/1.wav,s1,calm,0.2', 'a/1.wav,s1,calm,nan'),
                   aux=True), 'not a finite number', ":3:")
  assert_one_error_line(refusal(tmp_path / 'm.csv', rows.replace('a/1.wav,s1,calm,0.2', 'a/1.wav,s1,calm,7'),
                   aux=True), 'outside', 'aux_columns')


def test_the_same_file_stem_twice_is_assert_one_error_line(tmp_path):
  # a/1.wav and a/1.flac are two recordings with one utterance id (one feature row).
  text = HEADER + ROWS + 'a/1.flac,s1,calm\n'
  assert_one_error_line(refusal(tmp_path / 'm.csv', text), "utterance id 'a/1'", '1.flac')


def test_a_manifest_path_that_is_a_directory_says_so(tmp_path):
  line = assert_one_error_line(refusal(tmp_path), 'is a directory')
  assert 'does not exist' not in line
  assert_one_error_line(refusal(tmp_path / 'missing.csv'), 'does not exist')


def test_folds_refusals_are_assert_one_error_line():
  c = config_for('unused')
  assert_one_error_line(_raised(folds_lib.make_folds, ['only'], c), 'at least 3 speakers')
  c.folds.which = (7,)
  assert_one_error_line(_raised(folds_lib.make_folds, ['a', 'b', 'c'], c), 'folds.which', '0..2')


def _raised(fn, *args):
  with pytest.raises(Exception) as e:
    fn(*args)
  return e.value


def test_store_refusals_and_damage_are_assert_one_error_line(tmp_path):
  c = config_for('unused')
  utts = [Utterance(utt_id=f'u{i}', path=f'/x/{i}.wav', speaker=f's{i % 2}', session=None,
                    dialog='', label=('calm', 'angry')[i % 2], aux=()) for i in range(4)]
  kept = [(u,) for u in utts[:3]]  # u3 (speaker s1, 'angry') skipped
  skipped = [{'path': utts[3].path, 'utt_id': 'u3', 'reason': 'unreadable'}]
  c.data.manifest.min_utterances_per_speaker = 2
  assert_one_error_line(_raised(store_lib.check_stored, c.data, utts, kept, skipped), "speaker 's1'")
  assert_one_error_line(_raised(store_lib.build_feature_store, c, str(tmp_path), []),
           'selection is empty')
  assert isinstance(store_lib.StoreDamagedError('x'), errors.ExpectedError)
  directory = tmp_path / 'store'
  directory.mkdir()
  np.save(directory / 'length.npy', np.zeros(1, np.int32))
  (directory / 'manifest.json').write_text('{not json')
  assert_one_error_line(_raised(store_lib.load_store, str(directory)), 'manifest.json', 'delete')
  os.remove(directory / 'length.npy')
  assert_one_error_line(_raised(store_lib.load_store, str(directory)), 'older version', 'delete')
