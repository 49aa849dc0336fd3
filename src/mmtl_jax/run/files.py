"""Run files: plain JSON values and atomic writes (a crash never leaves a truncated file).

Temporary files and directories are created with the modes `open` / `os.makedirs` give
(0666 / 0777 less the umask), not tempfile's 0600 / 0700, so results and bundles are readable
by whoever the user's umask lets read them. Files written in place (appended logs, the lock)
are opened with `open_no_follow`: a symbolic link planted at their name is refused, never
followed to a file outside the workdir.
"""

from __future__ import annotations

import collections
import hashlib
import json
import math
import os
import re
import secrets
import shutil
from typing import Any, Callable, List, Mapping, Sequence

import numpy as np

from mmtl_jax.run import errors


class DamagedFileError(errors.ExpectedError, ValueError):
  """A run file that exists but cannot be read as what it should be; the message names the
  file and how to recover."""


class MissingFileError(errors.ExpectedError, FileNotFoundError):
  """A file the command needs is not there; the message names it and what to do."""


class PathError(errors.ExpectedError, ValueError):
  """A path given to the run that is of the wrong kind (a file for a directory, ...)."""


# The temporaries of atomic_write and make_temp_dir, what they leave behind when killed:
# `.<name>.mmtl_jax-tmp-<16 hex digits>`, a file keeping <name>'s extension after it (for
# tools that sniff it). A name no user picks, so cleanup matches only what this project made:
# a user's own `.notes.tmp` or `.x.tmp-1` is never touched (older releases' temporaries,
# `.<name>.<random>.tmp`, are not provably ours and are left alone too).
_TMP_TAG = '.mmtl_jax-tmp-'
_KILLED_WRITE = re.compile(r'^\..+\.mmtl_jax-tmp-[0-9a-f]{16}(\.[A-Za-z0-9]{1,16})?$')
_KEPT_EXTENSION = re.compile(r'\.[A-Za-z0-9]{1,16}')


def temp_name(name: str, keep_extension: bool = False) -> str:
  """A fresh temporary entry name for `name` (one path component) that `remove_killed_writes`
  recognises: `.<name>.mmtl_jax-tmp-<16 random hex digits>[<name>'s extension>]`."""
  ext = os.path.splitext(name)[1] if keep_extension else ''
  ext = ext if _KEPT_EXTENSION.fullmatch(ext) else ''
  return f'.{name}{_TMP_TAG}{secrets.token_hex(8)}{ext}'


def remove_killed_writes(directory: str | os.PathLike) -> list[str]:
  """Removes, directly in `directory`, the temporaries of writes that were killed (see
  `_KILLED_WRITE`); returns their paths. Only for a caller that holds the directory's
  workdir lock: no other writer can be using them."""
  removed = []
  directory = os.fspath(directory)
  for name in os.listdir(directory) if os.path.isdir(directory) else ():
    if not _KILLED_WRITE.match(name):
      continue
    path = os.path.join(directory, name)
    if os.path.isdir(path) and not os.path.islink(path):
      shutil.rmtree(path, ignore_errors=True)
    else:
      os.unlink(path)
    removed.append(path)
  return removed


def read_json(path: str | os.PathLike, recover: str, kind: type | None = dict) -> Any:
  """The JSON value of `path`, of type `kind` (None: any).

  Args:
    recover: what the user can do when the file is damaged (ends the one-line message).

  Raises:
    DamagedFileError: not UTF-8, not JSON, or not a `kind`: 'damaged <name> (<why>), <path>,
      <recover>'. A missing file raises FileNotFoundError as open() does.
  """
  path = os.fspath(path)
  try:
    with open(path, 'rb') as f:
      value = json.loads(f.read().decode('utf-8'))
  except (UnicodeDecodeError, ValueError) as e:
    why = f'{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ""}'
    raise DamagedFileError(f'damaged {os.path.basename(path)} ({why}), {path}, {recover}'
                           ) from e
  except IsADirectoryError as e:
    raise DamagedFileError(f'{os.path.basename(path)} is a directory, {path}, {recover}'
                           ) from e
  if kind is not None and not isinstance(value, kind):
    raise DamagedFileError(f'damaged {os.path.basename(path)} (not a JSON {kind.__name__}), '
                           f'{path}, {recover}')
  return value


def to_jsonable(obj: Any, strict: bool = False) -> Any:
  """Converts configs, numpy/jax values and tuples into plain JSON values.

  ConfigDicts become dicts, tuples become lists, numpy/jax scalars and arrays become Python
  numbers and nested lists, and non-finite floats become None (strict JSON has no NaN).

  Args:
    obj: the value to convert.
    strict: if True, raise TypeError on a value with no JSON form; otherwise use its str().
  """
  if hasattr(obj, 'to_dict') and callable(obj.to_dict):  # ml_collections.ConfigDict & co.
    return to_jsonable(obj.to_dict(), strict)
  if isinstance(obj, Mapping):
    out = {}
    for k, v in obj.items():
      if strict and not isinstance(k, (str, int, float, bool, np.integer)):
        raise TypeError(f'JSON keys must be str/int/float/bool, got {type(k).__name__}.')
      out[k if isinstance(k, str) else str(k)] = to_jsonable(v, strict)
    return out
  if isinstance(obj, (list, tuple)):
    return [to_jsonable(v, strict) for v in obj]
  if obj is None or isinstance(obj, (bool, str)):
    return obj
  if isinstance(obj, (int, np.integer)):
    return int(obj)
  if isinstance(obj, (float, np.floating)):
    return float(obj) if math.isfinite(obj) else None
  if isinstance(obj, np.bool_):
    return bool(obj)
  if hasattr(obj, '__array__'):  # numpy / jax arrays
    arr = np.asarray(obj)
    return to_jsonable(arr.item() if arr.ndim == 0 else arr.tolist(), strict)
  if strict:
    raise TypeError(f'{type(obj).__name__} has no JSON form: {obj!r:.80}')
  return str(obj)


