"""Checkpoints for resumable training, and self-contained inference bundles.

A thin wrapper over orbax-checkpoint's `CheckpointManager`. Each step directory holds two
items written together:
  * ``state``: any pytree of jax/numpy arrays and Python scalars (params, optax states, ...),
    saved with `StandardSave`;
  * ``extra``: a small JSON dict (sampler position, fold, rng seeds as ints, ...), saved with
    `JsonSave`.

Crash safety comes from orbax: a step is written into ``<step>.orbax-checkpoint-tmp-*`` and
renamed to ``<step>`` only once complete, so a killed process leaves the previous steps
restorable. Leftover temporary directories are ignored, and a new Checkpointer deletes them in
the background (orbax finishes that before its first save).

Restoring never hands orbax a target it cannot fill: the saved shapes (orbax's metadata) are
compared with the target's first, so a model of other settings is one `CheckpointMismatchError`
naming the checkpoint and the differing leaves rather than a traceback per leaf from orbax's
asynchronous readers. A latest step that cannot be read (a file of it truncated or deleted) is
a logged warning, is moved aside to `<step>.damaged-<n>`, and the previous kept step is used.

An inference bundle (`save_inference_bundle`) is a directory with the trained params and the
config as JSON, enough for a prediction script to rebuild the model from that directory alone.
Its params are an orbax checkpoint (``params/``, format version 1) or, for a bundle shipped
inside the package, one numpy file (``params.npz``, version 2: a handful of plain files, read
without orbax, optionally stored as float16). ``bundle.json`` may carry an ``info`` dict: what
the model is (fold, protocol, dev UA, corpus, the command that made it); `read_bundle_info`.
Writing a bundle replaces only an absent directory or an earlier bundle holding nothing else
(`check_bundle_target`): a directory of the user's files, or a workdir, is refused.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from typing import Any, Callable, Mapping, Sequence

from etils import epath
import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from mmtl_jax.run import errors
from mmtl_jax.run import files

log = logging.getLogger(__name__)
PyTree = Any

_STATE = 'state'
_EXTRA = 'extra'
_BUNDLE_FORMAT = 'mmtl_jax.inference_bundle'
_BUNDLE_VERSION = 2  # the newest read: 1 = orbax params/, 2 = params.npz
_NPZ = 'params.npz'
_BUNDLE_STORAGES = ('orbax', 'npz')
# The layout of what a training checkpoint holds. 2 (mmtl_jax 0.2.0): MMTL's optimiser state
# is `meta.MetaState(opt, step, model)`; 1 (mmtl_jax 0.1.0 and before): a bare optax state.
CHECKPOINT_FORMAT = 2
_FORMAT_KEY = 'checkpoint_format'  # in `extra`; absent = format 1
_LAST_VERSION_OF_FORMAT = {1: '0.1.0'}
_SHOWN = 12  # mismatching leaves listed in an error


def _retention_options(max_to_keep: int | None) -> dict[str, Any]:
  # orbax >= 0.11 deprecates `max_to_keep` in favour of preservation policies; older
  # releases (pyproject allows >= 0.5.20) only know `max_to_keep`.
  policies = getattr(ocp, 'checkpoint_managers', None)
  if policies is not None and hasattr(policies, 'LatestN'):
    return {'preservation_policy': policies.LatestN(n=max_to_keep)}
  return {'max_to_keep': max_to_keep}


def _abstract(leaf: Any) -> Any:
  """jax.Array -> ShapeDtypeStruct (keeping its sharding); anything else unchanged."""
  if isinstance(leaf, jax.Array):
    return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=leaf.sharding)
  return leaf


def _host_copy(leaf: Any) -> Any:
  # Saves are asynchronous: copy numpy leaves so that a caller mutating its arrays in place
  # after save() returns cannot change what is written. jax arrays are immutable.
  return np.array(leaf, copy=True) if isinstance(leaf, np.ndarray) else leaf


class CheckpointMismatchError(errors.ExpectedError, ValueError):
  """A checkpoint's tree structure or shapes differ from the target's."""


class CheckpointFormatError(CheckpointMismatchError):
  """A checkpoint written in another checkpoint format (by another mmtl_jax version)."""


def _check_format(where: str, extra: dict[str, Any]) -> None:
  found = extra.pop(_FORMAT_KEY, 1)
  if found == CHECKPOINT_FORMAT:
    return
  from mmtl_jax import __version__  # pylint: disable=g-import-not-at-top
  other = _LAST_VERSION_OF_FORMAT.get(found, 'another version')
  raise CheckpointFormatError(
      f'{where} was written by checkpoint format {found} (mmtl_jax {other}); mmtl_jax '
      f'{__version__} reads format {CHECKPOINT_FORMAT}: retrain (a new --workdir, or '
      f'--config.train.on_changed_config=restart), or finish that run with mmtl_jax {other}.')


class CheckpointDamagedError(errors.ExpectedError, RuntimeError):
  """A checkpoint step cannot be read (a file of it truncated, deleted or corrupt)."""


def _leaf_name(path: tuple) -> str:
  """'params.conv.kernel' from a key path (dict keys, attribute names, sequence indices),
  the naming orbax uses, so a namedtuple field matches its saved dict key."""
  return jax.tree_util.keystr(path, simple=True, separator='.')


def _named_shapes(tree: PyTree) -> dict[str, tuple[int, ...] | None]:
  """{leaf name: shape (None where a leaf has none)} of a pytree."""
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {_leaf_name(path): (tuple(leaf.shape) if hasattr(leaf, 'shape') else
                             tuple(np.shape(leaf)) if np.isscalar(leaf) else None)
          for path, leaf in leaves}


def _saved_shapes(step_dir: str) -> dict[str, tuple[int, ...] | None]:
  """{leaf name: shape} of the `state` item of a step directory, from orbax's metadata."""
  handler = ocp.StandardCheckpointHandler()
  try:
    metadata = handler.metadata(epath.Path(os.path.join(step_dir, _STATE)))
  finally:
    handler.close()
  return _named_shapes(getattr(metadata, 'tree', metadata))  # TreeMetadata in orbax >= 0.9


