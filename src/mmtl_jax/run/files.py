"""Run files: plain JSON values and atomic writes (a crash never leaves a truncated file)."""

from __future__ import annotations

import json
import math
import os
import tempfile
from typing import Any, Callable, Mapping

import numpy as np


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


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
  """Writes `text` to `path` via a temporary file in the same directory and os.replace."""
  atomic_write(path, lambda f: f.write(text.encode('utf-8')))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
  """Writes `obj` (already JSON-able, see to_jsonable) as indented strict JSON, atomically."""
  text = json.dumps(obj, indent=2, allow_nan=False) + '\n'
  atomic_write_text(path, text)


def atomic_write(path: str | os.PathLike, write_fn: Callable[[Any], Any]) -> None:
  """Calls write_fn(binary file) on a temporary file beside `path`, then os.replace: a crash
  never leaves a truncated file."""
  path = os.fspath(path)
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  suffix = os.path.splitext(path)[1]  # keeps the extension for tools that sniff it
  fd, tmp = tempfile.mkstemp(prefix='.' + os.path.basename(path) + '.', suffix=suffix + '.tmp',
                             dir=directory)
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
