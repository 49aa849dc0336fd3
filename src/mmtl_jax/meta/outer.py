"""The outer meta-gradient of eqs. 6-7 for one task and over a batch of tasks.

MMTL's convenience over the general stage engine (`mmtl_jax.meta.engine`): `mmtl_spec` turns
(inner_loss, transfer_loss, MetaConfig) into a `MetaSpec` of the two `mmtl_stages` and an
outer loss over {'theta', 'phi'}. For one task i, the mode named by `MetaConfig.mode` (see
`mmtl_jax.meta.modes`: 'exact', 'first_order', 'reptile' or any registered one) turns the
adapted params (theta'_i, phi'_i) into an outer direction. The per-task results are reduced
over tasks by `MetaConfig.task_reduce` (mean by default).
"""

from typing import Any, Dict, Optional, Tuple

import jax

from mmtl_jax.meta import engine
from mmtl_jax.meta.config import MetaConfig
from mmtl_jax.meta.engine import task_rng
from mmtl_jax.meta.inner import (InnerLoss, Params, PyTree, TransferLoss, check_params,
                                 mmtl_stages, mmtl_stats)
from mmtl_jax.meta.spec import MetaSpec
from mmtl_jax.meta.task import task_stage_gradient

Metrics = Dict[str, jax.Array]


def mmtl_spec(inner_loss: InnerLoss, transfer_loss: TransferLoss, meta_config: Any,
              outer_loss: Optional[TransferLoss] = None) -> MetaSpec:
  """The `MetaSpec` of MMTL under `meta_config` (a `MetaConfig` or config.meta).

  Its outer loss is outer_loss (default transfer_loss) at (theta', phi'); the 'inner' stage
  logs its loss after adaptation when cfg.log_inner_after.
  """
  cfg = MetaConfig.from_config(meta_config)
  outer_loss = outer_loss or transfer_loss
  stages = mmtl_stages(inner_loss, transfer_loss, alpha=cfg.alpha, beta=cfg.beta,
                       inner_steps=cfg.inner_steps, log_inner_after=cfg.log_inner_after)
  return MetaSpec(stages, lambda p, b, r: outer_loss(p['theta'], p['phi'], b, r),
                  mode=cfg.mode, strategy=cfg.strategy, task_chunk=cfg.task_chunk,
                  task_groups=cfg.task_groups, task_reduce=cfg.task_reduce, remat=cfg.remat)


def task_meta_gradient(params: Params, batch: PyTree, rng: jax.Array, inner_loss: InnerLoss,
                       transfer_loss: TransferLoss, cfg: MetaConfig,
                       outer_loss: Optional[TransferLoss] = None) -> Tuple[Params, Metrics]:
  """Meta-gradient (or Reptile direction) of ONE task; `rng` is already the task's key.

  Returns (grads shaped like params, metrics of scalars: inner_loss_before, inner_loss_after
  (if cfg.log_inner_after), transfer_loss (if phi is not empty), outer_loss).
  """
  spec = mmtl_spec(inner_loss, transfer_loss, cfg, outer_loss)
  grads, metrics, _ = task_stage_gradient(spec, params, batch, rng)
  return grads, mmtl_stats(metrics)


def meta_gradient(params: Params, task_batch: PyTree, rng: jax.Array, inner_loss: InnerLoss,
                  transfer_loss: TransferLoss, meta_config: Any,
                  outer_loss: Optional[TransferLoss] = None,
                  mesh: Optional[jax.sharding.Mesh] = None) -> Tuple[Params, Metrics]:
  """Meta-gradient of eqs. 6-7 over a meta-batch of tasks.

  Args:
    params: {'theta': ..., 'phi': ...} (phi may be {}).
    task_batch: any pytree whose leaves all have a leading task axis of the same size n.
    rng: key of this meta-iteration; task t uses fold_in(rng, t), whatever the strategy.
    inner_loss, transfer_loss, outer_loss: see `mmtl_jax.meta.inner`; outer_loss defaults to
      transfer_loss.
    meta_config: a `MetaConfig` or `config.meta`.
    mesh: for strategy 'sharded': a 1-D mesh (default: all devices of all hosts, axis 'tasks').

  Returns:
    (grads, metrics): grads shaped like params, reduced over tasks by cfg.task_reduce (the
    Reptile direction in mode 'reptile'); metrics are means over tasks.
  """
  check_params(params)
  spec = mmtl_spec(inner_loss, transfer_loss, meta_config, outer_loss)
  grads, metrics = engine.stage_meta_gradient(spec, params, task_batch, rng, mesh=mesh)
  return grads, mmtl_stats(metrics)


def meta_objective(params: Params, task_batch: PyTree, rng: jax.Array, inner_loss: InnerLoss,
                   transfer_loss: TransferLoss, meta_config: Any,
                   outer_loss: Optional[TransferLoss] = None) -> jax.Array:
  """The scalar whose gradient is the exact meta-gradient (mean or sum of the outer losses).

  Tasks are mapped sequentially; useful for finite-difference checks and for monitoring.
  """
  spec = mmtl_spec(inner_loss, transfer_loss, meta_config, outer_loss)
  return engine.stage_objective(spec, params, task_batch, rng)


__all__ = ['meta_gradient', 'meta_objective', 'mmtl_spec', 'task_meta_gradient', 'task_rng']
