"""Gradient estimators: how one task's outer direction is formed from its adaptation.

An estimator is a small frozen dataclass that owns its settings and has ONE method the engine
calls per task:

  estimator.direction(params, task) -> (direction, outer_loss, adapted, stats)

where `task` (built by the engine, meta/gradient.py) offers
  task.adapt(params, first_order) -> (adapted params, stats): the task's inner adaptation;
    first_order=True holds every inner update constant;
  task.outer(adapted) -> scalar: the task's outer loss at the adapted params (the MAML++
    multi-step loss when the schedule gave weights);
  task.spec, task.batch, task.rng (the task's key), task.state (model state or None).
`direction` is shaped like params and handed to the outer optimiser as if it were a gradient;
`adapted` is the adapted params with gradients stopped (for metrics); `stats` are adapt's
(plus any scalar metrics of the estimator's own). An estimator must call `task.outer` on
what `task.adapt` returned (possibly after stop_gradient): outer reads the model state and
multi-step trajectory of the latest adapt call.

Optional hooks, with defaults in `Estimator`: `problems(spec)` (what this estimator cannot do
with a spec; its own settings are checked when it is built), `inner_stages(spec, params)`
(the stages whose adaptation the outer loss sees: the spec's, or iMAML's proximal ones),
`schedule(spec, step, run)` (which estimator and which multi-step weights the outer step
uses: `Exact(first_order_until=k)`, `MultiStep`) and `needs_step`.

Built in (registered in `MODES` under the names config.meta.mode uses): `Exact` ('exact',
second order; MAML++'s derivative-order annealing as `first_order_until`), `FirstOrder`
('first_order', FOMAML), `Reptile` ('reptile', Nichol et al. 2018), `ReptileEmotion`
('reptile_emotion', the MMTL paper's reference code) and, in meta/_implicit.py, `Implicit`
('implicit', iMAML). `MultiStep(base, anneal)` adds MAML++'s multi-step loss to any of the
first four. A new estimator is one dataclass plus `MODES.register(name, cls)`.
"""

import dataclasses
from typing import Any, Callable, Dict, List, Optional, Tuple

import jax
import jax.numpy as jnp

from mmtl_jax.meta._checks import count_problem
from mmtl_jax.registry import Registry

Params = Dict[str, Any]
Adapt = Callable[[Params, bool], Tuple[Params, Dict[str, Any]]]
Outer = Callable[[Params], jax.Array]
Direction = Tuple[Params, jax.Array, Params, Dict[str, Any]]
# run(estimator, multi-step weights or None) -> the engine's result over the task axis.
Run = Callable[['Estimator', Optional[jax.Array]], Any]


@dataclasses.dataclass(frozen=True)
class Estimator:
  """Base of the gradient estimators (module docstring); subclasses define `direction`."""

  def direction(self, params: Params, task: Any) -> Direction:
    raise NotImplementedError(f'{type(self).__name__} defines no direction()')

  def problems(self, spec: Any) -> List[str]:
    """Every reason this estimator cannot run `spec` ('estimator: ...' strings)."""
    del spec
    return []

  def inner_stages(self, spec: Any, params: Params) -> Tuple[Any, ...]:
    """The stages whose adaptation of params the outer loss is evaluated at."""
    del params
    return spec.stages

  def schedule(self, spec: Any, step: Any, run: Run) -> Any:
    """run(estimator, weights) for outer step `step` (may be traced): the estimator the task
    axis uses at this step and the multi-step loss weights (None: the plain outer loss)."""
    del spec, step
    return run(self, None)

  @property
  def needs_step(self) -> bool:
    """Whether the meta-gradient depends on the outer step counter."""
    return False


MODES: Registry[Callable[..., Estimator]] = Registry(
    'meta mode', 'MetaSpec.estimator / config.meta.mode')


def _exact(params: Params, adapt: Adapt, outer: Outer) -> Direction:
  def objective(p):
    adapted, stats = adapt(p, False)
    return outer(adapted), (adapted, stats)

  (loss, (adapted, stats)), grads = jax.value_and_grad(objective, has_aux=True)(params)
  return grads, loss, jax.lax.stop_gradient(adapted), stats


def _first_order(params: Params, adapt: Adapt, outer: Outer) -> Direction:
  adapted, stats = adapt(params, True)
  adapted = jax.lax.stop_gradient(adapted)
  loss, grads = jax.value_and_grad(outer)(adapted)
  return grads, loss, adapted, stats


@MODES.register('exact')
@dataclasses.dataclass(frozen=True)
class Exact(Estimator):
  """grad_params outer(adapt(params)), differentiating through every inner step.

  first_order_until: MAML++'s derivative-order annealing: outer steps < this use
    `FirstOrder`, later ones exact; both are compiled into one program and `lax.cond` on the
    outer step picks one, so a jitted step compiles once (0 = off).
  """

  first_order_until: int = 0

  def __post_init__(self):
    problem = count_problem('first_order_until', self.first_order_until, 0)
    if problem:
      raise ValueError(f'Exact: {problem}')

  def direction(self, params: Params, task: Any) -> Direction:
    return _exact(params, task.adapt, task.outer)

  def schedule(self, spec: Any, step: Any, run: Run) -> Any:
    if not self.first_order_until:
      return run(self, None)
    return jax.lax.cond(jnp.asarray(step) < self.first_order_until,
                        lambda: run(FirstOrder(), None), lambda: run(self, None))

  @property
  def needs_step(self) -> bool:
    return self.first_order_until > 0


