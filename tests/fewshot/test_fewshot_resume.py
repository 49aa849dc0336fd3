"""The few-shot table as a resumable run (fewshot/table.py over run/runner.py): a rerun with a
subset of --methods keeps the others' records in fewshot.json/md; interrupting a rerun of a
finished table keeps its records (and `complete`); a second run on the workdir is refused
in one line; a changed config keeps the old records beside the new ones. Training is replaced
by a stub: what is under test is the bookkeeping."""

import json
import os

import numpy as np
import pytest

from mmtl_jax.configs import fewshot as fewshot_config
from mmtl_jax.fewshot import experiment
from mmtl_jax.fewshot import table
from mmtl_jax.run import errors
from mmtl_jax.run import lock


@pytest.fixture
def calls(monkeypatch):
  """Stubs rendering and training; the list records every (method, seed) computed."""
  done = []
  monkeypatch.setattr(experiment, 'build_alphabet', lambda data: (None, {}))

  def run_one(name, way, shot, config, alphabet, splits, progress=None, make_hook=None, *,
              seed=None, **kw):
    done.append((name, seed))
    per_episode = list(np.linspace(0.5, 0.9, 4) - 0.1 * len(name) % 0.3)
    return {'method': name, 'way': way, 'shot': shot, 'seed': seed, 'accuracy': 70.0,
            'ci95': 1.0, 'per_episode': per_episode, 'eval_seed': 1, 's_per_iter': 0.1,
            'peak_mem_mb': 10.0, 'iterations': 3, 'eval_episodes': 4, 'chance': 20.0,
            'accuracy_unit': 'percent', 'settings': {}}

  monkeypatch.setattr(experiment, 'run_one', run_one)
  return done


def _config():
  c = fewshot_config.get_config('quick')
  c.train.report_every_s = 0.0
  return c


def _table(workdir):
  with open(os.path.join(workdir, 'fewshot.json'), encoding='utf-8') as f:
    content = json.load(f)
  with open(os.path.join(workdir, 'fewshot.md'), encoding='utf-8') as f:
    return content, f.read()


def test_a_subset_of_methods_keeps_the_others_records(tmp_path, calls):
  workdir = str(tmp_path)
  table.run_table(_config(), workdir=workdir, methods=['maml', 'fomaml'])
  assert calls == [('maml', 0), ('fomaml', 0)]
  table.run_table(_config(), workdir=workdir, methods=['maml'])
  assert len(calls) == 2  # read back, not recomputed
  content, md = _table(workdir)
  assert [r['method'] for r in content['records']] == ['maml', 'fomaml']
  assert content['complete'] and {r['method'] for r in content['rows']} == {'maml', 'fomaml'}
  assert '| maml | 5-way 1-shot |' in md and '| fomaml | 5-way 1-shot |' in md


def test_an_interrupted_rerun_keeps_the_finished_records(tmp_path, calls, monkeypatch):
  workdir = str(tmp_path)
  table.run_table(_config(), workdir=workdir, methods=['maml', 'fomaml'])

  def interrupted(*args, **kwargs):
    raise KeyboardInterrupt
  monkeypatch.setattr(experiment, 'run_one', interrupted)
  table.run_table(_config(), workdir=workdir, methods=['maml', 'fomaml'])  # nothing to do
  content, _ = _table(workdir)
  assert content['complete'] and len(content['records']) == 2
  more = _config()
  more.seeds = 2  # a new seed's record is interrupted: the finished ones stay
  with pytest.raises(KeyboardInterrupt):
    table.run_table(more, workdir=workdir, methods=['maml', 'fomaml'])
  content, md = _table(workdir)
  assert [(r['method'], r['seed']) for r in content['records']] == [('maml', 0), ('fomaml', 0)]
  assert not content['complete']  # seed 1 is missing
  assert '| fomaml | 5-way 1-shot |' in md


def test_a_second_run_on_the_workdir_is_refused_in_one_line(tmp_path, calls):
  with lock.WorkdirLock(str(tmp_path)):
    with pytest.raises(lock.WorkdirLockedError) as err:
      table.run_table(_config(), workdir=str(tmp_path), methods=['maml'])
  assert '\n' not in errors.expected_line(err.value) and calls == []


def test_a_changed_config_keeps_the_old_records_apart(tmp_path, calls):
  workdir = str(tmp_path)
  table.run_table(_config(), workdir=workdir, methods=['maml', 'fomaml'])
  changed = _config()
  changed.method.maml.lr = 0.2  # maml's record is another unit now; fomaml's is not
  table.run_table(changed, workdir=workdir, methods=['maml', 'fomaml'])
  assert calls == [('maml', 0), ('fomaml', 0), ('maml', 0)]
  assert len(os.listdir(os.path.join(workdir, 'records'))) == 3
  content, _ = _table(workdir)
  assert len(content['records']) == 2 and content['complete']
  table.run_table(_config(), workdir=workdir, methods=['maml'])  # back: read back
  assert len(calls) == 3


def test_the_search_resumes_through_the_runner(tmp_path, calls):
  config = _config()
  config.search.grid = {'maml': [{'lr': 0.1}, {'lr': 0.4}]}
  out = table.run_table(config, workdir=str(tmp_path), methods=['maml'], search=True)
  assert len(calls) == 2 and 'maml' in out
  table.run_table(config, workdir=str(tmp_path), methods=['maml'], search=True)
  assert len(calls) == 2
  with open(tmp_path / 'search.json', encoding='utf-8') as f:
    content = json.load(f)
  assert content['complete'] and len(content['points']) == 2
  assert content['chosen']['maml']['way5']['overrides'] in ({'lr': 0.1}, {'lr': 0.4})