def shape_mismatches(saved: Mapping[str, Any], target: PyTree) -> list[str]:
  """`leaf: checkpoint <shape> vs model <shape>` lines (missing leaves on either side)."""
  wanted = _named_shapes(target)
  out = []
  for name in sorted(set(saved) | set(wanted)):
    if name not in wanted:
      out.append(f'{name}: in the checkpoint {saved[name]}, not in the model')
    elif name not in saved:
      out.append(f'{name}: in the model {wanted[name]}, not in the checkpoint')
    elif None not in (saved[name], wanted[name]) and saved[name] != wanted[name]:
      out.append(f'{name}: checkpoint {saved[name]} vs model {wanted[name]}')
  return out


def _damage_guard(where: str, read: Callable[[], Any]) -> Any:
  """read(), with any failure turned into one CheckpointDamagedError naming `where` (the
  orbax traceback is not chained: it is long and says no more than its last line)."""
  try:
    return read()
  except Exception as e:  # pylint: disable=broad-except
    lines = str(e).strip().splitlines() or ['']
    last = lines[-1].split(' [tensorstore_spec=')[0]  # the spec is a page of JSON
    raise CheckpointDamagedError(f'{where} cannot be read: {type(e).__name__}: '
                                 f'{last[:400]}') from None


class Checkpointer:
  """Saves and restores (state pytree, extra JSON dict) per training step.

  Example::

    ckpt = Checkpointer(workdir / 'checkpoints', max_to_keep=3, save_interval_steps=200)
    restored = ckpt.restore(target=initial_state)  # None on a fresh start
    if restored is not None:
      state, extra = restored
      start = extra['step'] + 1
    ...
    ckpt.save(step, state, {'step': step, 'fold': fold, 'sampler_position': pos})
    ckpt.close()  # waits for the last asynchronous save

  Args:
    directory: root directory of the step directories (created if missing).
    max_to_keep: number of most recent steps kept; None keeps all.
    save_interval_steps: `save` writes only steps that are multiples of this (and, as orbax
      decides, the very first save of an empty directory), unless force=True.
    async_save: write in a background thread after a blocking device-to-host copy.
  """

  def __init__(self, directory: str | os.PathLike, max_to_keep: int | None = 3,
               save_interval_steps: int = 1, async_save: bool = True):
    if max_to_keep is not None and max_to_keep < 1:
      raise ValueError(f'max_to_keep must be >= 1 or None, got {max_to_keep}.')
    if save_interval_steps < 1:
      raise ValueError(f'save_interval_steps must be >= 1, got {save_interval_steps}.')
    # orbax wants absolute paths; a relative one would also depend on the cwd at restore.
    self._directory = os.path.abspath(os.fspath(directory))
    options = ocp.CheckpointManagerOptions(
        save_interval_steps=save_interval_steps,
        create=True,
        cleanup_tmp_directories=True,
        enable_async_checkpointing=async_save,
        **_retention_options(max_to_keep),
    )
    self._manager = ocp.CheckpointManager(self._directory, item_names=(_STATE, _EXTRA),
                                          options=options)

  @property
  def directory(self) -> str:
    return self._directory

  def all_steps(self) -> list[int]:
    """Steps with a complete checkpoint, ascending."""
    return sorted(self._manager.all_steps())

  def latest_step(self) -> int | None:
    """The newest complete step, or None when there is none."""
    return self._manager.latest_step()

  def save(self, step: int, state: PyTree, extra: Mapping[str, Any] | None = None,
           force: bool = False) -> bool:
    """Saves `state` and `extra` as `step` (asynchronously unless async_save=False).

    Args:
      step: the training step, >= 0.
      state: pytree of jax/numpy arrays and Python scalars.
      extra: JSON-able dict (numpy scalars are converted). Restored as plain JSON: tuples
        come back as lists and non-string keys as strings.
      force: save even if the step is off the save interval.

    Returns:
      True if a save was started; False if skipped (off-interval, or `step` not newer than
      the latest saved step, which includes an already saved step).

    Raises:
      TypeError: `extra` is not JSON-able (checked before anything is written).
    """
    if int(step) != step or step < 0:
      raise ValueError(f'step must be a non-negative integer, got {step!r}.')
    step = int(step)
    extra = {} if extra is None else extra
    if not isinstance(extra, Mapping):
      raise TypeError(f'extra must be a dict, got {type(extra).__name__}.')
    extra = files.to_jsonable(dict(extra, **{_FORMAT_KEY: CHECKPOINT_FORMAT}), strict=True)
    json.dumps(extra, allow_nan=False)  # fail here, not in the background thread
    latest = self.latest_step()
    # orbax raises StepAlreadyExistsError for an existing step even with force=True; a
    # resumed run re-reaching a saved step has nothing new to write.
    if latest is not None and step <= latest and (not force or step in self.all_steps()):
      return False
    state = jax.tree.map(_host_copy, state)
    return self._manager.save(
        step,
        args=ocp.args.Composite(**{_STATE: ocp.args.StandardSave(state),
                                   _EXTRA: ocp.args.JsonSave(extra)}),
        force=force)

  def restore(self, step: int | None = None, target: PyTree | None = None,
              check_extra: Callable[[dict[str, Any]], None] | None = None,
              discard_damaged: bool = False) -> tuple[PyTree, dict[str, Any]] | None:
    """Restores (state, extra) of `step` (default: the latest readable step).

    Before any array is read, `extra` goes to `check_extra` (which may raise, e.g. on a
    checkpoint written under another config) and the saved shapes are compared with
    `target`'s, so a mismatch is one error naming the checkpoint and the differing leaves.
    With step=None, a step that cannot be read (a file of it truncated or deleted) is logged
    as a warning, moved aside to `<step>.damaged-<n>` (so the step can be written again) and
    the previous kept step is tried.

    Args:
      step: the step to restore; None for the latest.
      target: a pytree with the structure of the saved state whose leaves are arrays or
        jax.ShapeDtypeStruct (e.g. the freshly initialised state, or jax.eval_shape of its
        init function). Restored leaves take the target's dtypes (casting if they differ)
        and shardings; numpy leaves come back as numpy. Without a target the state comes
        back as saved on disk, with containers such as optax's namedtuples turned into
        dicts/lists, so pass a target to resume training.
      check_extra: called with the step's extra dict before its arrays are read.
      discard_damaged: with step=None, when every kept step is damaged, move the last one
        aside too and return None (start afresh) instead of raising.

    Returns:
      (state, extra), or None when step is None and no checkpoint exists.

    Raises:
      FileNotFoundError: an explicit `step` that has no complete checkpoint.
      CheckpointMismatchError (a ValueError): `target`'s tree structure or shapes differ
        from the checkpoint's; CheckpointFormatError (one of them) when the step was written
        in another checkpoint format (`CHECKPOINT_FORMAT`), checked before anything else.
      CheckpointDamagedError: the explicit `step`, or every kept step, cannot be read (one
        line naming every damaged step).
    """
    if step is not None:
      if step not in self.all_steps():
        raise FileNotFoundError(
            f'No checkpoint for step {step} in {self._directory}; have {self.all_steps()}.')
      return self._restore_step(step, target, check_extra)
    steps, damaged = self.all_steps(), []
    for i, candidate in enumerate(reversed(steps)):
      try:
        return self._restore_step(candidate, target, check_extra)
      except CheckpointDamagedError as e:
        if i + 1 == len(steps) and not discard_damaged:
          if not damaged:
            raise
          raise CheckpointDamagedError(
              f'every checkpoint step in {self._directory} is damaged: {e}; '
              + '; '.join(damaged)) from None
        moved = self._move_aside(candidate)
        damaged.append(f'{e} (moved to {moved})')
        log.warning('%s; moved to %s%s', e, moved, '' if i + 1 == len(steps) else
                    f', restoring step {steps[-2 - i]} instead')
    return None

  def _step_dir(self, step: int) -> str:
    return os.path.join(self._directory, str(step))

  def _restore_step(self, step: int, target: PyTree | None,
                    check_extra: Callable[[dict[str, Any]], None] | None
                    ) -> tuple[PyTree, dict[str, Any]]:
    """One step: extra, its check, the shape check, then the arrays (see `restore`)."""
    where = f'checkpoint {self._step_dir(step)}'
    extra = _damage_guard(where, lambda: self._manager.restore(
        step, args=ocp.args.Composite(**{_EXTRA: ocp.args.JsonRestore()}))[_EXTRA])
    extra = dict(extra or {})
    _check_format(where, extra)
    if check_extra is not None:
      check_extra(extra)
    abstract = None
    if target is not None:
      abstract = jax.tree.map(_abstract, target)
      saved = _damage_guard(where, lambda: _saved_shapes(self._step_dir(step)))
      problems = shape_mismatches(saved, abstract)
      if problems:
        shown = problems[:_SHOWN] + ([f'... and {len(problems) - _SHOWN} more'] if
                                     len(problems) > _SHOWN else [])
        raise CheckpointMismatchError(
            f'{where} does not fit the model being restored ({len(problems)} leaves differ; '
            'was it written with other model settings?):\n  ' + '\n  '.join(shown))
    state = _damage_guard(where, lambda: self._manager.restore(
        step, args=ocp.args.Composite(**{_STATE: ocp.args.StandardRestore(abstract)}))[_STATE])
    return state, extra

  def _move_aside(self, step: int) -> str:
    """Renames a damaged step directory out of orbax's view (its name is no step number)."""
    n = 1
    while os.path.exists(f'{self._step_dir(step)}.damaged-{n}'):
      n += 1
    moved = f'{self._step_dir(step)}.damaged-{n}'
    if jax.process_index() == 0:  # one rename on a shared file system
      os.rename(self._step_dir(step), moved)
    if hasattr(self._manager, 'reload'):  # orbax caches the step list
      self._manager.reload()
    return moved

  def wait(self) -> None:
    """Blocks until the pending asynchronous save, if any, is on disk."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    """Waits for pending saves and releases the manager's resources."""
    self._manager.wait_until_finished()
    self._manager.close()

  def __enter__(self) -> 'Checkpointer':
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()


