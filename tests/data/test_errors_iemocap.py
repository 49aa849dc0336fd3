"""Every refusal of the IEMOCAP reader and of the synthetic corpus is an ExpectedError (issue
28): the entry points print one line naming the file (and line) instead of a traceback."""

import json
import os

import pytest

from helpers import assert_one_error_line
from mmtl_jax.configs import base
from mmtl_jax.data import iemocap, synthetic


def _block(utt_id, cat, vad):
  v, a, d = vad
  return (f'[1.0000 - 3.0000]\t{utt_id}\t{cat}\t[{v:.4f}, {a:.4f}, {d:.4f}]\n'
          'C-E2:\tNeutral;\t()\n\n')


def _release(root, blocks):
  d = os.path.join(root, 'IEMOCAP_full_release', 'Session1', 'dialog', 'EmoEvaluation')
  os.makedirs(d, exist_ok=True)
  path = os.path.join(d, 'Ses01F_impro01.txt')
  with open(path, 'w', encoding='utf-8') as f:
    f.write('% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]\n\n' + ''.join(blocks))
  return path


def _data(root, **overrides):
  c = base.get_config().data
  c.root = str(root)
  c.iemocap.sessions = (1,)
  for k, v in overrides.items():
    (c.iemocap if k in c.iemocap else c)[k] = v
  return c


GOOD = _block('Ses01F_impro01_F000', 'neu', (2, 2, 2))


@pytest.mark.parametrize('name, blocks, overrides, fragments', [
    ('value outside [1, 6)', [GOOD, _block('Ses01F_impro01_F001', 'neu', (2, 6.5, 2))], {},
     (':6: value 6.5 outside [1.0, 6.0)',)),
    ('an aux value outside', [_block('Ses01F_impro01_F001', 'neu', (0.5, 2, 2))], {},
     (':3: value 0.5 outside',)),
    ('malformed block', [GOOD, '[1.0 - 2.0] Ses01F_impro01_F001\n'], {},
     (':6: malformed EmoEvaluation summary line',)),
    ('bad utterance id', [_block('Ses01F_impro01_X000', 'neu', (2, 2, 2))], {},
     (':3: utterance id',)),
    ('unknown selection', [GOOD], {'selection': 'both'}, ('config.data.iemocap.selection',)),
    ('unknown aux task', [GOOD], {'aux_tasks': ('arousal',)}, ("aux task 'arousal'",)),
    ('missing session', [GOOD], {'sessions': (1, 2)}, ('Session2', 'does not exist')),
])
def test_iemocap_refusals_are_assert_one_error_line(tmp_path, name, blocks, overrides, fragments):
  del name  # the id only
  path = _release(tmp_path, blocks)
  with pytest.raises(iemocap.IemocapError) as e:  # before: a bare ValueError / FileNotFoundError
    iemocap.read_iemocap(_data(tmp_path, **overrides))
  line = assert_one_error_line(e.value, *fragments)
  if fragments[0].startswith(':'):  # a line of the file: named with its path
    assert line.startswith(path + fragments[0]), line


def test_missing_or_empty_root_is_assert_one_error_line(tmp_path):
  with pytest.raises(FileNotFoundError) as e:  # still a FileNotFoundError for its callers
    iemocap.read_iemocap(_data(tmp_path / 'nowhere'))
  assert_one_error_line(e.value, 'does not exist', 'IEMOCAP_full_release/SessionN')
  with pytest.raises(ValueError) as e:
    iemocap.read_iemocap(_data(''))
  assert_one_error_line(e.value, 'config.data.root is empty')


def test_synthetic_corpus_refusals_are_assert_one_error_line(tmp_path):
  release = tmp_path / 'c' / 'IEMOCAP_full_release'
  release.mkdir(parents=True)
  (release / synthetic.MARKER).write_text(json.dumps({'seed': 3, 'version': synthetic.VERSION}))
  with pytest.raises(synthetic.SyntheticCorpusError) as e:
    synthetic.ensure_corpus(str(tmp_path / 'c'), seed=0)
  assert_one_error_line(e.value, 'holds a synthetic corpus of seed 3')
  data = _data('')
  data.kind = 'synthetic'
  with pytest.raises(synthetic.SyntheticCorpusError) as e:
    synthetic.read(data, workdir=None)
  assert_one_error_line(e.value, "data.kind='synthetic' needs config.data.root or a workdir")
