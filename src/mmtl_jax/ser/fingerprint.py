"""What a fold's results were computed from, so a changed config never reuses them silently.

A fold directory holds `fingerprint.json` from the moment it starts training: every config
field that can change its training or evaluation (flattened to dotted names), the system's
name, the feature store's hash and the package version. Before any training, every fold
directory of the run is compared with the fingerprint the current config gives it; a finished
or unfinished fold whose fingerprint differs (or that has none) stops the run with one error
listing `field: old -> new`, unless config.train.on_changed_config = 'restart', which moves
such folds aside (nothing is deleted) and trains them afresh.

The same fingerprint is also stored inside the fold's result.json (key 'fingerprint') and in
the JSON item of every checkpoint of the fold (key 'fingerprint'): a result.json or a
checkpoint copied in from another run is caught too (`stale_fields`, `check_checkpoint`).
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

from mmtl_jax import __version__
from mmtl_jax.run import checkpoint as ckpt_lib
from mmtl_jax.run import errors
from mmtl_jax.run import files

FILENAME = 'fingerprint.json'
RESULT_KEY = 'fingerprint'  # in <fold>/result.json
CHECKPOINT_KEY = 'fingerprint'  # in the JSON item ('extra') of every checkpoint step
# Fields that cannot change a fold's result: where and how often things are written, which
# folds / models / seeds this invocation runs (each fold directory is per model and seed), and
# what to do on a mismatch.
IGNORED = ('compilation_cache_dir', 'features.workers', 'train.log_every',
           'train.report_every_s', 'train.checkpoint_every', 'train.models', 'train.seeds',
           'folds.which', 'train.on_changed_config')


# How to go on from a damaged fold file (the end of the one-line error).
RECOVER = ('move that fold aside and train it again: --config.train.on_changed_config=restart '
           '(or a new --workdir)')


class StaleRunError(errors.ExpectedError, RuntimeError):
  """Fold directories of this workdir were written under another config."""


def flatten(tree: Mapping[str, Any], prefix: str = '') -> dict[str, Any]:
  """{dotted field: value} of a nested mapping (a config as JSON)."""
  out = {}
  for key, value in tree.items():
    name = f'{prefix}{key}'
    if isinstance(value, Mapping):
      out.update(flatten(value, name + '.'))
    else:
      out[name] = value
  return out


def fingerprint(config: Any, model: str, store_hash: str) -> dict[str, Any]:
  """{dotted field: JSON value} of everything a fold of `model` is computed from."""
  fields = flatten(files.to_jsonable(config))
  fields = {k: v for k, v in fields.items() if k not in IGNORED}
  return dict(sorted(fields.items()), **{'system': model, 'feature_store': store_hash,
                                         'mmtl_jax_version': __version__})


def differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
  """`name: old -> new` for every field whose value differs (absent shown as <absent>)."""
  absent = '<absent>'
  return [f'{k}: {json.dumps(old.get(k, absent))} -> {json.dumps(new.get(k, absent))}'
          for k in sorted(set(old) | set(new)) if old.get(k, absent) != new.get(k, absent)]


def stale_fields(fold_dir: str, expected: Mapping[str, Any]) -> list[str] | None:
  """None if `fold_dir` holds nothing computed yet or was written under `expected`; else
  what differs."""
  if not os.path.isdir(fold_dir) or not set(os.listdir(fold_dir)) - {FILENAME}:
    return None
  path = os.path.join(fold_dir, FILENAME)
  result_path = os.path.join(fold_dir, 'result.json')
  if not os.path.exists(path) and not os.path.exists(result_path):
    return [f'fold incomplete: {FILENAME} missing and no result.json (the fold directory was '
            'removed or emptied while a run used it)']
  if not os.path.exists(path):
    return [f'{FILENAME}: missing (written by an older mmtl_jax or another tool)']
  found = files.read_json(path, RECOVER)
  diffs = differences(found, expected)
  if not diffs and os.path.exists(result_path):
    stored = files.read_json(result_path, RECOVER).get(RESULT_KEY)
    if stored is not None:  # result.json files of older runs carry none
      diffs = [f'result.json: {d}' for d in differences(stored, expected)]
  return diffs or None


def check_checkpoint(extra: Mapping[str, Any], expected: Mapping[str, Any],
                     directory: str) -> None:
  """Raises StaleRunError listing `name: old -> new` when a checkpoint's stored fingerprint
  (in its JSON item `extra`) differs from `expected`; checkpoints without one pass."""
  stored = extra.get(CHECKPOINT_KEY)
  diffs = [] if stored is None else differences(stored, expected)
  if diffs:
    raise StaleRunError(
        f'checkpoint {directory} (step {extra.get("step", "?")}) was written under another '
        'config; nothing was restored:\n' + '\n'.join(f'  {d}' for d in diffs) +
        '\nTo go on: use a new --workdir, or move that fold directory aside.')


def write(fold_dir: str, expected: Mapping[str, Any]) -> None:
  files.atomic_write_json(os.path.join(fold_dir, FILENAME), dict(expected))


# What a fold directory holds as directories (ser/fold.py writes them).
FOLD_SUBDIRS = ('checkpoints', 'logs', 'bundle')


def refuse_links(workdir: str, fold_dir: str) -> None:
  """Raises files.PathError naming the first entry from below `workdir` down to `fold_dir`
  (the model, seed and fold directories), or of fold_dir's FOLD_SUBDIRS, that is a symbolic
  link: the run renames, writes and deletes in them (a restart moves folds aside), which must
  happen inside the real workdir, never in where a link points. The workdir itself may be a
  link: it is the user's choice of place."""
  entries, current = [], workdir
  for part in os.path.relpath(fold_dir, workdir).split(os.sep):
    current = os.path.join(current, part)
    entries.append(current)
  entries += [os.path.join(fold_dir, name) for name in FOLD_SUBDIRS]
  for entry in entries:
    if os.path.islink(entry):
      raise files.PathError(f'{entry} is a symbolic link (to {os.readlink(entry)}): the '
                            "workdir's entries must be real directories; remove the link")


