"""Issue 28 in the SER application: settings that cannot give a valid segment and infinite
rates are refused by the config check; a sweep point name over a file name's length is refused
before any training; a finished run's results read back past a damaged feature store; names
from the corpus' files reach the terminal with control characters escaped."""

import glob
import json
import os

import pytest

from mmtl_jax.configs import demo
from mmtl_jax.run import errors
from mmtl_jax.ser import config_check, sweep, train


def problems_of(**fields):
  c = demo.get_config()
  for dotted, value in fields.items():
    section, name = dotted.split('__')
    c[section][name] = value
  return config_check.config_problems(c)


@pytest.mark.parametrize('fields, fragment', [
    # hop 2 s: every segment of at most 1 s has 1 frame, fewer than the 3 pools' 8: trained to
    # a chance table with exit 0 before.
    (dict(features__hop_ms=2000.0), 'fewer than the 8'),
    (dict(features__win_ms=100.0), 'exceeds features.n_fft'),  # every file 'unreadable'
    (dict(features__max_segment_s=1e-6), 'features.max_segment_s: less than one sample'),
    (dict(features__hop_ms=0.01), 'features.hop_ms: less than one sample'),
    (dict(meta__gamma=float('inf')), 'meta.gamma: must be a finite number > 0'),
    (dict(meta__alpha=float('inf')), 'meta.alpha: must be a finite number > 0'),
])
def test_settings_that_give_no_valid_segment_or_an_infinite_rate_are_refused(fields, fragment):
  problems = problems_of(**fields)
  assert any(fragment in p for p in problems), problems
  assert problems_of() == []


def test_a_sweep_point_name_over_a_file_names_length_is_refused_before_training(tmp_path):
  def train_fn(config, workdir):
    raise AssertionError('trained a point')

  grid = {'folds.which': [tuple(range(100))]}  # 'folds.which=(0, 1, ...)': ~400 characters
  with pytest.raises(sweep.GridError) as e:
    sweep.run_sweep(demo.get_config(), grid, str(tmp_path / 'sweep'), train_fn)
  assert 'over the 255' in errors.expected_line(e.value)
  assert not os.path.exists(tmp_path / 'sweep' / 'points')


def test_fold_lines_escape_control_characters():
  result = {'test_speaker': 'S1\x1b[2J', 'dev_speaker': 'S2\r',
            'records': {'strict': {'UA': 0.5, 'WA': 0.5}}}
  line = train._fold_line(result)  # pylint: disable=protected-access
  assert '\x1b' not in line and '\r' not in line and 'S1\\x1b[2J' in line


@pytest.mark.slow  # one tiny training
def test_a_finished_run_reads_back_past_a_damaged_store(tiny_config, corpus_root, tmp_path,
                                                        capsys):
  config = tiny_config(corpus_root, models=('cnn_lstm',), steps=2)
  workdir = str(tmp_path / 'run')
  first = train.train_and_evaluate(config, workdir)
  (features,) = glob.glob(os.path.join(workdir, 'features', '*', 'features.npy'))
  with open(features, 'r+b') as f:  # truncated: StoreDamagedError when the store is opened
    f.truncate(os.path.getsize(features) // 2)
  capsys.readouterr()
  again = train.train_and_evaluate(config, workdir)
  assert json.dumps(again, sort_keys=True) == json.dumps(first, sort_keys=True)
  assert 'read back without it' in capsys.readouterr().out
  # A run that has not finished still needs the store: refused as one expected line.
  os.remove(os.path.join(workdir, 'results.json'))
  with pytest.raises(errors.ExpectedError) as e:
    train.train_and_evaluate(config, workdir)
  assert 'truncated' in errors.expected_line(e.value)
