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


ON_NONFINITE = ('skip', 'raise', 'ignore')


class NonFiniteMetaGradient(FloatingPointError):
  """A meta-step whose reduced meta-gradient holds a NaN or an infinity (e.g. a NaN in one
  task's batch, or a differentiated sqrt at 0: see `inner_adam`)."""


def all_finite(tree: PyTree) -> jax.Array:
  """bool scalar: every entry of every leaf of `tree` is finite (True for no leaves). One
  reduction per leaf: cheap next to a meta-gradient; the check `meta_gradient`'s callers
  make on its grads."""
  flags = [jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(tree)]
  return jnp.all(jnp.stack(flags)) if flags else jnp.asarray(True)


def raise_if_nonfinite(metrics: Mapping[str, Any], step: Any = None) -> None:
  """The host-side half of `make_step(..., on_nonfinite='raise')` under jit: raises
  `NonFiniteMetaGradient` when metrics['nonfinite'] is set (that step was skipped)."""
  if float(metrics.get('nonfinite', 0.0)):
    at = '' if step is None else f' at step {int(step)}'
    raise NonFiniteMetaGradient(f'non-finite meta-gradient{at} (the step was skipped): a '
                                'NaN or inf in a task batch or loss, or a sqrt '
                                'differentiated at 0 (docs/META_API.md, inner_adam)')


def _keep_if(finite: jax.Array, new: PyTree, old: PyTree) -> PyTree:
  """new where finite else old, leaf by leaf: a selection, so `new` is returned bit for bit
  when finite."""
  return jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)


def _guard(on_nonfinite: str, grads: Params, new: Tuple, old: Tuple
           ) -> Tuple[Tuple, Dict[str, jax.Array]]:
  """(the (params, opt, model) to keep, {'nonfinite': 0. or 1.}) of one step (make_step)."""
  finite = all_finite(grads)
  if on_nonfinite == 'raise' and not isinstance(finite, jax.core.Tracer) and not finite:
    raise NonFiniteMetaGradient('non-finite meta-gradient: params and state left unchanged; '
                                'a NaN or inf in a task batch or loss, or a sqrt '
                                'differentiated at 0 (docs/META_API.md, inner_adam)')
  kept = tuple(_keep_if(finite, n, o) for n, o in zip(new, old))
  return kept, {'nonfinite': jnp.where(finite, 0.0, 1.0)}


def make_step(spec: MetaSpec, optimizer: optax.GradientTransformation,
              mesh: Optional[jax.sharding.Mesh] = None, *, on_nonfinite: str = 'skip'
              ) -> Tuple[InitFn, StepFn]:
  """Builds init_fn(params, model_state=None) -> MetaState and the pure
  step_fn(params, state, task_batch, rng) -> (params, state, metrics).

  metrics: `meta_gradient`'s means over tasks plus 'grad_norm' (global norm of the reduced
  direction) and, unless on_nonfinite='ignore', 'nonfinite' (1.0 when the step was skipped,
  else 0.0). For jax.jit(step_fn, donate_argnums=(0, 1)); rng is this iteration's key
  (e.g. fold_in(key, step)). mesh: for strategy 'sharded' (default: all devices).

  on_nonfinite: what a meta-gradient with a NaN or inf entry does (one reduction per leaf):
    'skip' (default): params, the optimiser state and the model state stay as they were (a
      `jnp.where` selection: with finite gradients the step is bit for bit the unguarded
      one); the step counter still advances; metrics['nonfinite'] = 1.0 says so.
    'raise': called eagerly (not under jit), raises `NonFiniteMetaGradient`; under jit a
      traced value cannot raise, so it skips as 'skip' does and the caller raises on the
      host with `raise_if_nonfinite(metrics)` (to find the operation that made the NaN,
      run the step under jax.experimental.checkify with its nan checks, or
      jax.config.update('jax_debug_nans', True)).
    'ignore': no check and no 'nonfinite' metric (NaN params follow a NaN gradient).
  Raises ValueError for another on_nonfinite; the step raises `MetaInputError` for bad
  inputs (`meta_gradient`).
  """
  if on_nonfinite not in ON_NONFINITE:
    raise ValueError(f'make_step: on_nonfinite must be one of {ON_NONFINITE}, got '
                     f'{on_nonfinite!r}')

  def init_fn(params: Params, model_state: Any = None) -> MetaState:
    return MetaState(optimizer.init(params), jnp.zeros((), jnp.int32), model_state)

  def step_fn(params, state, task_batch, rng):
    out = meta_gradient(spec, params, task_batch, rng, state=state.model, step=state.step,
                        mesh=mesh)
    updates, opt = optimizer.update(out.grads, state.opt, params)
    new_params = optax.apply_updates(params, updates)
    metrics = dict(out.metrics, grad_norm=optax.tree.norm(out.grads))
    model = out.state
    if on_nonfinite != 'ignore':
      (new_params, opt, model), flag = _guard(on_nonfinite, out.grads,
                                              (new_params, opt, model),
                                              (params, state.opt, state.model))
      metrics.update(flag)
    return new_params, MetaState(opt, state.step + 1, model), metrics

  return init_fn, step_fn


__all__ = ['ON_NONFINITE', 'MetaState', 'NonFiniteMetaGradient', 'all_finite', 'group_optimizer',
           'make_step', 'param_labels', 'raise_if_nonfinite']
