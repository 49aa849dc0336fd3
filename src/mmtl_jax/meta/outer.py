"""The outer meta-gradient of eqs. 6-7 for one task and over a batch of tasks.

For one task i, the mode named by `MetaConfig.mode` (see `mmtl_jax.meta.modes`: 'exact',
'first_order', 'reptile' or any registered one) turns the adapted params (theta'_i, phi'_i) of
`inner_adapt` into an outer direction. The per-task results are reduced over tasks by
`MetaConfig.task_reduce` (mean by default).
"""

from typing import Any, Dict, Optional, Tuple

import jax
import jax.numpy as jnp

from mmtl_jax.meta import strategy as strategy_lib
from mmtl_jax.meta.config import MetaConfig
from mmtl_jax.meta.modes import MODES
from mmtl_jax.meta.inner import (RNG_METRICS, RNG_OUTER, InnerLoss, Params, PyTree,
                                 TransferLoss, check_params, inner_adapt)

Metrics = Dict[str, jax.Array]


def task_rng(rng: jax.Array, task_index: jax.Array) -> jax.Array:
  """The key of task `task_index` (its position on the task axis of the meta-batch)."""
  return jax.random.fold_in(rng, task_index)


def task_meta_gradient(params: Params, batch: PyTree, rng: jax.Array, inner_loss: InnerLoss,
                       transfer_loss: TransferLoss, cfg: MetaConfig,
                       outer_loss: Optional[TransferLoss] = None) -> Tuple[Params, Metrics]:
  """Meta-gradient (or Reptile direction) of ONE task; `rng` is already the task's key.

  Returns (grads shaped like params, metrics of scalars: inner_loss_before, inner_loss_after
  (if cfg.log_inner_after), transfer_loss (if phi is not empty), outer_loss).
  """
  outer_loss = outer_loss or transfer_loss
  outer_rng = jax.random.fold_in(rng, RNG_OUTER)

  def adapt(p, first_order):
    return inner_adapt(p, batch, rng, inner_loss, transfer_loss, alpha=cfg.alpha, beta=cfg.beta,
                       inner_steps=cfg.inner_steps, first_order=first_order, remat=cfg.remat)

  def outer(adapted):
    return outer_loss(adapted['theta'], adapted['phi'], batch, outer_rng)

  grads, loss, adapted, stats = MODES.get(cfg.mode)(params, adapt, outer)
  metrics = dict(stats, outer_loss=loss)
  if cfg.log_inner_after:
    metrics['inner_loss_after'] = inner_loss(
        adapted['theta'], batch, jax.random.fold_in(rng, RNG_METRICS))
  return grads, metrics


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
  cfg = MetaConfig.from_config(meta_config)
  check_params(params)
  if strategy_lib.resolve(cfg.strategy) == 'sharded' and not strategy_lib.in_task_shard(mesh):
    # Enter the shard_map with params as explicit inputs (see strategy.on_task_shards); the
    # call below then sees one device's tasks.
    sharded = strategy_lib.on_task_shards(
        lambda p, b, r: meta_gradient(p, b, r, inner_loss, transfer_loss, cfg, outer_loss,
                                      mesh), mesh, cfg.task_reduce)
    return sharded(params, task_batch, rng)

  def per_task(batch, task_index):
    return task_meta_gradient(params, batch, task_rng(rng, task_index), inner_loss,
                              transfer_loss, cfg, outer_loss)

  n = strategy_lib.num_tasks(task_batch)
  grads, metrics = strategy_lib.sum_over_tasks(per_task, task_batch, cfg.strategy,
                                               cfg.task_chunk, mesh)
  scale = 1.0 if cfg.task_reduce == 'sum' else 1.0 / n
  grads = jax.tree.map(lambda g: g * jnp.asarray(scale, g.dtype), grads)
  metrics = jax.tree.map(lambda m: m / n, metrics)
  return grads, metrics


def meta_objective(params: Params, task_batch: PyTree, rng: jax.Array, inner_loss: InnerLoss,
                   transfer_loss: TransferLoss, meta_config: Any,
                   outer_loss: Optional[TransferLoss] = None) -> jax.Array:
  """The scalar whose gradient is the exact meta-gradient (mean or sum of the outer losses).

  Tasks are mapped sequentially; useful for finite-difference checks and for monitoring.
  """
  cfg = MetaConfig.from_config(meta_config)
  outer_loss = outer_loss or transfer_loss

  def one(batch, task_index):
    r = task_rng(rng, task_index)
    adapted, _ = inner_adapt(params, batch, r, inner_loss, transfer_loss, alpha=cfg.alpha,
                             beta=cfg.beta, inner_steps=cfg.inner_steps)
    return outer_loss(adapted['theta'], adapted['phi'], batch, jax.random.fold_in(r, RNG_OUTER))

  n = strategy_lib.num_tasks(task_batch)
  losses = jax.lax.map(lambda a: one(*a), (task_batch, jnp.arange(n)))
  return losses.sum() if cfg.task_reduce == 'sum' else losses.mean()


__all__ = ['meta_gradient', 'meta_objective', 'task_meta_gradient', 'task_rng']
