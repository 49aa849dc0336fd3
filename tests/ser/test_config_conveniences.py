"""Config conveniences (issue 21 item 4): --print_config on every entry point with a config,
the 'quick' preset (--quick) on any config with command-line overrides still winning."""

import ast
import json
import os
import subprocess
import sys

import pytest

from mmtl_jax.configs import emodb_small
from mmtl_jax.configs import iemocap
from mmtl_jax.configs import quick
from mmtl_jax.run import errors

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.parametrize('get_config', [emodb_small.get_config, iemocap.get_config])
def test_quick_preset_is_one_fold_few_steps_all_systems(get_config):
  c = quick.apply(get_config())
  assert tuple(c.folds.which) == (0,)
  assert c.train.steps == quick.STEPS and c.train.checkpoint_every <= c.train.steps
  assert tuple(c.train.models) == ('mmtl', 'cnn_lstm', 'cnn_lstm_mtl')
  assert c.eval.finetune_steps <= 3


def test_apply_preset_keeps_the_command_line_overrides():
  # The bug it catches: --quick applied after parsing would silently undo
  # --config.train.steps=7 (the override is parsed before the preset runs).
  c = emodb_small.get_config()
  c.train.steps = 7  # as the flag parser left it
  c.folds.which = (2,)
  errors.apply_preset(c, quick.apply, ['train.steps', 'folds.which', 'not.a.field'])
  assert c.train.steps == 7 and tuple(c.folds.which) == (2,)
  assert c.train.eval_every == 10  # the preset's own fields did change


def test_every_entry_point_with_a_config_defines_it_through_errors():
  # --print_config (and --quick) come from errors.define_config_file: an entry point that
  # defined its config flag with ml_collections directly would have neither.
  for name in sorted(os.listdir(os.path.join(REPO, 'experiments'))):
    if not name.endswith('.py'):
      continue
    with open(os.path.join(REPO, 'experiments', name), encoding='utf-8') as f:
      text = f.read()
    calls = [n for n in ast.walk(ast.parse(text)) if isinstance(n, ast.Call)
             and getattr(n.func, 'attr', '') in ('DEFINE_config_file', 'DEFINE_config_dict')]
    assert not calls, f'experiments/{name} defines a config flag outside run/errors.py'


@pytest.mark.slow  # a subprocess
def test_print_config_prints_the_resolved_config_and_does_no_work(tmp_path):
  workdir = tmp_path / 'never'
  out = subprocess.run(
      [sys.executable, os.path.join(REPO, 'experiments', 'train.py'),
       f'--config={os.path.join(REPO, "src", "mmtl_jax", "configs", "emodb_small.py")}',
       '--quick', '--config.train.steps=7', '--print_config', f'--workdir={workdir}'],
      capture_output=True, text=True, timeout=300,
      env=dict(os.environ, PYTHONPATH=os.path.join(REPO, 'src')))
  assert out.returncode == 0, out.stderr
  printed = json.loads(out.stdout)
  assert printed['train']['steps'] == 7  # the override, over the preset's 30
  assert printed['folds']['which'] == [0] and printed['train']['eval_every'] == 10  # preset
  assert printed['data']['kind'] == 'manifest'  # the config file
  assert not workdir.exists()  # printed and exited before any work


@pytest.mark.slow  # a subprocess
def test_fewshot_print_config_shows_what_quick_runs():
  # The bug it catches: fewshot's --quick was applied inside main, after --print_config had
  # already printed the full table's config (3 seeds, 3 settings, 300 iterations).
  out = subprocess.run(
      [sys.executable, os.path.join(REPO, 'experiments', 'fewshot.py'), '--quick',
       '--config.seeds=2', '--print_config'],
      capture_output=True, text=True, timeout=300,
      env=dict(os.environ, PYTHONPATH=os.path.join(REPO, 'src')))
  assert out.returncode == 0, out.stderr
  printed = json.loads(out.stdout)
  assert printed['ways'] == [5] and printed['train']['iterations'] == 100  # the preset
  assert printed['seeds'] == 2  # the override, over the preset's 1
