"""A multi-seed study: several arms (config variants) on the same folds and seeds, then MMTL
compared with every other system, paired over (fold, seed).

The default arms are the issue's four systems: MMTL in the config's meta mode and both
baselines (one training run), and MMTL in the reference code's mode ('reptile_emotion').

Layout::

  <study_dir>/<arm>/            an ordinary training workdir per arm (resumable)
  <study_dir>/features, synthetic_corpus    shared by the arms
  <study_dir>/study.json, study.md          summary per system and the paired comparisons
  <study_dir>/records/<fingerprint>.json    a finished arm's labelled runs (run/runner.py)
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping, Sequence

import ml_collections

from mmtl_jax.run import errors
from mmtl_jax.run import files
from mmtl_jax.run import runner
from mmtl_jax.run import stats
from mmtl_jax.ser import config_check
from mmtl_jax.ser import report
from mmtl_jax.ser import sweep


class StudyError(errors.ExpectedError, ValueError):
  """A study that cannot be run as asked (seeds, arms); raised before any training."""


def parse_seeds(values: Sequence[str]) -> tuple[int, ...]:
  """The --seeds values as ints (each >= 0, none repeated).

  Raises:
    StudyError: naming the bad value.
  """
  seeds = []
  for value in values:
    try:
      seeds.append(int(str(value).strip()))
    except ValueError:
      raise StudyError(f'seed {value!r} is not an integer, --seeds, give e.g. '
                       '--seeds=0,1,2') from None
    if seeds[-1] < 0 or seeds[-1] >= 2**32:
      raise StudyError(f'seed {seeds[-1]} is outside 0..2**32-1, --seeds, give e.g. '
                       '--seeds=0,1,2')
  if not seeds or len(set(seeds)) != len(seeds):
    raise StudyError(f'seeds {list(values)} are empty or repeat, --seeds, give distinct '
                     'seeds, e.g. --seeds=0,1,2')
  return tuple(seeds)


@dataclasses.dataclass(frozen=True)
class Arm:
  """One training run of the study: config overrides and how its systems are labelled.

  `labels` maps a system name of the run (config.train.models) to its label in the study;
  systems not in it keep their name.
  """
  name: str
  overrides: Mapping[str, Any]
  labels: Mapping[str, str] = dataclasses.field(default_factory=dict)


def default_arms(config: ml_collections.ConfigDict, reference_mode: str = 'reptile_emotion'
                 ) -> list[Arm]:
  """MMTL (config's mode) + CNN-LSTM + CNN-LSTM+MTL, and MMTL in `reference_mode`."""
  mode = str(config.meta.mode)
  return [
      Arm('main', {'train.models': ('mmtl', 'cnn_lstm', 'cnn_lstm_mtl')},
          {'mmtl': f'mmtl ({mode})'}),
      Arm(f'mmtl_{reference_mode}', {'train.models': ('mmtl',), 'meta.mode': reference_mode},
          {'mmtl': f'mmtl ({reference_mode})'}),
  ]


def labelled_runs(results: Mapping[str, Any], arm: Arm) -> list[dict[str, Any]]:
  """The arm's results.json runs, each with 'label' and 'arm' added."""
  return [dict(run, label=arm.labels.get(run['model'], run['model']), arm=arm.name)
          for run in results['runs']]


def check_arms(arms: Sequence[Arm], configs: Sequence[ml_collections.ConfigDict]) -> None:
  """Refuses, before any training, arms whose labels repeat (e.g. --reference_mode equal to
  the config's meta mode) or whose config has problems.

  Raises:
    StudyError: the repeated labels; ConfigError: every arm's problems.
  """
  labels = [arm.labels.get(m, m) for arm, cfg in zip(arms, configs)
            for m in cfg.train.models]
  repeated = sorted({l for l in labels if labels.count(l) > 1})
  if repeated:
    raise StudyError(f'study arms would train the same system twice ({", ".join(repeated)}), '
                     '--reference_mode or the arms, give a reference mode other than '
                     'config.meta.mode')
  problems = []
  for arm, cfg in zip(arms, configs):
    try:
      config_check.check_config(cfg)
    except config_check.ConfigError as e:
      problems += [f'arm {arm.name}: {p}' for p in e.problems]
  if problems:
    raise config_check.ConfigError(problems)


def run_study(config: ml_collections.ConfigDict, arms: Sequence[Arm], study_dir: str,
              train_fn: sweep.TrainFn, reference: str) -> dict[str, Any]:
  """Trains every arm with `train_fn(config, workdir)`, then writes study.json / study.md.

  Args:
    config: the base config (its train.seeds are the study's seeds).
    arms: the runs; labels must be unique across arms.
    reference: the label compared with every other label (e.g. 'mmtl (first_order)').

  Returns:
    {'seeds', 'arms', 'runs' (results.json runs with 'label' and 'arm'), 'comparisons'}.

  Raises (before any training): StudyError (labels repeat: e.g. the reference mode is the
    config's mode), ConfigError (every arm's problems), WorkdirLockedError.
  """
  config = sweep.shared_corpus(config, study_dir)
  configs = [sweep.with_overrides(config, arm.overrides) for arm in arms]
  check_arms(arms, configs)  # before any arm trains
  return _train_arms(config, arms, configs, study_dir, train_fn, reference)


def _train_arms(config, arms, configs, study_dir, train_fn, reference) -> dict[str, Any]:
  """Every arm through `runner.run_units` (the study directory's lock, one record per
  finished arm, read back on a rerun), then study.json / study.md."""
  arm_dirs = {arm.name: os.path.join(study_dir, arm.name) for arm in arms}
  by_name = {arm.name: (arm, cfg) for arm, cfg in zip(arms, configs)}
  units = [runner.Unit(name=arm.name, key={'arm': arm.name},
                       config={'arm': files.to_jsonable(dataclasses.asdict(arm)),
                               'config': files.to_jsonable(cfg)})
           for arm, cfg in zip(arms, configs)]

  def train_arm(unit: runner.Unit, reporter: Any) -> dict[str, Any]:
    del reporter  # the training reports its own progress
    arm, cfg = by_name[unit.name]
    sweep.share_dirs(study_dir, arm_dirs[arm.name])
    return {'runs': labelled_runs(train_fn(cfg, arm_dirs[arm.name]), arm)}

  with runner.Runner(study_dir) as held:  # one study per directory (each arm locks its own)
    records = held.run(units, train_arm,
                       make_progress=sweep.point_progress('study arm', config))
    return _write_study(config, arms, records, study_dir, reference)


def _write_study(config, arms, records, study_dir, reference) -> dict[str, Any]:
  """study.json / study.md from the arms' records (each {'runs': labelled runs})."""
  runs = [run for record in records for run in record['runs']]
  labels = [(r['label'], r['protocol']) for r in runs]
  if len(set(labels)) != len(labels):
    raise StudyError(f'study labels repeat across arms: {labels}, the arms, give each '
                     'system and protocol one label')
  content = {'seeds': files.to_jsonable(config.train.seeds or (config.seed,)),
             'arms': [files.to_jsonable(dataclasses.asdict(a)) for a in arms],
             'reference': reference, 'runs': runs,
             'comparisons': stats.compare_with(runs, reference)}
  files.atomic_write_json(os.path.join(study_dir, 'study.json'), content)
  files.atomic_write_text(os.path.join(study_dir, 'study.md'), markdown(content))
  return content


def markdown(content: Mapping[str, Any]) -> str:
  """study.md: one summary row per system and protocol, then the paired comparisons."""
  rows = [report.summary_row(dict(run, model=run['label'])) for run in content['runs']]
  return '\n'.join([
      '# Study', '', f"Seeds: {content['seeds']}. Arms: "
      + '; '.join(f"{a['name']} ({a['overrides']})" for a in content['arms']) + '.', '',
      report.SUMMARY_HEADER, *rows, '', report.DEFINITIONS, '',
      f"## {content['reference']} against each other system", '',
      report.comparisons_markdown(content['comparisons']), '']) + '\n'


__all__ = [
    'Arm', 'check_arms', 'default_arms', 'labelled_runs', 'markdown', 'parse_seeds', 'run_study',
    'StudyError',
]
