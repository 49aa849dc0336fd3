"""A grid over config fields, each point trained and evaluated, chosen by mean dev UA.

Selection uses the dev speaker only: for every system, the grid point whose mean dev UA over
folds (x seeds) is highest wins (ties: the first in grid order). Test scores are never read
here, so `sweep.json` / `sweep.md` cannot leak the test set into a choice.

Layout::

  <sweep_dir>/points/<point name>/    one ordinary training workdir per grid point (resumable)
  <sweep_dir>/features, synthetic_corpus   shared by all points
  <sweep_dir>/sweep.json, sweep.md         every point's dev figures and the choice per system
  <sweep_dir>/records/<fingerprint>.json   a finished point's dev figures (run/runner.py: a
                                           rerun reads them back and trains no finished point)
"""

from __future__ import annotations

import ast
import copy
import itertools
import os
from typing import Any, Callable, Mapping, Sequence

import ml_collections

from mmtl_jax.run import errors
from mmtl_jax.run import files
from mmtl_jax.run import progress
from mmtl_jax.run import runner
from mmtl_jax.ser import config_check


class GridError(errors.ExpectedError, ValueError):
  """A --grid value that cannot be a grid axis; the message names it and what to give."""


class GridFieldError(errors.ExpectedError, KeyError):
  """A grid field that the config does not have."""

  def __str__(self) -> str:  # KeyError would print the repr of the message
    return str(self.args[0])


def parse_value(text: str) -> Any:
  """A grid value from the command line: a Python literal, else the string itself."""
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def parse_grid(specs: Sequence[str]) -> dict[str, list[Any]]:
  """{'meta.gamma': [0.001, 0.003]} from ['meta.gamma=0.001,0.003', ...] (';' separates
  values that contain commas, e.g. tuples: 'folds.which=(0,1);(2,3)').

  Raises:
    GridError (a ValueError): a spec without '=' or without values, or a field given twice.
  """
  grid: dict[str, list[Any]] = {}
  for spec in specs:
    field, sep, values = spec.partition('=')
    field = field.strip()
    if not sep or not field or not values.strip():
      raise GridError(f"grid spec {spec!r} is not 'field=value1,value2,...', --grid, give "
                      'e.g. --grid=meta.gamma=0.001,0.003')
    if field in grid:
      raise GridError(f'grid field {field!r} given twice, --grid, give each field once with '
                      'all its values')
    parts = values.split(';') if ';' in values else values.split(',')
    grid[field] = [parse_value(p.strip()) for p in parts]
  return grid


