"""IEMOCAP reader on hand-written EmoEvaluation snippets."""

import os
import re

import pytest

from mmtl_jax import records
from mmtl_jax.configs import base
from mmtl_jax.data import corpus, iemocap

HEADER = '% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]\n\n'


def block(utt_id, cat, vad, start=1.0):
  v, a, d = vad
  return (f'[{start:.4f} - {start + 2:.4f}]\t{utt_id}\t{cat}\t[{v:.4f}, {a:.4f}, {d:.4f}]\n'
          'C-E2:\tNeutral;\t()\nC-F1:\tAnger;\t()\nA-E3:\tval 3; act 2; dom  2;\t()\n\n')


def write_eval(root, session, dialog, blocks):
  d = os.path.join(root, 'IEMOCAP_full_release', f'Session{session}', 'dialog', 'EmoEvaluation')
  os.makedirs(d, exist_ok=True)
  path = os.path.join(d, dialog + '.txt')
  with open(path, 'w') as f:
    f.write(HEADER + ''.join(blocks))
  return path


def data_config(root, **overrides):
  c = base.get_config().data
  c.root = str(root)
  c.iemocap.sessions = (1,)
  for k, v in overrides.items():
    (c.iemocap if k in c.iemocap else c)[k] = v  # ConfigDict would add a misspelt field
  return c


@pytest.fixture
def corpus_root(tmp_path):
  write_eval(tmp_path, 1, 'Ses01F_impro01', [
      block('Ses01F_impro01_F000', 'neu', (2.5, 2.5, 2.5)),
      block('Ses01F_impro01_M003', 'ang', (2.0, 4.0, 5.0)),  # on edges; 5.0 in the top bin
      block('Ses01F_impro01_F001', 'exc', (4.0, 3.5, 3.0)),
      block('Ses01F_impro01_M004', 'xxx', (3.0, 3.0, 3.0)),
      block('Ses01F_impro01_F002', 'fru', (1.0, 3.9999, 1.5)),
  ])
  write_eval(tmp_path, 1, 'Ses01M_script01_1b', [
      block('Ses01M_script01_1b_F000', 'sad', (1.5, 1.5, 1.5)),
  ])
  return tmp_path


def test_reads_summary_lines_speakers_and_bins(corpus_root):
  utts, problems = iemocap.read_iemocap(data_config(corpus_root))
  assert problems == []
  by_id = {u.utt_id: u for u in utts}
  assert set(by_id) == {'Ses01F_impro01_F000', 'Ses01F_impro01_M003'}  # impro, 4 classes
  m = by_id['Ses01F_impro01_M003']
  assert m.speaker == 'Ses01M' and m.session == 1 and m.dialog == 'Ses01F_impro01'
  assert m.label == 'ang' and m.aux == (1, 3, 3) and m.aux_raw == (2.0, 4.0, 5.0)
  assert m.path == os.path.join(str(corpus_root), 'IEMOCAP_full_release', 'Session1',
                                'sentences', 'wav', 'Ses01F_impro01', 'Ses01F_impro01_M003.wav')
  assert by_id['Ses01F_impro01_F000'].aux == (1, 1, 1)


def test_selection_merge_exc_aux_subset(corpus_root):
  utts, _ = iemocap.read_iemocap(data_config(corpus_root, selection='all', merge_exc=True,
                                             aux_tasks=('dominance', 'valence')))
  by_id = {u.utt_id: u for u in utts}
  assert by_id['Ses01F_impro01_F001'].label == 'hap'
  sad = by_id['Ses01M_script01_1b_F000']
  assert sad.speaker == 'Ses01F' and sad.dialog == 'Ses01M_script01_1b' and sad.aux == (0, 0)
  utts, _ = iemocap.read_iemocap(data_config(corpus_root, selection='scripted'))
  assert [u.utt_id for u in utts] == ['Ses01M_script01_1b_F000']