def step_dirs(directory: str | os.PathLike) -> dict[int, str]:
  """{step: directory} of the complete steps under a Checkpointer's directory, read only
  (temporaries of killed writes and steps moved aside as damaged have no number as name)."""
  directory = os.fspath(directory)
  if not os.path.isdir(directory):
    return {}
  return {int(n): os.path.join(directory, n) for n in os.listdir(directory)
          if n.isdigit() and os.path.isdir(os.path.join(directory, n, _STATE))}


def is_step_dir(path: str | os.PathLike) -> bool:
  """Whether `path` is one step directory written by `Checkpointer` (it has a state item)."""
  return os.path.isdir(os.path.join(os.fspath(path), _STATE))


def read_step(step_dir: str | os.PathLike) -> tuple[PyTree, dict[str, Any]]:
  """(state as saved, extra) of one step directory of a `Checkpointer`, for tools that read a
  training checkpoint without its model (nothing is created, moved or cleaned up).

  The state comes back as orbax restores it without a target: nested dicts and lists of
  arrays (a TrainState of ser/train.py: {'params', 'opt_state', 'best'}).

  Raises:
    CheckpointFormatError: written in another checkpoint format (before any array is read).
    CheckpointDamagedError: the step cannot be read (one line naming it).
  """
  step_dir = os.path.abspath(os.fspath(step_dir))
  where = f'checkpoint {step_dir}'

  def read_extra():
    handler = ocp.JsonCheckpointHandler()
    try:
      return handler.restore(epath.Path(os.path.join(step_dir, _EXTRA)))
    finally:
      handler.close()

  def read_state():
    with ocp.StandardCheckpointer() as checkpointer:
      return checkpointer.restore(os.path.join(step_dir, _STATE))

  extra = dict(_damage_guard(where, read_extra) or {})
  _check_format(where, extra)
  return _damage_guard(where, read_state), extra