def grid_points(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
  """The cartesian product of the grid, in the order given (last field varies fastest)."""
  fields = list(grid)
  return [dict(zip(fields, combo)) for combo in itertools.product(*(grid[f] for f in fields))]


def point_name(point: Mapping[str, Any]) -> str:
  """A directory name for a grid point, e.g. 'meta.mode=exact-meta.gamma=0.003' (characters
  other than letters, digits and '._=-' become '-')."""
  name = '-'.join(f'{k}={v}' for k, v in point.items()) or 'base'
  return ''.join(c if c.isalnum() or c in '._=-' else '-' for c in name)


NAME_MAX = 255  # bytes of one file name on ext4, xfs, btrfs, APFS, NTFS (characters)


def check_point_names(points: Sequence[Mapping[str, Any]]) -> None:
  """GridError, before any training, for a point whose directory name (`point_name`) is
  longer than a file name can be: it would fail with ENAMETOOLONG only when that point
  starts, after the points before it have trained."""
  for point in points:
    name = point_name(point)
    if len(name.encode('utf-8')) > NAME_MAX:
      raise GridError(f'grid point name of {len(name.encode("utf-8"))} bytes, over the '
                      f'{NAME_MAX} a file name may have ({name[:60]}...), --grid, give '
                      'shorter values (e.g. fewer tuple entries) or split the sweep')


def with_overrides(config: ml_collections.ConfigDict, point: Mapping[str, Any]
                   ) -> ml_collections.ConfigDict:
  """A copy of `config` with each dotted field of `point` set (the field must exist).

  Raises:
    GridFieldError (a KeyError): a field that `config` does not have, naming it.
  """
  config = copy.deepcopy(config)
  for field, value in point.items():
    parent, _, leaf = field.rpartition('.')
    node = config
    for part in filter(None, parent.split('.')):
      node = node[part] if part in node else None
      if node is None:
        break
    if node is None or leaf not in node:
      raise GridFieldError(f'grid field {field!r} is not a config field, --grid, use a '
                           'field of the config file (e.g. meta.gamma)')
    if isinstance(node[leaf], tuple) and isinstance(value, list):
      value = tuple(value)
    try:
      node[leaf] = value  # ConfigDict keeps the field's type (an int for a float is fine)
    except TypeError as e:
      raise GridError(f'grid value {value!r} of {field} does not fit the field ({e}), --grid, '
                      f'give values of the type of {field}') from e
  return config


def dev_figures(results: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
  """{system: {'dev_UA', 'dev_UA_std', 'n'}} from a results.json content.

  Dev scores do not depend on the test protocol, so each system's first run is read.
  """
  out: dict[str, dict[str, Any]] = {}
  for run in results['runs']:
    if run['model'] in out:
      continue
    out[run['model']] = {'dev_UA': run['mean']['dev_UA'], 'dev_UA_std': run['std']['dev_UA'],
                         'n': len(run['folds'])}
  return out


def choose(points: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
  """Per system, the point with the highest mean dev UA (first in grid order on ties)."""
  best: dict[str, dict[str, Any]] = {}
  for point in points:
    for system, fig in point['dev'].items():
      if fig['dev_UA'] is None:
        continue
      if system not in best or fig['dev_UA'] > best[system]['dev_UA']:
        best[system] = {'point': point['name'], 'overrides': point['overrides'], **fig}
  return best


def share_dirs(sweep_dir: str, point_dir: str) -> None:
  """Links <point_dir>/features to <sweep_dir>/features: one feature store for all points
  (stores are keyed by the hash of what they were computed from, so points that change the
  features get their own)."""
  os.makedirs(point_dir, exist_ok=True)
  shared, link = os.path.join(sweep_dir, 'features'), os.path.join(point_dir, 'features')
  os.makedirs(shared, exist_ok=True)
  if not os.path.lexists(link):
    os.symlink(os.path.relpath(shared, point_dir), link)


def shared_corpus(config: ml_collections.ConfigDict, sweep_dir: str
                  ) -> ml_collections.ConfigDict:
  """The embedded synthetic corpus written once, to <sweep_dir>/synthetic_corpus, instead of
  once per point (its default place is inside each workdir)."""
  if config.data.kind != 'synthetic' or config.data.root:
    return config
  config = copy.deepcopy(config)
  config.data.root = os.path.join(os.path.abspath(sweep_dir), 'synthetic_corpus')
  return config


TrainFn = Callable[[ml_collections.ConfigDict, str], Mapping[str, Any]]


def run_sweep(config: ml_collections.ConfigDict, grid: Mapping[str, Sequence[Any]],
              sweep_dir: str, train_fn: TrainFn) -> dict[str, Any]:
  """Trains every grid point with `train_fn(config, workdir)` (ser.train.train_and_evaluate)
  and writes sweep.json / sweep.md; a finished point is read back, not retrained.

  Returns the sweep.json content: {'grid', 'points': [{'name', 'overrides', 'dev'}],
  'chosen': {system: {'point', 'overrides', 'dev_UA', 'dev_UA_std', 'n'}}}.

  Raises (before any training): ConfigError (every point's problems), GridError (also a
  point name over NAME_MAX bytes) / GridFieldError, WorkdirLockedError (another sweep holds `sweep_dir`).
  """
  points = grid_points(grid)
  check_point_names(points)
  config = shared_corpus(config, sweep_dir)
  configs = [with_overrides(config, p) for p in points]
  for point, cfg in zip(points, configs):  # every point's config checked before any training
    try:
      config_check.check_config(cfg)
    except config_check.ConfigError as e:
      raise config_check.ConfigError([f'grid point {point_name(point)}: {p}'
                                      for p in e.problems]) from None
  return _train_points(points, configs, grid, sweep_dir, train_fn)


def point_progress(what: str, config: ml_collections.ConfigDict
                   ) -> Callable[[int, int], progress.Progress]:
  """The `runner.run_units` progress of long, few units (grid points, study arms): a line
  when each starts, with the run's ETA from the units finished so far. No heartbeat: the
  training inside reports its own progress every report_every_s."""
  return lambda units, pending: progress.Progress(
      what, units, every_s=progress.interval(config), announce=True, pending=pending)


def _train_points(points, configs, grid, sweep_dir, train_fn) -> dict[str, Any]:
  """Every grid point through `runner.run_units` (the sweep directory's lock, one record per
  finished point, read back on a rerun); sweep.json / sweep.md after each point."""
  names = [point_name(p) for p in points]
  point_dirs = [os.path.join(sweep_dir, 'points', name) for name in names]
  units = [runner.Unit(name=n, key={'point': files.to_jsonable(p)},
                       config=files.to_jsonable(c)) for n, p, c in zip(names, points, configs)]
  dirs = {u.name: d for u, d in zip(units, point_dirs)}
  by_name = {n: (p, c) for n, p, c in zip(names, points, configs)}
  content: dict[str, Any] = {}

  def train_point(unit: runner.Unit, reporter: Any) -> dict[str, Any]:
    del reporter  # the training reports its own progress
    share_dirs(sweep_dir, dirs[unit.name])
    point, cfg = by_name[unit.name]
    return {'name': unit.name, 'overrides': files.to_jsonable(point),
            'dev': dev_figures(train_fn(cfg, dirs[unit.name]))}

  def partial(records: list) -> None:  # partial results survive an interrupted sweep
    content.update(write(sweep_dir, grid, records))

  runner.run_units(sweep_dir, units, train_point, on_record=partial,
                   make_progress=point_progress('sweep point', configs[0]))
  return content


def write(sweep_dir: str, grid: Mapping[str, Sequence[Any]],
          points: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
  content = {'grid': files.to_jsonable(dict(grid)), 'points': list(points),
             'chosen': choose(points)}
  files.atomic_write_json(os.path.join(sweep_dir, 'sweep.json'), content)
  files.atomic_write_text(os.path.join(sweep_dir, 'sweep.md'), markdown(content))
  return content


def _pct(x: float | None) -> str:
  return '–' if x is None else f'{100.0 * x:.2f}'


def _std(dev: Mapping[str, Any]) -> str:
  """The std cell: 'n/a' where a mean exists without a spread (a single fold x seed)."""
  if dev['dev_UA'] is not None and dev['dev_UA_std'] is None:
    return 'n/a'
  return _pct(dev['dev_UA_std'])


def markdown(content: Mapping[str, Any]) -> str:
  """sweep.md: every point's mean dev UA per system, then the choice per system."""
  systems = sorted({s for p in content['points'] for s in p['dev']})
  lines = ['# Sweep (selection by mean dev UA; test scores are not read)', '',
           '| Point | ' + ' | '.join(f'{s} dev UA' for s in systems) + ' |',
           '|---|' + '---:|' * len(systems)]
  for p in content['points']:
    cells = [(_pct(p['dev'][s]['dev_UA']) + ' ± ' + _std(p['dev'][s]))
             if s in p['dev'] else '' for s in systems]
    lines.append(f"| {p['name']} | " + ' | '.join(cells) + ' |')
  lines += ['', '## Chosen', '', '| System | Point | mean dev UA | folds × seeds |',
            '|---|---|---:|---:|']
  for s, c in sorted(content['chosen'].items()):
    lines.append(f"| {s} | {c['point']} | {_pct(c['dev_UA'])} | {c['n']} |")
  lines += ['', 'dev UA = UA on each fold\'s dev speaker at the checkpoint selected on it, '
            'mean ± std over folds (× seeds), in %.']
  return '\n'.join(lines) + '\n'


__all__ = [
    'check_point_names', 'choose', 'dev_figures', 'grid_points', 'GridError', 'GridFieldError',
    'markdown', 'NAME_MAX',
    'parse_grid', 'parse_value', 'point_name', 'point_progress', 'run_sweep', 'share_dirs',
    'shared_corpus', 'TrainFn', 'with_overrides', 'write',
]