def move_aside(fold_dir: str) -> str:
  """Renames `fold_dir` to the first free `<fold_dir>.stale-<n>`; returns the new path."""
  n = 1
  while os.path.exists(f'{fold_dir}.stale-{n}'):
    n += 1
  os.rename(fold_dir, f'{fold_dir}.stale-{n}')
  return f'{fold_dir}.stale-{n}'


def mismatch_message(stale: Mapping[str, list[str]], workdir: str) -> str:
  """The one error for every stale fold, with how to go on."""
  lines = [f'{len(stale)} fold(s) in {workdir} were computed under another config; nothing '
           'was trained:']
  for fold_dir, diffs in stale.items():
    lines.append(f'  {os.path.relpath(fold_dir, workdir)}:')
    lines += [f'    {d}' for d in diffs]
  if any(d.startswith('mmtl_jax_version:') for diffs in stale.values() for d in diffs):
    lines.append('Folds of another mmtl_jax version cannot be resumed: their checkpoints may '
                 f'be of another checkpoint format (this version writes format '
                 f'{ckpt_lib.CHECKPOINT_FORMAT}; mmtl_jax 0.1.0 wrote format 1).')
  lines.append('To go on: use a new --workdir, or pass --config.train.on_changed_config=restart '
               'to move these folds aside (to <fold>.stale-<n>) and train them again.')
  return '\n'.join(lines)


__all__ = [
    'check_checkpoint', 'CHECKPOINT_KEY', 'differences', 'FILENAME', 'fingerprint', 'flatten',
    'FOLD_SUBDIRS', 'IGNORED', 'mismatch_message', 'move_aside', 'RECOVER', 'refuse_links',
    'RESULT_KEY', 'stale_fields', 'StaleRunError', 'write',
]