# ---- Inference bundle --------------------------------------------------------------------


def lists_to_tuples(obj: Any) -> Any:
  """A config read back from JSON with its lists turned back into tuples (the configs of
  this project hold sequences as tuples; JSON turns them into lists)."""
  if isinstance(obj, dict):
    return {k: lists_to_tuples(v) for k, v in obj.items()}
  if isinstance(obj, list):
    return tuple(lists_to_tuples(v) for v in obj)
  return obj


def _this_process_only() -> dict[str, Any]:
  """StandardCheckpointer options for a save by the calling process alone: none on one
  process; with several JAX processes, orbax's barriers restricted to this one."""
  if jax.process_count() == 1:
    return {}
  me = jax.process_index()
  return {'multiprocessing_options': ocp.options.MultiprocessingOptions(
      primary_host=me, active_processes={me})}


def _flat_params(tree: PyTree, prefix: str = '') -> dict[str, np.ndarray]:
  """{'theta/conv_0/kernel': array} of a tree of nested dicts (what Flax params are)."""
  if not isinstance(tree, Mapping):
    return {prefix: np.asarray(tree)}
  out = {}
  for key, value in tree.items():
    if not isinstance(key, str) or not key or '/' in key:
      raise ValueError(f"npz bundles hold nested dicts with plain string keys; got {key!r}")
    out.update(_flat_params(value, f'{prefix}/{key}' if prefix else key))
  return out


