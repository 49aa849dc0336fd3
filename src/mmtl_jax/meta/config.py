"""`MetaConfig`: the static settings of the meta-update, built from `config.meta`.

Its field defaults are the only defaults of `config.meta` (configs/base.py copies them).
"""

import dataclasses
from typing import Any

from mmtl_jax.meta.modes import MODES

STRATEGIES = ('auto', 'vmap', 'map', 'loop', 'sharded')
TASK_REDUCES = ('mean', 'sum')


@dataclasses.dataclass(frozen=True)
class MetaConfig:
  """Hashable (usable as a static jit argument) settings of eqs. 4-7.

  Attributes:
    mode: a name in `mmtl_jax.meta.modes.MODES`: 'first_order' (the default; FOMAML: eqs. 6-7
      with the inner gradients treated as constants, so theta gets the outer loss's gradient
      at theta'), 'exact' (differentiate through eqs. 4-5), 'reptile' (outer direction =
      params - adapted params; with inner_steps=1 theta's is alpha * grad inner_loss alone
      and never sees the outer loss), 'reptile_emotion' (the Reptile direction plus the
      first_order gradient, as the paper's reference code combines them), or a registered one.
    strategy: how the task axis is computed: 'vmap', 'map' (sequential lax.scan inside the
      jit), 'loop' (sequential, Python loop traced into the jit), 'sharded' (tasks split over
      all devices, every host's) or 'auto' (CPU: loop, else vmap). See `mmtl_jax.meta.strategy`.
    inner_steps: gradient steps of eq. 4 and, after them, of eq. 5 (>= 1).
    alpha: inner learning rate of eq. 4 (theta).
    beta: inner learning rate of eq. 5 (phi).
    gamma: outer (Adam) learning rate of eqs. 6-7.
    remat: rematerialise each inner step in the backward pass (exact mode memory).
    task_chunk: process this many tasks at a time and accumulate (0 = all at once).
    task_groups: 'vmap' without task_chunk splits the tasks into this many vmapped groups that
      XLA can run side by side (0 = auto: two per CPU core on CPU, 1 on accelerators; see
      `mmtl_jax.meta.strategy.resolve_groups`). Changes sums only by float reassociation.
    task_reduce: 'mean' (default) or 'sum' (what eqs. 6-7 write) over tasks. With Adam the
      two differ only by a constant gradient scale, which Adam is invariant to (up to eps).
    log_inner_after: also report the auxiliary loss at the adapted theta (one extra forward
      pass per task; metrics only).
  """

  mode: str = 'first_order'
  strategy: str = 'auto'
  inner_steps: int = 1
  alpha: float = 0.01
  beta: float = 0.01
  gamma: float = 0.001
  remat: bool = False
  task_chunk: int = 0
  task_groups: int = 0
  task_reduce: str = 'mean'
  log_inner_after: bool = True

  def __post_init__(self):
    MODES.get(self.mode)  # ValueError listing the registered modes
    if self.strategy not in STRATEGIES:
      raise ValueError(f'meta strategy {self.strategy!r} not in {STRATEGIES}')
    if self.task_reduce not in TASK_REDUCES:
      raise ValueError(f'task_reduce {self.task_reduce!r} not in {TASK_REDUCES}')
    if self.inner_steps < 1:
      raise ValueError(f'inner_steps must be >= 1, got {self.inner_steps}')
    if self.task_chunk < 0:
      raise ValueError(f'task_chunk must be >= 0, got {self.task_chunk}')
    if self.task_groups < 0:
      raise ValueError(f'task_groups must be >= 0, got {self.task_groups}')

  @classmethod
  def from_config(cls, meta_config: Any) -> 'MetaConfig':
    """From a `MetaConfig`, a `ConfigDict` (config.meta) or a plain dict; unknown keys ignored."""
    if isinstance(meta_config, cls):
      return meta_config
    get = meta_config.get if hasattr(meta_config, 'get') else (
        lambda k, d: getattr(meta_config, k, d))
    kwargs = {}
    for field in dataclasses.fields(cls):
      value = get(field.name, None)
      if value is not None:
        kwargs[field.name] = field.type(value)  # e.g. an int gamma from the command line
    return cls(**kwargs)