def process_umask() -> int:
  """The process's umask, read without changing it where /proc allows (Linux)."""
  try:
    with open('/proc/self/status', encoding='ascii') as f:
      for line in f:
        if line.startswith('Umask:'):
          return int(line.split()[1], 8)
  except (OSError, ValueError, IndexError):
    pass
  mask = os.umask(0o022)  # elsewhere: set and restore (not thread-safe, hence the above)
  os.umask(mask)
  return mask


def make_temp_dir(name: str, parent: str) -> str:
  """A new empty directory `parent`/`temp_name(name)` (never an existing one), with the mode
  os.makedirs would give it; `remove_killed_writes(parent)` removes it if it is left over."""
  path = os.path.join(parent, temp_name(name))
  os.mkdir(path, 0o777)  # the umask applies, as for os.makedirs
  return path


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
  """Writes `text` to `path` via a temporary file in the same directory and os.replace."""
  atomic_write(path, lambda f: f.write(text.encode('utf-8')))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
  """Writes `obj` (already JSON-able, see to_jsonable) as indented strict JSON, atomically."""
  text = json.dumps(obj, indent=2, allow_nan=False) + '\n'
  atomic_write_text(path, text)


def atomic_write(path: str | os.PathLike, write_fn: Callable[[Any], Any]) -> None:
  """Calls write_fn(binary file) on a temporary file beside `path`, then os.replace: a crash
  never leaves a truncated file. A symbolic link at `path` is replaced by the file, never
  written through (os.replace renames onto the link itself)."""
  path = os.fspath(path)
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  tmp = os.path.join(directory, temp_name(os.path.basename(path), keep_extension=True))
  # O_EXCL: a fresh file, never one (or a link) already there; the umask applies to 0666.
  fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666)
  try:
    with os.fdopen(fd, 'wb') as f:
      write_fn(f)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise


def open_no_follow(path: str | os.PathLike, flags: int, mode: int = 0o666) -> int:
  """os.open(path, flags | O_NOFOLLOW, mode): a descriptor of the file at `path` itself.

  Raises:
    PathError: `path` is a symbolic link (one line naming it and where it points): whatever
      it points at is neither read nor written.
  """
  path = os.fspath(path)
  try:
    return os.open(path, flags | os.O_NOFOLLOW, mode)
  except OSError:
    if not os.path.islink(path):  # ELOOP also stands for a link loop in a parent
      raise
    raise PathError(f'{path} is a symbolic link (to {os.readlink(path)}), which mmtl_jax '
                    'does not write through: remove the link (or use another directory)'
                    ) from None


# A name kept as it is: letters, digits, '_', '-' and '.', not starting with '.' or '-'.
_PLAIN_NAME = re.compile(r'[A-Za-z0-9_][A-Za-z0-9._-]{0,99}')


def safe_component(name: Any) -> str:
  """`name` as one file-name component: joined to a directory, it names an entry directly in
  that directory, whatever the name holds.

  A name of at most 100 characters of [A-Za-z0-9._-] that starts with a letter, digit or '_'
  is returned unchanged ('Ses01-testSes01M', 'mmtl', 'seed1'). Any other ('/../x', '..',
  '.hidden', '', 'a b', 'é', a name too long for a file system) becomes its first 64
  characters with every other character replaced by '_' and leading dots and dashes removed,
  then '~' and 16 hex digits of the sha256 of the whole name. '~' never occurs in an unchanged
  name and the digest tells encoded names apart, so distinct names never share a component.
  """
  name = str(name)
  if _PLAIN_NAME.fullmatch(name):
    return name
  return _encoded(name)


def _encoded(name: str) -> str:
  readable = re.sub(r'[^A-Za-z0-9._-]', '_', name[:64]).lstrip('.-') or '_'
  digest = hashlib.sha256(name.encode('utf-8', 'surrogatepass')).hexdigest()[:16]
  return f'{readable}~{digest}'


def safe_components(names: Sequence[Any]) -> List[str]:
  """`safe_component` of each of `names` (entries of one directory), kept apart on
  case-insensitive file systems too (macOS, Windows): plain names that differ only in case
  ('S1', 's1') would share one directory there, so each of them is encoded ('S1~<digest>'),
  as a non-plain name is. The same set of names always gives the same components."""
  plain = [safe_component(n) for n in names]
  count = collections.Counter(c.casefold() for c in set(plain))  # a repeated name is one entry
  return [c if count[c.casefold()] == 1 or '~' in c else _encoded(str(n))
          for n, c in zip(names, plain)]


__all__ = [
    'atomic_write', 'atomic_write_json', 'atomic_write_text', 'DamagedFileError',
    'make_temp_dir', 'MissingFileError', 'open_no_follow', 'PathError', 'process_umask',
    'read_json', 'remove_killed_writes', 'safe_component', 'safe_components', 'temp_name',
    'to_jsonable',
]