def _nested_params(flat: Mapping[str, np.ndarray]) -> dict[str, Any]:
  """The inverse of `_flat_params`."""
  tree: dict[str, Any] = {}
  for name, value in flat.items():
    *parents, leaf = name.split('/')
    node = tree
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = value
  return tree


def _write_npz(path: str, params: PyTree, storage_dtype: str | None) -> None:
  """params.npz: every leaf a host array; float32 leaves cast to `storage_dtype` if given."""
  flat = _flat_params(jax.device_get(params))
  if storage_dtype is not None:
    flat = {k: v.astype(storage_dtype) if v.dtype == np.float32 else v
            for k, v in flat.items()}
  with open(path, 'wb') as f:
    np.savez(f, **flat)


class BundleTargetError(errors.ExpectedError, ValueError):
  """A directory a bundle may not be written to: it exists and is not a bundle, or holds
  files a bundle does not, or it is a directory to keep (a workdir) or a parent of one."""


# What a bundle directory holds: the files save_inference_bundle writes and the model card
# ser.pretrained writes beside them. Any other entry is the user's, and replacing the
# directory would delete it.
_BUNDLE_ENTRIES = frozenset({'bundle.json', 'config.json', 'params', _NPZ, 'MODEL_CARD.md'})


def _is_bundle_dir(directory: str) -> bool:
  """Whether `directory` has a bundle.json of this project's bundle format (any version)."""
  try:
    with open(os.path.join(directory, 'bundle.json'), encoding='utf-8') as f:
      marker = json.load(f)
  except (OSError, ValueError):
    return False
  return isinstance(marker, dict) and marker.get('format') == _BUNDLE_FORMAT


