"""One stage-based meta-iteration: `stage_meta_gradient`, then the outer optimiser.

  init_fn, step_fn = make_stage_step(spec, group_optimizer({'net': optax.adam(1e-3)}))
  state = init_fn(params)                       # or init_fn(params, batch_stats)
  step = jax.jit(step_fn, donate_argnums=(0, 1))
  params, state, metrics = step(params, state, task_batch, jax.random.fold_in(key, i))

The step state is {'opt': optimiser state, 'step': int32 outer step, and 'model': the model
state when one was given}; 'step' drives the MAML++ schedules (multi-step loss weights,
derivative-order annealing) inside the jitted step, so the step compiles once.
"""

from typing import Any, Callable, Dict, Optional, Tuple

import jax
import jax.numpy as jnp
import optax

from mmtl_jax.meta.engine import stage_meta_gradient
from mmtl_jax.meta.spec import MetaSpec
from mmtl_jax.types import Params, PyTree

StepState = Dict[str, Any]
StageInitFn = Callable[..., StepState]
StageStepFn = Callable[[Params, StepState, PyTree, jax.Array],
                       Tuple[Params, StepState, Dict[str, jax.Array]]]


def make_stage_step(spec: MetaSpec, optimizer: optax.GradientTransformation,
                    mesh: Optional[jax.sharding.Mesh] = None
                    ) -> Tuple[StageInitFn, StageStepFn]:
  """Builds init_fn(params, model_state=None) -> step state and the pure
  step_fn(params, step_state, task_batch, rng) -> (params, step_state, metrics).

  metrics: the means over tasks of `stage_meta_gradient` plus grad_norm (global norm of the
  reduced direction). With a model state, step_state['model'] becomes the mean over tasks of
  the adapted states (inductive BatchNorm running averages).
  """

  def init_fn(params: Params, model_state: Any = None) -> StepState:
    state = {'opt': optimizer.init(params), 'step': jnp.zeros((), jnp.int32)}
    if model_state is not None:
      state['model'] = model_state
    return state

  def step_fn(params, step_state, task_batch, rng):
    model_state = step_state.get('model')
    out = stage_meta_gradient(spec, params, task_batch, rng, state=model_state,
                              step=step_state['step'], mesh=mesh)
    grads, metrics = out[:2]
    updates, opt_state = optimizer.update(grads, step_state['opt'], params)
    params = optax.apply_updates(params, updates)
    new_state = dict(step_state, opt=opt_state, step=step_state['step'] + 1)
    if model_state is not None:
      new_state['model'] = out[2]
    return params, new_state, dict(metrics, grad_norm=optax.tree.norm(grads))

  return init_fn, step_fn


__all__ = ['make_stage_step']
