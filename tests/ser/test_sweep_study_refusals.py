"""sweep and study refuse, before any training: a held lock on their directory, bad --grid
and --seeds values, a study whose reference mode is its mode, an arm with a bad config."""

import pytest

from mmtl_jax.run import errors
from mmtl_jax.run import lock
from mmtl_jax.ser import config_check
from mmtl_jax.ser import study
from mmtl_jax.ser import sweep


def _never(calls):
  return lambda cfg, workdir: calls.append(workdir)


def test_study_refuses_reference_mode_equal_to_mode(tiny_config, corpus_root, tmp_path):
  config = tiny_config(corpus_root)
  calls = []
  arms = study.default_arms(config, str(config.meta.mode))
  with pytest.raises(study.StudyError, match='--reference_mode') as err:
    study.run_study(config, arms, str(tmp_path), _never(calls), reference='x')
  assert calls == [] and '\n' not in errors.expected_line(err.value)


def test_study_checks_every_arm_config_before_training(tiny_config, corpus_root, tmp_path):
  config = tiny_config(corpus_root)
  calls = []
  with pytest.raises(config_check.ConfigError, match='arm mmtl_nope: meta.mode'):
    study.run_study(config, study.default_arms(config, 'nope'), str(tmp_path), _never(calls),
                    reference='x')
  assert calls == []


@pytest.mark.parametrize('seeds,fragment', [
    (['0', 'x'], "seed 'x' is not an integer"), (['-1'], 'outside'), (['1', '1'], 'repeat'),
    ([], 'empty')])
def test_bad_seeds_are_refused(seeds, fragment):
  with pytest.raises(study.StudyError, match=fragment):
    study.parse_seeds(seeds)
  assert study.parse_seeds([' 2', '0']) == (2, 0)


def test_grid_values_that_do_not_fit_the_field(tiny_config, corpus_root):
  with pytest.raises(sweep.GridError, match='meta.gamma'):
    sweep.with_overrides(tiny_config(corpus_root), {'meta.gamma': 'abc'})
  with pytest.raises(sweep.GridError, match='--grid'):
    sweep.parse_grid(['meta.gamma'])


def test_sweep_and_study_refuse_a_held_lock(tiny_config, corpus_root, tmp_path):
  config = tiny_config(corpus_root)
  calls = []
  with lock.WorkdirLock(str(tmp_path)):
    with pytest.raises(lock.WorkdirLockedError):
      sweep.run_sweep(config, {'meta.gamma': [0.01]}, str(tmp_path), _never(calls))
    with pytest.raises(lock.WorkdirLockedError):
      study.run_study(config, study.default_arms(config), str(tmp_path), _never(calls),
                      reference='x')
  assert calls == []