def check_bundle_target(directory: str | os.PathLike,
                        keep: Sequence[str | os.PathLike] = ()) -> str:
  """The absolute `directory` if a bundle may be written there (replacing what is there):
  it is absent, or an inference bundle (bundle.json of this format) holding nothing but a
  bundle's entries; and it is none of `keep` (e.g. the run's workdir) nor a parent of one.

  Raises:
    BundleTargetError: otherwise; one line naming the directory and what to do.
  """
  directory = os.path.abspath(os.fspath(directory))
  real = os.path.realpath(directory)
  for kept in keep:
    kept_real = os.path.realpath(os.fspath(kept))
    if os.path.commonpath([real, kept_real]) == real:
      what = 'is' if real == kept_real else 'is a parent of'
      raise BundleTargetError(
          f'the bundle directory {what} {os.fspath(kept)}, whose files writing the bundle '
          f'would delete, {directory}, give a directory of its own (new, or a bundle)')
  if not os.path.lexists(directory):
    return directory
  if os.path.islink(directory) or not os.path.isdir(directory) or not _is_bundle_dir(
      directory):
    raise BundleTargetError(
        f'exists and is not an inference bundle (no bundle.json of {_BUNDLE_FORMAT}), only a '
        f'bundle is replaced, {directory}, give a new directory or an old bundle')
  others = sorted(set(os.listdir(directory)) - _BUNDLE_ENTRIES)
  if others:
    raise BundleTargetError(
        f"the bundle holds files of its own ({', '.join(others[:3])}"
        f"{', ...' if len(others) > 3 else ''}) that replacing it would delete, {directory}, "
        'move them out of it or give another directory')
  return directory


def save_inference_bundle(directory: str | os.PathLike, params: PyTree, config: Any,
                          overwrite: bool = True, info: Mapping[str, Any] | None = None,
                          storage: str = 'orbax', storage_dtype: str | None = None,
                          keep: Sequence[str | os.PathLike] = ()) -> str:
  """Writes a directory from which a prediction script can rebuild and run the model.

  Layout: ``params/`` (orbax StandardSave of `params`; storage='npz': ``params.npz`` instead),
  ``config.json`` (the config as plain JSON) and ``bundle.json`` (format marker, version,
  mmtl_jax version, `info`). The bundle is assembled in a temporary sibling directory and
  renamed into place, so readers never see half a bundle. Only an absent directory or a
  bundle is replaced (`check_bundle_target`, before anything is written): never a directory
  of other files. With several JAX processes (jax.distributed), the calling process writes it
  alone: call it from one process, with host (numpy) params.

  Args:
    directory: the bundle directory.
    params: the trained parameter pytree (e.g. {'meta': ..., 'transfer': ...}); nested dicts
      of arrays for storage='npz'.
    config: ml_collections.ConfigDict (or mapping) of the run.
    overwrite: replace an existing bundle; if False, an existing directory is an error.
    info: JSON-able description of the model, stored in bundle.json (`read_bundle_info`).
    storage: 'orbax' (version 1, what training writes) or 'npz' (version 2, one file).
    storage_dtype: storage='npz' only: e.g. 'float16' stores float32 leaves at half the
      size; `load_inference_bundle` casts them back to float32.
    keep: directories `directory` must not be nor contain (the workdir of the run).

  Returns:
    The absolute bundle directory.

  Raises:
    BundleTargetError: see `check_bundle_target`.
  """
  if storage not in _BUNDLE_STORAGES or (storage_dtype is not None and storage != 'npz'):
    raise ValueError(f'storage must be one of {_BUNDLE_STORAGES} (storage_dtype with npz '
                     f'only); got {storage!r}, {storage_dtype!r}')
  directory = os.path.abspath(os.fspath(directory))
  if os.path.lexists(directory) and not overwrite:
    raise FileExistsError(f'{directory} exists and overwrite=False.')
  check_bundle_target(directory, keep)
  parent = os.path.dirname(directory)
  os.makedirs(parent, exist_ok=True)
  tmp = files.make_temp_dir(os.path.basename(directory), parent)
  try:
    _write_bundle_files(tmp, params, config, info, storage, storage_dtype)
    if os.path.exists(directory):
      old = files.make_temp_dir(os.path.basename(directory), parent)
      os.replace(directory, os.path.join(old, 'bundle'))
      os.replace(tmp, directory)
      shutil.rmtree(old, ignore_errors=True)
    else:
      os.replace(tmp, directory)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return directory


