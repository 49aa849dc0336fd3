"""prepare_emodb refuses a perception-test file that rates a sentence twice, or gives a rating
that is no percentage (nan, inf, 150, -5), naming file and line; no CSV is written. The
manifest never opens the audio, so empty .wav files stand in for the corpus."""

import os
import subprocess
import sys

import pytest

from mmtl_jax.data import emodb
from mmtl_jax.run import errors

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STEMS = ('03a01Fa', '08a02Wb', '16b10Tc')


def _corpus(tmp_path, rows, natuerlichkeit=None):
  """wav/ with STEMS, and erkennung.txt of `rows` ((name, erkannt, nat) after a header)."""
  (tmp_path / 'wav').mkdir()
  for stem in STEMS:
    (tmp_path / 'wav' / f'{stem}.wav').write_bytes(b'')
  lines = ['Satz\terkannt\tnat'] + ['\t'.join(r) for r in rows]
  (tmp_path / 'erkennung.txt').write_text('\n'.join(lines) + '\n', encoding='latin-1')
  if natuerlichkeit is not None:
    (tmp_path / 'natuerlichkeit.txt').write_text(natuerlichkeit, encoding='latin-1')
  return tmp_path / 'erkennung.txt'


def _good(stem):
  return (f'{stem}.wav', '90,5', '80')


def test_a_sentence_rated_twice_is_refused_naming_both_lines(tmp_path):
  path = _corpus(tmp_path, [_good(s) for s in STEMS] + [('08a02Wb.wav', '10', '20')])
  with pytest.raises(emodb.EmoDBLayoutError) as err:
    emodb.prepare(str(tmp_path))
  assert isinstance(err.value, errors.ExpectedError) and '\n' not in str(err.value)
  assert '08a02Wb' in str(err.value) and f'{path}:5' in str(err.value)
  assert 'lines 3 and 5' in str(err.value)
  assert not (tmp_path / 'annotations.csv').exists()


@pytest.mark.parametrize('bad', ['nan', 'NaN', 'inf', '-inf', '150', '100,5', '-5'])
def test_a_rating_that_is_no_percentage_is_refused(tmp_path, bad):
  path = _corpus(tmp_path, [_good(STEMS[0]), (f'{STEMS[1]}.wav', '90', bad), _good(STEMS[2])])
  with pytest.raises(emodb.EmoDBLayoutError) as err:
    emodb.prepare(str(tmp_path))
  assert f'{path}:3' in str(err.value) and repr(bad) in str(err.value)
  assert not (tmp_path / 'annotations.csv').exists()


def test_the_bounds_are_ratings(tmp_path):
  _corpus(tmp_path, [(f'{STEMS[0]}.wav', '0', '100'), _good(STEMS[1]), _good(STEMS[2])])
  out, columns, _ = emodb.prepare(str(tmp_path))
  assert columns[-2:] == ['recognition_pct', 'naturalness_pct']
  assert '0.0,100.0' in open(out, encoding='utf-8').read()


def test_two_files_disagreeing_on_a_rating_are_refused(tmp_path):
  nat = 'Satz\tnat\n' + ''.join(f'{s}.wav\t80\n' for s in STEMS[:2]) + f'{STEMS[2]}.wav\t55\n'
  _corpus(tmp_path, [_good(s) for s in STEMS], natuerlichkeit=nat)
  with pytest.raises(emodb.EmoDBLayoutError, match=STEMS[2]) as err:
    emodb.prepare(str(tmp_path))
  assert str(tmp_path / 'natuerlichkeit.txt') in str(err.value)


@pytest.mark.slow  # a subprocess importing the speech stack
def test_the_entry_point_prints_one_line(tmp_path):
  _corpus(tmp_path, [_good(s) for s in STEMS] + [_good(STEMS[0])])
  out = subprocess.run([sys.executable, os.path.join(ROOT, 'experiments', 'prepare_emodb.py'),
                        str(tmp_path)], capture_output=True, text=True, timeout=300,
                       check=False, cwd=ROOT)
  lines = [l for l in out.stderr.splitlines() if l.startswith('error: ')]
  assert out.returncode != 0 and 'Traceback' not in out.stderr, out.stderr[-2000:]
  assert len(lines) == 1 and 'rated twice' in lines[0], out.stderr[-2000:]
