"""Gradient estimators ("modes"): how one task's outer direction is formed from its adaptation.

A mode is `mode(params, adapt, outer) -> (direction, outer_loss, adapted, stats)`:
  adapt(params, first_order) -> (adapted params, stats): the task's inner adaptation;
    first_order=True holds every inner update constant.
  outer(adapted) -> scalar: the task's outer loss at the adapted params.
  direction: shaped like params, handed to the outer optimiser as if it were a gradient.
  adapted: the adapted params with gradients stopped (for metrics).
Built in: 'exact' (second order), 'first_order' (FOMAML), 'reptile' (Nichol et al. 2018) and
'reptile_emotion' (Reptile plus FOMAML: the MMTL paper's reference code). 'implicit' (iMAML)
is not a mode function: it replaces the adaptation itself (meta/_implicit.py). A new mode is
one function plus `MODES.register(name, fn)`; `MetaSpec(mode=name)` then accepts it and every
task strategy runs it. A mode must call `outer` on what `adapt` returned (possibly after
stop_gradient): the engine hands `outer` the model state and multi-step trajectory of the
latest `adapt` call.
"""

from typing import Any, Callable, Dict, Tuple

import jax
import jax.numpy as jnp

from mmtl_jax.registry import Registry

Params = Dict[str, Any]
Adapt = Callable[[Params, bool], Tuple[Params, Dict[str, Any]]]
Outer = Callable[[Params], jax.Array]
ModeResult = Tuple[Params, jax.Array, Params, Dict[str, Any]]
Mode = Callable[[Params, Adapt, Outer], ModeResult]

MODES: Registry[Mode] = Registry('meta mode', 'MetaSpec.mode / config.meta.mode')


@MODES.register('exact')
def exact(params: Params, adapt: Adapt, outer: Outer) -> ModeResult:
  """grad_params outer(adapt(params)), differentiating through every inner step."""
  def objective(p):
    adapted, stats = adapt(p, False)
    return outer(adapted), (adapted, stats)

  (loss, (adapted, stats)), grads = jax.value_and_grad(objective, has_aux=True)(params)
  return grads, loss, jax.lax.stop_gradient(adapted), stats


@MODES.register('first_order')
def first_order(params: Params, adapt: Adapt, outer: Outer) -> ModeResult:
  """FOMAML: inner updates held constant, so the inner steps' Jacobians are the identity and
  the direction is grad outer evaluated at the adapted params."""
  adapted, stats = adapt(params, True)
  adapted = jax.lax.stop_gradient(adapted)
  loss, grads = jax.value_and_grad(outer)(adapted)
  return grads, loss, adapted, stats


@MODES.register('reptile')
def reptile(params: Params, adapt: Adapt, outer: Outer) -> ModeResult:
  """Reptile: direction = params - adapted params; the outer loss is reported, not used."""
  adapted, stats = adapt(params, True)
  adapted = jax.lax.stop_gradient(adapted)
  return jax.tree.map(jnp.subtract, params, adapted), outer(adapted), adapted, stats


@MODES.register('reptile_emotion')
def reptile_emotion(params: Params, adapt: Adapt, outer: Outer) -> ModeResult:
  """Reptile direction plus the FOMAML gradient: (params - adapted) + grad outer(adapted).

  The combination of the MMTL paper's public PyTorch code, whose fine-tuning block adds a
  first-order gradient of the outer (emotion) loss at the adapted params to ALL parameters on
  top of the Reptile step (one reading of Algorithm 1, line 11). It exists so that code can
  be reproduced. With one inner step theta's direction is alpha * grad inner(theta) +
  grad_theta outer(theta', phi'), so unlike plain 'reptile' theta does see the outer loss.
  """
  adapted, stats = adapt(params, True)
  adapted = jax.lax.stop_gradient(adapted)
  loss, grads = jax.value_and_grad(outer)(adapted)
  direction = jax.tree.map(lambda p, a, g: p - a + g, params, adapted, grads)
  return direction, loss, adapted, stats


def first_order_through(params: Params, adapt: Adapt, outer: Outer) -> ModeResult:
  """'first_order' with learned inner rates: differentiate through the stopped inner loop,
  so params get grad outer(adapted) (identity Jacobian) and the rates d outer / d rate."""
  return exact(params, lambda p, _: adapt(p, True), outer)
