"""Checks shared by the spec, the estimators and the engine's entry: settings (counts, rates)
and the inputs of a meta-update (params, task batch), each problem one line naming the field,
the value and what to do.

Settings are checked when a `Stage`, `MetaSpec` or estimator is built; inputs when
`meta_gradient` / `meta_objective` / `make_step`'s step is traced, from shapes only (no
computation), so a bad input fails before anything runs, with a `MetaInputError`.
"""

import math
import numbers
from collections.abc import Mapping
from typing import Any, Iterable, List, Optional

import jax
import numpy as np


class MetaInputError(ValueError):
  """An input of the meta API (params, task batch) that it cannot run on; the message says
  what is wrong and what to do. A ValueError, so callers catching those still do."""


def count_problem(name: str, value: Any, minimum: int) -> Optional[str]:
  """'name must be ...' when `value` is not an int (bool refused) >= minimum, else None."""
  if isinstance(value, bool) or not isinstance(value, numbers.Integral):
    return f'{name} must be an int, got {value!r} ({type(value).__name__})'
  if value < minimum:
    return f'{name} must be >= {minimum}, got {value}'
  return None


def number_problem(name: str, value: Any, *, positive: bool, hint: str = '') -> Optional[str]:
  """'name must be ...' unless `value` is a finite real number (bool refused), > 0 when
  `positive`, else >= 0; `hint` is appended to the sign problem (e.g. why not negative)."""
  if isinstance(value, bool) or not isinstance(value, numbers.Real):
    return f'{name} must be a number, got {value!r} ({type(value).__name__})'
  if not math.isfinite(value):
    return f'{name} must be finite, got {value}'
  if (value <= 0) if positive else (value < 0):
    return f"{name} must be {'> 0' if positive else '>= 0'}, got {value}{hint}"
  return None


def problems(*found: Optional[str]) -> List[str]:
  """The problems among `found` (None: no problem)."""
  return [p for p in found if p]


def task_count(task_batch: Any) -> int:
  """The size of the leading task axis that every leaf of `task_batch` shares.

  Raises:
    MetaInputError: no leaves, a leaf without a task axis (a scalar), leaves disagreeing on
      the task count, or 0 tasks; the message names the leaves.
  """
  leaves, _ = jax.tree_util.tree_flatten_with_path(task_batch)
  if not leaves:
    raise MetaInputError(f'task_batch has no arrays (got {task_batch!r}); pass a pytree '
                         'whose leaves share a leading task axis')
  shapes = [(jax.tree_util.keystr(path) or '<root>', np.shape(leaf)) for path, leaf in leaves]
  scalars = [path for path, shape in shapes if not shape]
  if scalars:
    raise MetaInputError(f'task_batch leaf {scalars[0]} is a scalar: every leaf needs a '
                         'leading task axis (one task: add one, e.g. '
                         'jax.tree.map(lambda x: x[None], batch))')
  sizes = {}
  for path, shape in shapes:
    sizes.setdefault(shape[0], path)
  if len(sizes) != 1:
    seen = ', '.join(f'{path}: {n}' for n, path in sizes.items())
    raise MetaInputError(f'task_batch leaves must share one leading task axis, got sizes '
                         f'{seen}; give every leaf the same number of tasks first')
  n = next(iter(sizes))
  if n == 0:
    raise MetaInputError('task_batch has 0 tasks (leading axis of size 0); pass at least one')
  return n


def check_params(params: Any, stages: Iterable[Any]) -> None:
  """MetaInputError unless params is a dict (any Mapping) of named groups holding every group (and
  learned-rate group) the stages name."""
  if not isinstance(params, Mapping):
    raise MetaInputError(f'params must be a dict of named groups {{name: pytree}}, got '
                         f"{type(params).__name__}; wrap one pytree as {{'net': params}} and "
                         "adapt group 'net'")
  groups = sorted(params, key=str)
  for stage in stages:
    missing = [g for g in stage.groups if g not in params]
    if missing:
      raise MetaInputError(f'Stage {stage.label!r}: params have no group(s) {missing}; '
                           f'groups are {groups}: name the stage after one, or add the '
                           'group to params')
    if stage.learned_lr and stage.learned_lr not in params:
      raise MetaInputError(f'Stage {stage.label!r}: no learned-rate group '
                           f'{stage.learned_lr!r} in params (groups {groups}); add the rates '
                           '(meta_sgd_rates / lslr_rates)')


__all__ = ['MetaInputError', 'check_params', 'count_problem', 'number_problem', 'problems',
           'task_count']
