"""One meta-iteration: meta-gradient (eqs. 4-7) then the outer optimiser (Adam, lr gamma)."""

from typing import Any, Callable, Dict, Optional, Tuple

import jax
import optax

from mmtl_jax.meta import strategy as strategy_lib
from mmtl_jax.meta.config import MetaConfig
from mmtl_jax.meta.inner import InnerLoss, Params, PyTree, TransferLoss, check_params
from mmtl_jax.meta.optim import param_labels
from mmtl_jax.meta.outer import meta_gradient

InitFn = Callable[[Params], optax.OptState]
StepFn = Callable[[Params, optax.OptState, PyTree, jax.Array],
                  Tuple[Params, optax.OptState, Dict[str, jax.Array]]]


def outer_optimizer(gamma: float = 1e-3, gamma_phi: Optional[float] = None
                    ) -> optax.GradientTransformation:
  """Adam on theta and on phi (eqs. 6-7), partitioned by name so each can get its own lr."""
  gamma_phi = gamma if gamma_phi is None else gamma_phi
  return optax.multi_transform({'theta': optax.adam(gamma), 'phi': optax.adam(gamma_phi)},
                               param_labels)


def make_meta_step(inner_loss: InnerLoss, transfer_loss: TransferLoss, meta_config: Any,
                   optimizer: Optional[optax.GradientTransformation] = None,
                   outer_loss: Optional[TransferLoss] = None,
                   mesh: Optional[jax.sharding.Mesh] = None) -> Tuple[InitFn, StepFn]:
  """Builds the pure meta-update.

  Args:
    inner_loss: inner_loss(theta, batch, rng) -> scalar, eq. 4 (one task, no task axis).
    transfer_loss: transfer_loss(theta, phi, batch, rng) -> scalar, eq. 5 and, unless
      outer_loss is given, the outer loss of eqs. 6-7.
    meta_config: `MetaConfig` or `config.meta` (mode, strategy, inner_steps, alpha, beta,
      gamma, remat, task_chunk, task_groups, task_reduce, log_inner_after).
    optimizer: outer optimiser; default `outer_optimizer(gamma)` (Adam on theta and phi).
    outer_loss: optional separate outer loss with transfer_loss's signature.
    mesh: for strategy 'sharded' (default: `strategy.default_mesh()`, all global devices).

  Returns:
    init_fn(params) -> opt_state, and
    step_fn(params, opt_state, task_batch, rng) -> (params, opt_state, metrics): pure, meant
    for `jax.jit(step_fn, donate_argnums=(0, 1))`. task_batch is any pytree with a leading
    task axis; rng is this iteration's key (e.g. fold_in(key, step)). Metrics (means over
    tasks): inner_loss_before, inner_loss_after, transfer_loss (if phi), outer_loss, and
    grad_norm (global norm of the reduced meta-gradient / Reptile direction).
  """
  cfg = MetaConfig.from_config(meta_config)
  optimizer = optimizer or outer_optimizer(cfg.gamma)

  def init_fn(params: Params) -> optax.OptState:
    check_params(params)
    return optimizer.init(params)

  def gradient(params, task_batch, rng):
    return meta_gradient(params, task_batch, rng, inner_loss, transfer_loss, cfg, outer_loss,
                         mesh)

  if strategy_lib.resolve(cfg.strategy) == 'sharded':  # params enter the shard_map explicitly
    gradient = strategy_lib.on_task_shards(gradient, mesh, cfg.task_reduce)

  def step_fn(params, opt_state, task_batch, rng):
    grads, metrics = gradient(params, task_batch, rng)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    metrics = dict(metrics, grad_norm=optax.tree.norm(grads))
    return params, opt_state, metrics

  return init_fn, step_fn
