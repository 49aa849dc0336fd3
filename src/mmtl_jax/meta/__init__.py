"""The reusable meta-update (eqs. 4-7 of Cai et al. 2020), independent of speech.

Bring two pure per-task losses over parameter pytrees and get a jit-able meta-step:

  inner_loss(theta, batch, rng) -> scalar             eq. 4 (e.g. mean of auxiliary losses)
  transfer_loss(theta, phi, batch, rng) -> scalar     eq. 5 and the outer loss of eqs. 6-7

  init_fn, step_fn = make_meta_step(inner_loss, transfer_loss, MetaConfig(mode='exact'))
  opt_state = init_fn({'theta': theta, 'phi': phi})
  params, opt_state, metrics = jax.jit(step_fn, donate_argnums=(0, 1))(
      params, opt_state, task_batch, jax.random.fold_in(key, step))

Modes, by name from the `MODES` registry (`MODES.register(name, fn)` adds one): 'exact' |
'first_order' (default) | 'reptile' | 'reptile_emotion'. Task strategies: 'vmap' | 'map' | 'loop' | 'sharded' | 'auto'.
See docs/META_API.md.
"""

from mmtl_jax.meta.config import STRATEGIES, MetaConfig
from mmtl_jax.meta.inner import inner_adapt
from mmtl_jax.meta.modes import MODES
from mmtl_jax.meta.outer import meta_gradient, meta_objective, task_meta_gradient, task_rng
from mmtl_jax.meta.step import make_meta_step, outer_optimizer, param_labels
from mmtl_jax.meta.strategy import default_mesh, num_tasks, replicate, resolve as resolve_strategy
from mmtl_jax.meta.strategy import shard_task_batch, sum_over_tasks

__all__ = [
    'MODES', 'STRATEGIES', 'MetaConfig', 'default_mesh', 'inner_adapt', 'make_meta_step',
    'meta_gradient', 'meta_objective', 'num_tasks', 'outer_optimizer', 'param_labels',
    'replicate', 'resolve_strategy', 'shard_task_batch', 'sum_over_tasks',
    'task_meta_gradient', 'task_rng',
]
