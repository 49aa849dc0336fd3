"""A user's mistake is a typed error raised where it is found (issue 28): the data layer, the
config check and the config files raise no bare ValueError / RuntimeError / FileNotFoundError
(which the entry points' boundary prints as a traceback) unless listed here with why. And the
boundary itself: Ctrl-C, control characters, a config file's own error, a tuple override given
twice."""

import ast
import glob
import os
import subprocess
import sys

import pytest

from mmtl_jax.run import errors

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SRC = os.path.join(ROOT, 'src', 'mmtl_jax')
SCANNED = (sorted(glob.glob(os.path.join(SRC, 'data', '*.py')))
           + [os.path.join(SRC, 'ser', 'config_check.py')]
           + sorted(glob.glob(os.path.join(SRC, 'configs', '*.py'))))
BARE = ('ValueError', 'RuntimeError', 'FileNotFoundError')

# (file, enclosing function, exception): why a bare raise there is right.
ALLOWED = {
    ('data/features.py', 'segment_spectrogram', 'ValueError'):
        'window over n_fft and an unknown features.normalise: config_check refuses both '
        'before extraction (_segment_problems, _ENUMS), so here they are a caller bug',
    ('data/features.py', 'waveform_segments', 'ValueError'):
        'an empty or multi-channel array is a caller bug: the store decodes files to mono '
        'and records unreadable ones as skipped',
    ('data/folds.py', 'class_weights', 'ValueError'):
        'labels come from the store, whose indices are checked when it is built',
    ('data/sampler.py', '__init__', 'ValueError'):
        'no speaker, an index over num_outputs, a speaker without segments: the folds, '
        'store.check_aux_bins and store.check_stored refuse those first',
    # The config files may import nothing of the package (docs/ARCHITECTURE.md), so they
    # cannot raise an ExpectedError; they raise inside get_config while ml_collections parses
    # --config, and run/errors.py prints that flag error as one line (_config_parse_error).
    ('configs/__init__.py', 'config_path', 'FileNotFoundError'):
        'a package config name in code (experiments/*.py), not a user input',
    ('configs/aux_tasks.py', 'get_config', 'ValueError'): 'inside get_config: one flag-error line',
    ('configs/emodb.py', 'variants', 'ValueError'): 'inside get_config: one flag-error line',
    ('configs/fewshot.py', 'get_config', 'ValueError'): 'inside get_config: one flag-error line',
}
# Refusals of user input still bare, in files outside this change (issue 28 left open):
# each should become an ExpectedError where it is raised; remove the entry when it does.
PENDING: set = set()


def bare_raises(path):
  """{(file, function, exception)} of every `raise ValueError(...)` (and the other BARE
  names) in `path`, keyed by the innermost enclosing function."""
  tree = ast.parse(open(path, encoding='utf-8').read(), path)
  rel = os.path.relpath(path, SRC).replace(os.sep, '/')
  found = set()

  def visit(node, function):
    for child in ast.iter_child_nodes(node):
      name = function
      if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
        name = child.name
      if isinstance(child, ast.Raise) and isinstance(child.exc, ast.Call) and isinstance(
          child.exc.func, ast.Name) and child.exc.func.id in BARE:
        found.add((rel, function, child.exc.func.id))
      visit(child, name)

  visit(tree, '<module>')
  return found


def test_user_input_refusals_are_expected_errors_where_raised():
  found = set().union(*(bare_raises(p) for p in SCANNED))
  unexplained = sorted(found - set(ALLOWED) - PENDING)
  assert not unexplained, (
      'bare raises of user input (make them an errors.ExpectedError subclass where raised, '
      f'or list them in ALLOWED with why): {unexplained}')
  # Entries for raises that are gone: keep the lists honest.
  assert not (set(ALLOWED) | PENDING) - found, sorted((set(ALLOWED) | PENDING) - found)


def test_ctrl_c_is_one_line_and_exit_130(capsys, monkeypatch):
  monkeypatch.delenv(errors.VERBOSE_ENV, raising=False)

  def main():
    raise KeyboardInterrupt

  try:
    errors.boundary(main)()
  except SystemExit as e:
    code = e.code
  except KeyboardInterrupt:  # caught here: it would end the pytest session
    pytest.fail('Ctrl-C passed the boundary: Python prints its traceback')
  assert code == 130
  assert capsys.readouterr().err == 'interrupted: rerun the same command to resume\n'


def test_control_characters_are_escaped_before_the_terminal(capsys, monkeypatch):
  monkeypatch.delenv(errors.VERBOSE_ENV, raising=False)
  assert errors.printable('Ses01F\x1b[2J\rX\u202e') == 'Ses01F\\x1b[2J\\rX\\u202e'
  assert errors.printable('Jürgen, 話者 7') == 'Jürgen, 話者 7'

  def main():
    raise errors.ExpectedError("speaker '\x1b]0;pwned\x07' unknown, bundle.json, fix it")

  with pytest.raises(SystemExit):
    errors.boundary(main)()
  err = capsys.readouterr().err
  assert '\x1b' not in err and '\x07' not in err and '\\x1b]0;pwned\\x07' in err


def _train_py(*args):
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  env.pop(errors.VERBOSE_ENV, None)
  return subprocess.run([sys.executable, os.path.join(ROOT, 'experiments', 'train.py'), *args],
                        capture_output=True, text=True, timeout=300, check=False, cwd=ROOT,
                        env=env)


def _one_error_line(out):
  """The one 'error: ' line of a run that failed with exit status 1, with no traceback."""
  assert out.returncode == 1, (out.returncode, out.stdout[-2000:], out.stderr[-2000:])
  assert 'Traceback' not in out.stderr, out.stderr[-3000:]
  lines = [l for l in out.stderr.splitlines() if l.startswith('error: ')]
  assert len(lines) == 1, out.stderr[-3000:]
  return lines[0]


def test_a_tuple_override_given_twice_is_refused():
  # ml_collections joins repeated tuple flags: this trained folds [7, 0], exit 0.
  line = _one_error_line(_train_py("--config.folds.which=(7,)", "--config.folds.which=(0,)",
                                   '--print_config'))
  assert '--config.folds.which given 2 times' in line
  assert errors.repeated_tuple_fields(  # a scalar given twice: absl's last one wins
      'config', os.path.join(SRC, 'configs', 'demo.py'),
      ['--config.seed=1', '--config.seed=2']) == []


def test_a_config_files_own_error_is_its_last_line_not_a_traceback():
  line = _one_error_line(_train_py(f'--config={SRC}/configs/emodb.py:bogus'))
  assert "ValueError: unknown EmoDB config variant(s) ['bogus']" in line
  assert 'most recent call last' not in line and 'get_config' not in line
