"""Scalar metric logging: TensorBoard event files plus a JSON-lines file, in one directory.

The JSON-lines file (``metrics.jsonl``) is the machine-readable record: one object per
`write_scalars` call, ``{"step": int, "fold": <fold or null>, "wall_time": float, <name>:
<value or null>, ...}``, flushed at once so a crash loses at most the line being written.
Non-finite values are written as null (strict JSON has no NaN) and passed to TensorBoard
unchanged. The file is opened in append mode: a resumed run appends, so steps between the
last checkpoint and a crash appear twice; readers should keep the last line per (fold, step).

TensorBoard tags are the metric names alone (``loss``, ``dev_UA_strict``): one directory is
one TensorBoard run, so the runs of a parent directory (every fold and seed of every model in
a workdir, `tensorboard --logdir <workdir>`) overlay under the same tags. `write_hparams`
records the run's hyper-parameters for TensorBoard's HPARAMS tab and `write_text` text (the
resolved config) for its TEXT tab; both in the same directory, so they belong to that run.
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Any, Mapping, Sequence

import numpy as np

from mmtl_jax.run import files

JSONL_NAME = 'metrics.jsonl'
_RESERVED = ('step', 'fold', 'wall_time')


def _scalar(name: str, value: Any) -> float:
  arr = np.asarray(value)
  if arr.size != 1 or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
    raise ValueError(f'Metric {name!r} must be a numeric scalar, got {type(value).__name__} '
                     f'with shape {arr.shape} and dtype {arr.dtype}.')
  return float(arr.reshape(()))


class MetricWriter:
  """Writes scalar metrics to TensorBoard and to ``<logdir>/metrics.jsonl``.

  Usable as a context manager. Example::

    with MetricWriter(workdir / 'logs', fold=2) as writer:
      writer.write_scalars(step, {'loss': loss, 'dev_UA': ua})

  Args:
    logdir: directory of the event files and metrics.jsonl (created if missing).
    fold: default fold attached to every line (overridable per call).
    tensorboard: also write TensorBoard event files.
    enabled: write anything at all; None means only on JAX process 0 (multi-host runs).
  """

  def __init__(self, logdir: str | os.PathLike, fold: int | str | None = None,
               tensorboard: bool = True, enabled: bool | None = None):
    if enabled is None:
      import jax  # pylint: disable=g-import-not-at-top
      enabled = jax.process_index() == 0
    self._logdir = os.fspath(logdir)
    self._fold = fold
    self._enabled = enabled
    self._jsonl = None
    self._tb = None
    if not enabled:
      return
    os.makedirs(self._logdir, exist_ok=True)
    # Appended in place: a symbolic link at its name is refused (files.PathError), never
    # followed to a file outside the log directory.
    fd = files.open_no_follow(os.path.join(self._logdir, JSONL_NAME),
                              os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    self._jsonl = os.fdopen(fd, 'a', encoding='utf-8')
    if tensorboard:
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      self._tb = SummaryWriter(logdir=self._logdir)

  @property
  def logdir(self) -> str:
    return self._logdir

  @property
  def jsonl_path(self) -> str:
    return os.path.join(self._logdir, JSONL_NAME)

  def write_scalars(self, step: int, scalars: Mapping[str, Any],
                    fold: int | str | None = None) -> None:
    """Logs `scalars` ({name: numeric scalar, incl. 0-d numpy/jax arrays}) at `step`.

    Raises:
      ValueError: a non-scalar value, a reserved name (step, fold, wall_time), or a closed
        writer.
    """
    if self._enabled and self._jsonl is None:
      raise ValueError('MetricWriter is closed.')
    clash = [k for k in scalars if k in _RESERVED]
    if clash:
      raise ValueError(f'Metric names {clash} are reserved for the JSON-lines fields.')
    values = {str(k): _scalar(str(k), v) for k, v in scalars.items()}
    if not self._enabled:
      return
    fold = self._fold if fold is None else fold
    step = int(step)
    line = {'step': step, 'fold': fold, 'wall_time': time.time()}
    line.update({k: (v if math.isfinite(v) else None) for k, v in values.items()})
    self._jsonl.write(json.dumps(line, allow_nan=False) + '\n')
    self._jsonl.flush()
    if self._tb is not None:
      for k, v in values.items():
        self._tb.add_scalar(k, v, global_step=step)

  def write_hparams(self, hparams: Mapping[str, Any], metrics: Sequence[str]) -> None:
    """Records this run's hyper-parameters (TensorBoard's HPARAMS tab) and the names of its
    scalars that the tab shows beside them (their latest values; write them with
    `write_scalars`). Values that are not bool, int, float or str are shown as text.
    TensorBoard only: a no-op without event files."""
    if self._tb is None:
      return
    from tensorboardX.summary import hparams as hparams_summary  # pylint: disable=g-import-not-at-top
    plain = {str(k): (v if isinstance(v, (bool, int, float, str)) else json.dumps(v))
             for k, v in hparams.items()}
    # Written into this run's own directory (SummaryWriter.add_hparams would open a new run
    # in a subdirectory named after the time, which TensorBoard shows apart from the curves).
    for summary in hparams_summary(plain, {str(m): 0.0 for m in metrics}):
      self._tb.file_writer.add_summary(summary)

  def write_text(self, tag: str, text: str, step: int = 0) -> None:
    """Markdown `text` under `tag` (TensorBoard's TEXT tab); a no-op without event files."""
    if self._tb is not None:
      self._tb.add_text(tag, text, global_step=int(step))

  def flush(self) -> None:
    if self._jsonl is not None:
      self._jsonl.flush()
    if self._tb is not None:
      self._tb.flush()

  def close(self) -> None:
    """Flushes and closes both outputs; further writes raise. Idempotent."""
    if self._tb is not None:
      self._tb.close()
      self._tb = None
    if self._jsonl is not None:
      self._jsonl.close()
      self._jsonl = None

  def __enter__(self) -> 'MetricWriter':
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
  """Reads a metrics.jsonl file; a truncated last line (a crash mid-write) is skipped."""
  rows = []
  with open(path, encoding='utf-8') as f:
    lines = f.read().split('\n')
  for i, line in enumerate(lines):
    if not line.strip():
      continue
    try:
      rows.append(json.loads(line))
    except json.JSONDecodeError:
      if i >= len(lines) - 2:  # only the final line may be partial
        break
      raise
  return rows


__all__ = ['JSONL_NAME', 'MetricWriter', 'read_jsonl']