def _write_bundle_files(tmp: str, params: PyTree, config: Any, info: Mapping[str, Any] | None,
                        storage: str, storage_dtype: str | None) -> None:
  """The files of a bundle (see `save_inference_bundle`) into the directory `tmp`."""
  if storage == 'npz':
    _write_npz(os.path.join(tmp, _NPZ), params, storage_dtype)
  else:
    with ocp.StandardCheckpointer(**_this_process_only()) as ckptr:
      ckptr.save(os.path.join(tmp, 'params'), jax.tree.map(_host_copy, params))
      ckptr.wait_until_finished()
  files.atomic_write_json(os.path.join(tmp, 'config.json'), files.to_jsonable(config))
  from mmtl_jax import __version__  # pylint: disable=g-import-not-at-top
  marker = {'format': _BUNDLE_FORMAT, 'version': 2 if storage == 'npz' else 1,
            'mmtl_jax': __version__}
  if storage == 'npz':
    marker['stored_dtype'] = storage_dtype or 'as trained'
  if info:
    marker['info'] = files.to_jsonable(dict(info))
  files.atomic_write_json(os.path.join(tmp, 'bundle.json'), marker)


def read_bundle_info(directory: str | os.PathLike) -> dict[str, Any]:
  """bundle.json of a bundle: {'format', 'version', 'mmtl_jax', 'info'?, 'stored_dtype'?}.

  Raises:
    FileNotFoundError: `directory` has no bundle.json.
    ValueError: it is not a bundle this version reads.
  """
  marker = os.path.join(os.path.abspath(os.fspath(directory)), 'bundle.json')
  if not os.path.exists(marker):
    raise FileNotFoundError(f'{os.path.dirname(marker)} is not an inference bundle (no '
                            'bundle.json).')
  with open(marker, encoding='utf-8') as f:
    info = json.load(f)
  if (not isinstance(info, dict) or info.get('format') != _BUNDLE_FORMAT
      or info.get('version', 0) > _BUNDLE_VERSION):
    raise ValueError(f'{marker}: unsupported bundle {info}.')
  return info


def _read_npz(path: str) -> dict[str, Any]:
  """params.npz back as nested dicts of arrays; float16 leaves as float32 (the dtype every
  stored float leaf was trained in: `_write_npz` casts float32 leaves only)."""
  with np.load(path, allow_pickle=False) as data:
    flat = {k: data[k].astype(np.float32) if data[k].dtype == np.float16 else data[k]
            for k in data.files}
  return _nested_params(flat)


def load_inference_bundle(directory: str | os.PathLike,
                          target: PyTree | None = None
                          ) -> tuple[PyTree, ml_collections.ConfigDict]:
  """Reads a bundle written by `save_inference_bundle`.

  Args:
    directory: the bundle directory.
    target: optional params pytree (arrays or ShapeDtypeStruct) giving structure, dtypes and
      shardings; without it the params come back as saved (nested dicts of jax arrays; of
      numpy arrays from a params.npz bundle, whose structure `target` is not checked against).

  Returns:
    (params, config): config is a ConfigDict in which JSON lists are turned back into tuples.
  """
  directory = os.path.abspath(os.fspath(directory))
  read_bundle_info(directory)
  with open(os.path.join(directory, 'config.json'), encoding='utf-8') as f:
    config = ml_collections.ConfigDict(lists_to_tuples(json.load(f)))
  npz = os.path.join(directory, _NPZ)
  if os.path.exists(npz):
    return _read_npz(npz), config
  abstract = None if target is None else jax.tree.map(_abstract, target)
  with ocp.StandardCheckpointer() as ckptr:
    params = ckptr.restore(os.path.join(directory, 'params'), abstract)
  return params, config


__all__ = [
    'BundleTargetError', 'check_bundle_target', 'CHECKPOINT_FORMAT', 'CheckpointDamagedError',
    'Checkpointer', 'CheckpointFormatError', 'CheckpointMismatchError', 'is_step_dir',
    'lists_to_tuples', 'load_inference_bundle', 'log', 'PyTree', 'read_bundle_info', 'read_step',
    'save_inference_bundle', 'shape_mismatches', 'step_dirs',
]
