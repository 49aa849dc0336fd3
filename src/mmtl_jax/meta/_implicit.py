"""iMAML (Rajeswaran et al. 2019): implicit meta-gradients of a proximal inner problem.

For the spec's single stage adapting group theta (other groups b, e.g. ANIL's body):
  phi*(theta, b) = argmin_phi  L_in(phi, b) + lam/2 ||phi - theta||^2
solved approximately by the stage's own steps and inner rule, with every gradient stopped
(memory does not grow with the number of steps). With H = Hessian of L_in in phi at phi* and
g = grad_phi L_out(phi*), the implicit function theorem gives
  d L_out / d theta = v,   v = (I + H / lam)^{-1} g       (conjugate gradient, cg_steps fixed
                                                           iterations, Hessian-vector products)
  d L_out / d b     = grad_b L_out - grad_b <grad_phi L_in(phi*, b), v / lam>
The second line is what makes ANIL-style stages exact; it is one more backward pass.
"""

import dataclasses
from typing import Any, Callable, Dict, Tuple

import jax
import jax.numpy as jnp
import optax

from mmtl_jax.meta._adaptation import (adapt_stages, after_losses, call_loss, get_group,
                                       put_group, stage_key)
from mmtl_jax.meta.spec import RNG_OUTER, Params, PyTree, Stage


def conjugate_gradient(matvec: Callable[[PyTree], PyTree], b: PyTree, steps: int) -> PyTree:
  """x ~ A^{-1} b for symmetric positive definite A, `steps` CG iterations (lax.fori_loop;
  exact after dim(b) iterations in exact arithmetic). Safe once the residual is 0."""
  zeros = jax.tree.map(jnp.zeros_like, b)
  axpy = lambda a, x, y: jax.tree.map(lambda u, v: a.astype(u.dtype) * u + v, x, y)

  def body(_, carry):
    x, r, p, rs = carry
    ap = matvec(p)
    denom = optax.tree.vdot(p, ap)
    alpha = jnp.where(denom > 0, rs / jnp.where(denom > 0, denom, 1), 0)
    x, r = axpy(alpha, p, x), axpy(-alpha, ap, r)
    rs_new = optax.tree.vdot(r, r)
    beta = jnp.where(rs > 0, rs_new / jnp.where(rs > 0, rs, 1), 0)
    return x, r, axpy(beta, p, r), rs_new

  return jax.lax.fori_loop(0, steps, body, (zeros, b, b, optax.tree.vdot(b, b)))[0]


def proximal_stage(stage: Stage, center: PyTree, lam: float) -> Stage:
  """The stage on L_in + lam/2 ||group - center||^2 (center held constant): iMAML's inner
  problem, also what a test-time adaptation around the meta-params solves."""

  def loss(full, *args):
    value = stage.loss(full, *args)
    diff = jax.tree.map(jnp.subtract, get_group(full, stage), center)
    penalty = 0.5 * lam * optax.tree.vdot(diff, diff)
    return (value[0] + penalty, value[1]) if isinstance(value, tuple) else value + penalty

  return dataclasses.replace(stage, loss=loss, log_after=False)


def task_gradient(spec, params: Params, batch: PyTree, rng: jax.Array, *, state: Any = None
                  ) -> Tuple[Params, Dict[str, jax.Array], Any]:
  """iMAML direction of ONE task (module docstring); `rng` is the task's key. Returns
  (grads, metrics, adapted model state)."""
  stage, lam = spec.stages[0], spec.implicit_lam
  params = jax.lax.stop_gradient(params)
  prox = proximal_stage(stage, get_group(params, stage), lam)
  adapted, stats = adapt_stages((prox,), params, batch, rng, first_order=True, state=state)
  adapted = jax.lax.stop_gradient(adapted)
  new_state = stats.pop('model_state', None)
  outer_rng = jax.random.fold_in(rng, RNG_OUTER)
  loss, g_out = jax.value_and_grad(
      lambda a: call_loss(spec.outer_loss, a, new_state, batch, outer_rng)[0])(adapted)
  hvp_rng = jax.random.fold_in(stage_key(rng, 0), stage.steps)

  def inner_grad(full):
    fn = lambda sub: call_loss(stage.loss, put_group(full, stage, sub), new_state, batch,
                               hvp_rng)[0]
    return jax.grad(fn)(get_group(full, stage))

  def matvec(v):  # (I + H / lam) v, H by forward-over-reverse differentiation
    hv = jax.jvp(lambda s: inner_grad(put_group(adapted, stage, s)),
                 (get_group(adapted, stage),), (v,))[1]
    return jax.tree.map(lambda a, h: a + h / lam, v, hv)

  v = conjugate_gradient(matvec, get_group(g_out, stage), spec.cg_steps)
  cross = jax.grad(lambda full: optax.tree.vdot(inner_grad(full), v) / lam)(adapted)
  grads = put_group(jax.tree.map(jnp.subtract, g_out, cross), stage, v)
  metrics = dict(stats, outer_loss=loss)
  metrics.update(after_losses(spec.stages, adapted, batch, rng, new_state))
  return grads, metrics, new_state