def test_odd_dialog_names(tmp_path):
  write_eval(tmp_path, 3, 'Ses03M_impro05a', [block('Ses03M_impro05a_F010', 'hap', (4, 3, 3))])
  utts, _ = iemocap.read_iemocap(data_config(tmp_path, sessions=(3,)))
  (u,) = utts
  assert (u.speaker, u.dialog, u.session, u.aux) == ('Ses03F', 'Ses03M_impro05a', 3, (3, 2, 2))
  assert u.path.endswith(os.path.join('Session3', 'sentences', 'wav', 'Ses03M_impro05a',
                                      'Ses03M_impro05a_F010.wav'))


def test_root_may_be_release_dir_or_parent(corpus_root):
  a, _ = iemocap.read_iemocap(data_config(corpus_root))
  b, _ = iemocap.read_iemocap(data_config(corpus_root / 'IEMOCAP_full_release'))
  assert a == b


@pytest.mark.parametrize('value', [0.5, 6.0, 7.25])
def test_out_of_range_value_names_file_and_line(tmp_path, value):
  path = write_eval(tmp_path, 1, 'Ses01F_impro02', [
      block('Ses01F_impro02_F000', 'neu', (2, 2, 2)),
      block('Ses01F_impro02_F001', 'xxx', (2, value, 2)),  # also checked for dropped classes
  ])
  with pytest.raises(ValueError, match=rf'{re.escape(path)}:8: value {value} outside \[1.0, 6.0\)'):
    iemocap.read_iemocap(data_config(tmp_path))


@pytest.mark.parametrize('line', [
    '[1.0 - 2.0]\tSes01F_impro02_F000\tneu\t[2.0, 2.0]\n',  # two values
    '[1.0 - 2.0] Ses01F_impro02_F000\n',  # truncated
    'Ses01F_impro02_F000\tneu\t[2, 2, 2]\n',  # block start without times
])
def test_malformed_summary_line_names_file_and_line(tmp_path, line):
  path = write_eval(tmp_path, 1, 'Ses01F_impro02', [block('Ses01F_impro02_F001', 'neu', (2, 2, 2)),
                                                     line])
  with pytest.raises(ValueError, match=rf'{re.escape(path)}:8: malformed EmoEvaluation summary'):
    iemocap.read_iemocap(data_config(tmp_path))


def test_bad_utterance_id_names_file_and_line(tmp_path):
  path = write_eval(tmp_path, 1, 'Ses01F_impro02',
                    [block('Ses01F_impro02_X000', 'neu', (2, 2, 2))])
  with pytest.raises(ValueError, match=rf'{re.escape(path)}:3: utterance id'):
    iemocap.read_iemocap(data_config(tmp_path))


def test_missing_root_and_session_name_the_layout(tmp_path):
  with pytest.raises(FileNotFoundError, match='SessionN/dialog/EmoEvaluation'):
    iemocap.read_iemocap(data_config(tmp_path / 'nowhere'))
  with pytest.raises(ValueError, match='IEMOCAP_full_release'):
    iemocap.read_iemocap(data_config(''))
  write_eval(tmp_path, 1, 'Ses01F_impro01', [block('Ses01F_impro01_F000', 'neu', (2, 2, 2))])
  with pytest.raises(FileNotFoundError, match=r'Session2.*sentences/wav/<dialog>/<utt_id>.wav'):
    iemocap.read_iemocap(data_config(tmp_path, sessions=(1, 2)))


def test_read_corpus_dispatch(corpus_root):
  c = base.get_config()
  c.data.root = str(corpus_root)
  c.data.iemocap.sessions = (1,)
  utts, _ = corpus.read_corpus(c)
  assert [u.utt_id for u in utts] == ['Ses01F_impro01_F000', 'Ses01F_impro01_M003']
  c.data.kind = 'nope'
  with pytest.raises(ValueError, match=r"unknown corpus 'nope' \(config.data.kind\); known: "
                     r"\('iemocap', 'synthetic', 'manifest'\)"):
    corpus.read_corpus(c)


def test_bin_index_edges_go_up():
  edges = (1.0, 2.0, 3.0, 4.0, 6.0)
  assert [records.bin_index(v, edges, 'x') for v in (1.0, 1.99, 2.0, 3.0, 4.0, 5.0, 5.99)] == \
      [0, 0, 1, 2, 3, 3, 3]
