"""One meta-iteration: `meta_gradient`, then the outer optimiser.

  init_fn, step_fn = make_step(spec, group_optimizer({'net': optax.adam(1e-3)}))
  state = init_fn(params)                       # or init_fn(params, batch_stats)
  step = jax.jit(step_fn, donate_argnums=(0, 1))
  params, state, metrics = step(params, state, task_batch, jax.random.fold_in(key, i))

The step state is a `MetaState(opt, step, model)`; `step` drives the MAML++ schedules
(multi-step loss weights, derivative-order annealing) inside the jitted step, so the step
compiles once.
"""

from typing import Any, Callable, Dict, Mapping, NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp
import optax

from mmtl_jax.meta.gradient import meta_gradient
from mmtl_jax.meta.spec import MetaSpec, Params, PyTree


class MetaState(NamedTuple):
  """The state of `make_step`'s step.

  opt: the outer optimiser's state.
  step: int32 scalar, outer steps taken.
  model: the model state (e.g. BatchNorm running averages: the mean over tasks of the adapted
    states), or None when the losses take none.
  """
  opt: optax.OptState
  step: jax.Array
  model: Any = None


InitFn = Callable[..., MetaState]
StepFn = Callable[[Params, MetaState, PyTree, jax.Array],
                  Tuple[Params, MetaState, Dict[str, jax.Array]]]


def param_labels(params: Params) -> Params:
  """Labels every leaf by its top-level group NAME (e.g. 'theta'), never by position."""
  return {name: jax.tree.map(lambda _, n=name: n, sub) for name, sub in params.items()}


def group_optimizer(transforms: Mapping[str, optax.GradientTransformation]
                    ) -> optax.GradientTransformation:
  """optax.multi_transform by group name, e.g. {'net': optax.adam(1e-3), 'lr':
  optax.adam(1e-4)}; init raises a ValueError naming any params group without a transform."""
  transforms = dict(transforms)
  inner = optax.multi_transform(transforms, param_labels)

  def init(params):
    missing = sorted(set(params) - set(transforms))
    if missing:
      raise ValueError(f'no outer transform for params group(s) {missing}; '
                       f'transforms are for {sorted(transforms)}')
    return inner.init(params)

  return optax.GradientTransformation(init, inner.update)


def make_step(spec: MetaSpec, optimizer: optax.GradientTransformation,
              mesh: Optional[jax.sharding.Mesh] = None) -> Tuple[InitFn, StepFn]:
  """Builds init_fn(params, model_state=None) -> MetaState and the pure
  step_fn(params, state, task_batch, rng) -> (params, state, metrics).

  metrics: `meta_gradient`'s means over tasks plus 'grad_norm' (global norm of the reduced
  direction). For jax.jit(step_fn, donate_argnums=(0, 1)); rng is this iteration's key
  (e.g. fold_in(key, step)). mesh: for strategy 'sharded' (default: all devices).
  """

  def init_fn(params: Params, model_state: Any = None) -> MetaState:
    return MetaState(optimizer.init(params), jnp.zeros((), jnp.int32), model_state)

  def step_fn(params, state, task_batch, rng):
    out = meta_gradient(spec, params, task_batch, rng, state=state.model, step=state.step,
                        mesh=mesh)
    updates, opt = optimizer.update(out.grads, state.opt, params)
    params = optax.apply_updates(params, updates)
    metrics = dict(out.metrics, grad_norm=optax.tree.norm(out.grads))
    return params, MetaState(opt, state.step + 1, out.state), metrics

  return init_fn, step_fn


__all__ = ['MetaState', 'group_optimizer', 'make_step', 'param_labels']
