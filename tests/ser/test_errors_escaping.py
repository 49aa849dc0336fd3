"""Control characters read from files never reach the terminal (issue 28): the names a
bundle's bundle.json / config.json hold (corpus, classes, fold, speakers) are printed escaped
by predict's header and CLI, and the progress lines escape unit names (a fold is named after
its speakers)."""

import io
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from mmtl_jax.run import progress
from mmtl_jax.ser import predict

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EVIL = 'x\x1b[2J\nforged line'
ESCAPED = 'x\\x1b[2J\\nforged line'


@pytest.fixture(scope='module')
def evil_bundle(tmp_path_factory, tiny_config, tiny_bundle):
  """An untrained tiny MMTL bundle whose bundle.json info and config.json classes hold an
  escape sequence (clear screen) and a newline."""
  config = tiny_config('unused')
  return tiny_bundle(
      tmp_path_factory.mktemp('b') / 'bundle', config,
      classes=(EVIL,) + tuple(config.data.classes)[1:],
      info={'corpus': EVIL, 'fold': EVIL, 'test_speaker': EVIL, 'dev_speaker': 'Ses01M',
            'protocol': EVIL, 'dev_UA': 0.5})


def _clean(text):
  assert '\x1b' not in text, text
  assert ESCAPED in text, text


def test_header_escapes_names_from_the_bundle(evil_bundle):
  # Before: header() returned 'trained on: x\x1b[2J\nforged line', a cleared screen and a line.
  header = predict.Predictor(evil_bundle).header()
  assert all('\n' not in line and '\x1b' not in line for line in header), header
  text = '\n'.join(header)
  for label in ('trained on: ', 'classes: ', 'fold: ', 'protocol: '):
    assert label + ESCAPED in text, text


def test_progress_escapes_unit_names():
  out = io.StringIO()
  reporter = progress.Progress('fold-run', 2, stream=out, tty=False, every_s=0, announce=True)
  reporter.start(f'mmtl {EVIL}', 3)
  reporter.finish()
  reporter.read_back(f'mmtl {EVIL}', note=EVIL)
  reporter.close()
  _clean(out.getvalue())
  assert 'forged line' not in out.getvalue().replace(ESCAPED, '')


@pytest.mark.slow  # a subprocess: the CLI
def test_predict_cli_prints_names_and_paths_escaped(evil_bundle, tmp_path):
  wav = tmp_path / 'a\x1b[2Jb.wav'  # a file name with an escape sequence, as a glob gives it
  sf.write(str(wav), np.random.default_rng(0).normal(0, 0.1, 16000).astype(np.float32), 16000,
           subtype='FLOAT')
  missing = tmp_path / 'gone\rx.wav'
  out = subprocess.run([sys.executable, os.path.join(ROOT, 'experiments', 'predict.py'),
                        f'--checkpoint={evil_bundle}', str(wav), str(missing)],
                       capture_output=True, text=True, timeout=300, check=False)
  assert out.returncode == 1, out.stderr  # the missing file
  assert '\x1b' not in out.stdout + out.stderr and '\r' not in out.stdout + out.stderr
  assert f'{ESCAPED}=' in out.stdout  # the class name in the posteriors
  assert 'a\\x1b[2Jb.wav: ' in out.stdout and 'gone\\rx.wav: ERROR' in out.stderr
  assert 'forged line' not in out.stdout.replace(ESCAPED, '')


def test_terminal_summary_escapes_names_and_paths(tmp_path):
  from mmtl_jax.ser import tables  # pylint: disable=g-import-not-at-top
  run = {'model': EVIL, 'protocol': 'strict', 'pooled': {'UA': 0.5, 'WA': 0.5},
         'mean': {'UA': 0.5, 'WA': 0.5}, 'std': {'UA': 0.0, 'WA': 0.0}, 'n_folds': 1,
         'seeds': [0]}
  reporter = progress.Progress('fold-run', 1, stream=io.StringIO(), tty=False)
  workdir = str(tmp_path / 'w\x1b[2J')
  text = tables.terminal_summary(workdir, {'markdown': workdir + '/results.md',
                                           'json': workdir + '/results.json'},
                                 [run], reporter, 1.0)
  assert '\x1b' not in text and 'w\\x1b[2J' in text, text