@MODES.register('first_order')
@dataclasses.dataclass(frozen=True)
class FirstOrder(Estimator):
  """FOMAML: inner updates held constant, so the inner steps' Jacobians are the identity and
  the direction is grad outer evaluated at the adapted params. With learned inner rates the
  stopped inner loop is differentiated through, so params still get grad outer(adapted) and
  the rates d outer / d rate."""

  def direction(self, params: Params, task: Any) -> Direction:
    if task.spec.learned_rates:
      return _exact(params, lambda p, _: task.adapt(p, True), task.outer)
    return _first_order(params, task.adapt, task.outer)


@MODES.register('reptile')
@dataclasses.dataclass(frozen=True)
class Reptile(Estimator):
  """Reptile: direction = params - adapted params; the outer loss is reported, not used."""

  def direction(self, params: Params, task: Any) -> Direction:
    adapted, stats = task.adapt(params, True)
    adapted = jax.lax.stop_gradient(adapted)
    return (jax.tree.map(jnp.subtract, params, adapted), task.outer(adapted), adapted,
            stats)


@MODES.register('reptile_emotion')
@dataclasses.dataclass(frozen=True)
class ReptileEmotion(Estimator):
  """Reptile direction plus the FOMAML gradient: (params - adapted) + grad outer(adapted).

  The combination of the MMTL paper's public PyTorch code, whose fine-tuning block adds a
  first-order gradient of the outer (emotion) loss at the adapted params to ALL parameters on
  top of the Reptile step (one reading of Algorithm 1, line 11). It exists so that code can
  be reproduced. With one inner step theta's direction is alpha * grad inner(theta) +
  grad_theta outer(theta', phi'), so unlike plain `Reptile` theta does see the outer loss.
  """

  def direction(self, params: Params, task: Any) -> Direction:
    grads, loss, adapted, stats = _first_order(params, task.adapt, task.outer)
    direction = jax.tree.map(lambda p, a, g: p - a + g, params, adapted, grads)
    return direction, loss, adapted, stats


def multi_step_weights(step: Any, steps: int, anneal: int) -> jax.Array:
  """MAML++'s multi-step loss weights [steps] at outer step `step` (may be traced), in the
  default float dtype (float64 under jax_enable_x64).

  Uniform 1/steps at step 0; over `anneal` outer steps every non-final weight decays
  linearly to 0.03/steps and the final one grows to 1 - 0.03 (steps-1)/steps (the schedule of
  Antoniou et al.'s reference code, counted in outer steps instead of epochs).
  """
  dtype = jnp.result_type(float)
  t = jnp.asarray(step, dtype)
  decay = jnp.asarray(1.0 / steps / anneal, dtype)
  low = jnp.asarray(0.03 / steps, dtype)
  non_final = jnp.maximum(1.0 / steps - t * decay, low)
  final = jnp.minimum(1.0 / steps + t * (steps - 1) * decay, 1.0 - (steps - 1) * low)
  return jnp.concatenate([jnp.full((steps - 1,), non_final, dtype), final[None]])


@dataclasses.dataclass(frozen=True)
class MultiStep(Estimator):
  """MAML++'s multi-step loss on top of `base`: the outer loss is sum_s w_s outer(params
  after step s of the LAST stage), w = `multi_step_weights(step, steps, anneal)`, uniform at
  outer step 0 and moving to the last step only over `anneal` outer steps.

  base: the estimator given that loss (`Exact()`, `Exact(first_order_until=k)` for MAML++,
    `FirstOrder()`, `Reptile()`, ...; not `Implicit`, which has no trajectory).
  """

  base: Estimator = Exact()
  anneal: int = 1

  def __post_init__(self):
    if not isinstance(self.base, Estimator):
      raise ValueError(f'MultiStep: base must be an Estimator, got {self.base!r}')
    problem = count_problem('anneal', self.anneal, 1)
    if problem:
      raise ValueError(f'MultiStep: {problem}')

  def direction(self, params: Params, task: Any) -> Direction:
    return self.base.direction(params, task)

  def problems(self, spec: Any) -> List[str]:
    return self.base.problems(spec)

  def inner_stages(self, spec: Any, params: Params) -> Tuple[Any, ...]:
    return self.base.inner_stages(spec, params)

  def schedule(self, spec: Any, step: Any, run: Run) -> Any:
    weights = multi_step_weights(step, spec.stages[-1].steps, self.anneal)
    return self.base.schedule(spec, step, lambda estimator, _: run(estimator, weights))

  @property
  def needs_step(self) -> bool:
    return True


def estimator(mode: Any) -> Estimator:
  """An `Estimator` from a `MODES` name (built with its defaults) or an Estimator itself.

  Raises:
    ValueError: an unknown name (listing the registered ones) or another type.
  """
  if isinstance(mode, Estimator):
    return mode
  if isinstance(mode, str):
    return MODES.get(mode)()
  raise ValueError(f'estimator: need a MODES name or an Estimator, got {mode!r}')


__all__ = ['Direction', 'Estimator', 'Exact', 'FirstOrder', 'MODES', 'MultiStep', 'Reptile',
           'ReptileEmotion', 'estimator', 'multi_step_weights']
