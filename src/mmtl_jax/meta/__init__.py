"""A general JAX meta-learning library; nothing here knows about speech.

Params are a dict of named groups; the inner adaptation is a sequence of `Stage`s, each
adapting one group with its own loss, steps and inner rule (SGD, any optax transformation, or
learned Meta-SGD / LSLR rates in a group of their own); a `MetaSpec` adds the outer loss, the
gradient estimator (an object owning its settings: `Exact()`, `FirstOrder()`, `Reptile()`,
`ReptileEmotion()`, `Implicit(lam=...)`, `MultiStep(base, anneal)`, or a registered one; the
`MODES` registry maps config.meta.mode's names to them) and the task strategy. `recipes`
builds the usual ones:

  spec = meta.recipes.maml(support_loss, query_loss, groups=('body', 'head'), steps=5,
                           lr=0.01)                       # or fomaml, reptile, anil, meta_sgd,
                                                          # maml_plus_plus, imaml, mmtl
  init_fn, step_fn = meta.make_step(spec, meta.group_optimizer({'body': optax.adam(1e-3),
                                                                'head': optax.adam(1e-3)}))
  state = init_fn(params)                                 # MetaState(opt, step, model)
  params, state, metrics = jax.jit(step_fn)(params, state, task_batch, rng)

  grads, metrics, new_state = meta.meta_gradient(spec, params, task_batch, rng)

Task strategies ('vmap', 'map', 'loop', 'sharded', 'auto') are the task axis; the placement
helpers for a device mesh (`default_mesh`, `replicate`, `shard_task_batch`) are apart from it;
`diagnostics` compares exact and approximate meta-gradients. Bad inputs raise a one-line
`MetaInputError` when traced; `make_step` skips (by default) a step whose meta-gradient is
not finite and says so in metrics['nonfinite']; `inner_adam` is an Adam inner optimiser whose
exact meta-gradient is finite at zero gradients. docs/META_API.md has a worked
recipe for each learner. Modules whose names start with '_' are internal.
"""

from mmtl_jax.meta import diagnostics, recipes
from mmtl_jax.meta._adaptation import adapt_stages
from mmtl_jax.meta._checks import MetaInputError
from mmtl_jax.meta._estimators import (MODES, Estimator, Exact, FirstOrder, MultiStep, Reptile,
                                       ReptileEmotion, estimator, multi_step_weights)
from mmtl_jax.meta._implicit import (Implicit, conjugate_gradient, proximal_stage,
                                     solve_problems)
from mmtl_jax.meta._inner_adam import inner_adam, scale_by_inner_adam
from mmtl_jax.meta._inner_optim import lslr_rates, meta_sgd_rates
from mmtl_jax.meta._placement import default_mesh, replicate, shard_task_batch
from mmtl_jax.meta._tasks import (num_tasks, resolve_strategy, resolve_task_groups,
                                  sum_over_tasks)
from mmtl_jax.meta.gradient import MetaGradient, meta_gradient, meta_objective
from mmtl_jax.meta.spec import STRATEGIES, TASK_REDUCES, MetaSpec, Stage
from mmtl_jax.meta.step import (ON_NONFINITE, MetaState, NonFiniteMetaGradient, all_finite,
                                group_optimizer, make_step, raise_if_nonfinite)

__all__ = [
    'MODES', 'ON_NONFINITE', 'STRATEGIES', 'TASK_REDUCES', 'Estimator', 'Exact', 'FirstOrder',
    'Implicit', 'MetaGradient', 'MetaInputError', 'MetaSpec', 'MetaState', 'MultiStep',
    'NonFiniteMetaGradient', 'Reptile', 'ReptileEmotion', 'Stage', 'adapt_stages',
    'all_finite', 'conjugate_gradient', 'default_mesh', 'diagnostics', 'estimator',
    'group_optimizer', 'inner_adam', 'lslr_rates', 'make_step', 'meta_gradient',
    'meta_objective', 'meta_sgd_rates', 'multi_step_weights', 'num_tasks', 'proximal_stage',
    'raise_if_nonfinite', 'recipes', 'replicate', 'resolve_strategy', 'resolve_task_groups',
    'scale_by_inner_adam', 'shard_task_batch', 'solve_problems', 'sum_over_tasks',
]
