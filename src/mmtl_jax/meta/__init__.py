"""A general JAX meta-learning library (stages of adaptation), with MMTL (Cai et al. 2020,
eqs. 4-7) as its convenience layer. Nothing here knows about speech.

General API (docs/META_API.md has a recipe for MAML, FOMAML, Reptile, ANIL, Meta-SGD, MAML++,
iMAML and MMTL): params are a dict of named groups; adaptation is a sequence of `Stage`s,
each adapting one group with its own loss, steps and inner optimiser (plain SGD, any optax
transformation, or learned Meta-SGD / LSLR rates living in a group of their own):

  spec = MetaSpec(stages=(Stage('net', support_loss, steps=5, lr=0.01),),
                  outer_loss=query_loss, mode='exact')   # or first_order, reptile, implicit
  init_fn, step_fn = make_stage_step(spec, group_optimizer({'net': optax.adam(1e-3)}))
  state = init_fn(params)                                 # init_fn(params, batch_stats)
  params, state, metrics = jax.jit(step_fn)(params, state, task_batch, rng)

Lower level: `adapt_stages` (one task), `stage_meta_gradient` / `stage_objective` (a
meta-batch, every task strategy), `diagnostics` (exact vs approximate meta-gradients).

MMTL: bring two pure per-task losses over parameter pytrees and get a jit-able meta-step:

  inner_loss(theta, batch, rng) -> scalar             eq. 4 (e.g. mean of auxiliary losses)
  transfer_loss(theta, phi, batch, rng) -> scalar     eq. 5 and the outer loss of eqs. 6-7

  init_fn, step_fn = make_meta_step(inner_loss, transfer_loss, MetaConfig(mode='exact'))
  opt_state = init_fn({'theta': theta, 'phi': phi})
  params, opt_state, metrics = jax.jit(step_fn, donate_argnums=(0, 1))(
      params, opt_state, task_batch, jax.random.fold_in(key, step))

It runs the two `mmtl_stages` on the stage engine, bit-identical to the original MMTL code.
Modes, by name from the `MODES` registry (`MODES.register(name, fn)` adds one): 'exact' |
'first_order' (default) | 'reptile' | 'reptile_emotion' (and, for a `MetaSpec`, 'implicit').
Task strategies: 'vmap' | 'map' | 'loop' | 'sharded' | 'auto'. See docs/META_API.md.
"""

from mmtl_jax.meta import diagnostics
from mmtl_jax.meta.config import STRATEGIES, MetaConfig
from mmtl_jax.meta.engine import multi_step_weights, stage_meta_gradient, stage_objective
from mmtl_jax.meta.implicit import conjugate_gradient
from mmtl_jax.meta.inner import inner_adapt, mmtl_stages
from mmtl_jax.meta.inner_opt import lslr_rates, meta_sgd_rates
from mmtl_jax.meta.modes import MODES
from mmtl_jax.meta.optim import group_optimizer
from mmtl_jax.meta.outer import (meta_gradient, meta_objective, mmtl_spec, task_meta_gradient,
                                 task_rng)
from mmtl_jax.meta.spec import MetaSpec
from mmtl_jax.meta.stage_step import make_stage_step
from mmtl_jax.meta.stages import Stage, adapt_stages
from mmtl_jax.meta.step import make_meta_step, outer_optimizer, param_labels
from mmtl_jax.meta.strategy import default_mesh, num_tasks, replicate, resolve as resolve_strategy
from mmtl_jax.meta.strategy import shard_task_batch, sum_over_tasks
from mmtl_jax.meta.task import task_stage_gradient

__all__ = [
    'MODES', 'STRATEGIES', 'MetaConfig', 'MetaSpec', 'Stage', 'adapt_stages',
    'conjugate_gradient', 'default_mesh', 'diagnostics', 'group_optimizer', 'inner_adapt',
    'lslr_rates', 'make_meta_step', 'make_stage_step', 'meta_gradient', 'meta_objective',
    'meta_sgd_rates', 'mmtl_spec', 'mmtl_stages', 'multi_step_weights', 'num_tasks',
    'outer_optimizer', 'param_labels', 'replicate', 'resolve_strategy', 'shard_task_batch',
    'stage_meta_gradient', 'stage_objective', 'sum_over_tasks', 'task_meta_gradient',
    'task_rng', 'task_stage_gradient',
]
