"""iMAML (Rajeswaran et al. 2019): implicit meta-gradients of a proximal inner problem, the
`Implicit` estimator (registered as 'implicit'), which owns its settings and its adaptation.

For the spec's single stage adapting group theta (other groups b, e.g. ANIL's body):
  phi*(theta, b) = argmin_phi  L_in(phi, b) + lam/2 ||phi - theta||^2
solved approximately by the stage's own steps and inner rule, with every gradient stopped
(memory does not grow with the number of steps). With H = Hessian of L_in in phi at phi* and
g = grad_phi L_out(phi*), the implicit function theorem gives
  d L_out / d theta = v,   v = (I + H / lam)^{-1} g       (conjugate gradient, cg_steps fixed
                                                           iterations, Hessian-vector products)
  d L_out / d b     = grad_b L_out - grad_b <grad_phi L_in(phi*, b), v / lam>
The second line is what makes ANIL-style stages exact; it is one more backward pass.

When H has eigenvalues below -lam (a non-convex support loss, common early in training),
I + H / lam is indefinite: CG then has no solution to converge to and its iterate can point
anywhere. Two guards, both reported:
  damping (the iMAML authors' code, aravindr93/imaml_dev: regu_coef 1, lam_damping 10): solve
    A v = g with A = (1 + damping) I + H / (lam + lam_damping), and use v / (lam +
    lam_damping) in the cross term; with both 0 this is the exact system above;
  CG stops at the first direction of non-positive curvature (p^T A p <= 0) and keeps its
    iterate (if that is the first direction: x = g, the solution for H = 0).
Metrics per task (averaged over tasks like every metric): 'cg_residual' = ||g - A v|| / ||g||
(one more Hessian-vector product), 'cg_iterations' run before a stop, and
'prox_grad_ratio' = ||grad of the proximal objective at phi*|| / ||grad L_in at theta||, how far
the inner problem is from solved (0: solved; 1: no progress). `solve_problems` turns them into
warnings.

`pull_back` (also the authors' code): the stage runs on L_in alone, then one SGD step of rate
stage.lr on lam/2 ||phi - theta||^2 pulls phi back towards theta, instead of steps on the
proximal objective.
"""

import dataclasses
from typing import Any, Callable, Dict, List, Tuple

import jax
import jax.numpy as jnp
import optax

from mmtl_jax.meta import _checks
from mmtl_jax.meta._adaptation import (adapt_stages, after_losses, call_loss, get_group,
                                       put_group, stage_key)
from mmtl_jax.meta._estimators import MODES, Direction, Estimator
from mmtl_jax.meta.spec import RNG_OUTER, Params, PyTree, Stage


def conjugate_gradient(matvec: Callable[[PyTree], PyTree], b: PyTree, steps: int) -> PyTree:
  """x ~ A^{-1} b for symmetric A, `steps` CG iterations (lax.fori_loop; exact after dim(b)
  iterations in exact arithmetic when A is positive definite). Stops at a direction of
  non-positive curvature (module docstring) and once the residual is 0."""
  return _cg(matvec, b, steps)[0]


def _cg(matvec: Callable[[PyTree], PyTree], b: PyTree, steps: int
        ) -> Tuple[PyTree, jax.Array]:
  """(x, iterations run): `conjugate_gradient` plus the number of iterations that updated x
  before a non-positive-curvature stop (or `steps`)."""
  zeros = jax.tree.map(jnp.zeros_like, b)
  axpy = lambda a, x, y: jax.tree.map(lambda u, v: a.astype(u.dtype) * u + v, x, y)

  def body(_, carry):
    x, r, p, rs, done, count = carry
    ap = matvec(p)
    denom = optax.tree.vdot(p, ap)
    stop = done | (denom <= 0)
    alpha = jnp.where(stop, 0, rs / jnp.where(denom > 0, denom, 1))
    x, r = axpy(alpha, p, x), axpy(-alpha, ap, r)
    rs_new = optax.tree.vdot(r, r)
    beta = jnp.where(rs > 0, rs_new / jnp.where(rs > 0, rs, 1), 0)
    p = jax.tree.map(lambda new, old: jnp.where(stop, old, new), axpy(beta, p, r), p)
    return x, r, p, rs_new, stop, count + jnp.where(stop, 0, 1)

  init = (zeros, b, b, optax.tree.vdot(b, b), jnp.asarray(False), jnp.asarray(0))
  x, _, _, _, _, count = jax.lax.fori_loop(0, steps, body, init)
  # Negative curvature along the very first direction: no CG iterate; fall back to b.
  x = jax.tree.map(lambda u, v: jnp.where(count == 0, v, u), x, b)
  return x, count


def proximal_stage(stage: Stage, center: PyTree, lam: float) -> Stage:
  """The stage on L_in + lam/2 ||group - center||^2 (center held constant): iMAML's inner
  problem, also what a test-time adaptation around the meta-params solves."""

  def loss(full, *args):
    value = stage.loss(full, *args)
    diff = jax.tree.map(jnp.subtract, get_group(full, stage), center)
    penalty = 0.5 * lam * optax.tree.vdot(diff, diff)
    return (value[0] + penalty, value[1]) if isinstance(value, tuple) else value + penalty

  return dataclasses.replace(stage, loss=loss, log_after=False)


def inner_stages(stage: Stage, params: Params, lam: float, pull_back: bool = False
                 ) -> Tuple[Stage, ...]:
  """The stages that solve the inner problem around params' group (module docstring): the
  proximal stage, or with pull_back the plain stage and one pull-back step."""
  center = get_group(params, stage)
  if not pull_back:
    return (proximal_stage(stage, center, lam),)

  def penalty(full, *args):
    diff = jax.tree.map(jnp.subtract, get_group(full, stage), center)
    value = 0.5 * lam * optax.tree.vdot(diff, diff)
    return (value, args[0]) if len(args) == 3 else value

  pull = dataclasses.replace(stage, loss=penalty, steps=1, name=f'{stage.label}_pull_back',
                             log_after=False)
  return (stage, pull)


def _sq_norm(tree: PyTree) -> jax.Array:
  return optax.tree.vdot(tree, tree)


def solve_problems(metrics: Dict[str, Any], *, max_residual: float = 1.0,
                   max_prox_grad_ratio: float = 0.5) -> list:
  """What is wrong with an iMAML step's solves, from its metrics (host floats or arrays):
  'cg_residual' above max_residual (the direction is worse than none: ||g - A v|| > ||g||)
  or 'prox_grad_ratio' above max_prox_grad_ratio (the inner problem is far from solved).
  Returns readable strings; [] when neither (or when the metrics are not iMAML's)."""
  out = []
  if 'cg_residual' in metrics and float(metrics['cg_residual']) > max_residual:
    out.append(f"CG relative residual {float(metrics['cg_residual']):.3g} > {max_residual:g} "
               '(raise cg damping or lambda)')
  if 'prox_grad_ratio' in metrics and float(metrics['prox_grad_ratio']) > max_prox_grad_ratio:
    out.append(f"inner problem unsolved: proximal gradient at {float(metrics['prox_grad_ratio']):.0%}"
               f" of its start (> {max_prox_grad_ratio:.0%}; more inner steps or a smaller rate)")
  return out


@MODES.register('implicit')
@dataclasses.dataclass(frozen=True)
class Implicit(Estimator):
  """iMAML's estimator (module docstring): it owns its adaptation (the proximal inner
  problem, first order) and the conjugate-gradient solve. One stage only, no learned rates,
  not under `MultiStep`.

  lam: the proximal strength lambda (finite, > 0).
  cg_steps: conjugate-gradient iterations (an int >= 1).
  damping, lam_damping: (finite, >= 0) the damped system (1 + damping) I + H / (lam + lam_damping) (0, 0:
    the exact implicit gradient; the iMAML authors' code: 1, 10).
  pull_back: the inner problem as the authors' code solves it: the stage on its own loss,
    then one SGD step (the stage's lr) on lam/2 ||phi - params||^2.
  Metrics per task: 'cg_residual', 'cg_iterations', 'prox_grad_ratio'.
  """

  lam: float = 1.0
  cg_steps: int = 10
  damping: float = 0.0
  lam_damping: float = 0.0
  pull_back: bool = False

  def __post_init__(self):
    problems = _checks.problems(
        _checks.number_problem('lam', self.lam, positive=True),
        _checks.count_problem('cg_steps', self.cg_steps, 1),
        *(_checks.number_problem(name, getattr(self, name), positive=False,
                                 hint=' (damping and lam_damping must be >= 0)')
          for name in ('damping', 'lam_damping')))
    if not isinstance(self.pull_back, bool):
      problems.append(f'pull_back must be a bool, got {self.pull_back!r}')
    if problems:
      raise ValueError('Implicit: ' + '; '.join(problems))

  def problems(self, spec: Any) -> List[str]:
    out = []
    if len(spec.stages) != 1:
      out.append(f'estimator: Implicit needs exactly one stage, got {len(spec.stages)}')
    if spec.estimator is not self:
      out.append('estimator: Implicit cannot be wrapped (it has no multi-step trajectory)')
    if spec.learned_rates:
      out.append('estimator: Implicit does not support learned rates')
    if self.pull_back and spec.stages[0].lr is None:
      out.append('estimator: Implicit(pull_back=True) needs a stage with a plain SGD rate '
                 '(lr) for its pull-back step')
    return out

  def inner_stages(self, spec: Any, params: Params) -> Tuple[Stage, ...]:
    return inner_stages(spec.stages[0], params, self.lam, self.pull_back)

  def direction(self, params: Params, task: Any) -> Direction:
    return _direction(self, task.spec, params, task.batch, task.rng, task.state)


def _direction(est: Implicit, spec: Any, params: Params, batch: PyTree, rng: jax.Array,
               state: Any) -> Direction:
  """iMAML direction of ONE task (module docstring); `rng` is the task's key. Returns
  (grads, outer loss, adapted params, stats: the metrics and 'model_state' when given)."""
  stage, lam = spec.stages[0], est.lam
  params = jax.lax.stop_gradient(params)
  adapted, stats = adapt_stages(est.inner_stages(spec, params), params, batch, rng,
                                first_order=True, state=state)
  adapted = jax.lax.stop_gradient(adapted)
  new_state = stats.get('model_state')
  outer_rng = jax.random.fold_in(rng, RNG_OUTER)
  loss, g_out = jax.value_and_grad(
      lambda a: call_loss(spec.outer_loss, a, new_state, batch, outer_rng)[0])(adapted)
  hvp_rng = jax.random.fold_in(stage_key(rng, 0), stage.steps)

  def inner_grad(full):
    fn = lambda sub: call_loss(stage.loss, put_group(full, stage, sub), new_state, batch,
                               hvp_rng)[0]
    return jax.grad(fn)(get_group(full, stage))

  scale = 1.0 + est.damping
  lam_h = lam + est.lam_damping

  def matvec(v):  # ((1 + damping) I + H / (lam + lam_damping)) v, H forward-over-reverse
    hv = jax.jvp(lambda s: inner_grad(put_group(adapted, stage, s)),
                 (get_group(adapted, stage),), (v,))[1]
    return jax.tree.map(lambda a, h: scale * a + h / lam_h, v, hv)

  g = get_group(g_out, stage)
  v, iterations = _cg(matvec, g, est.cg_steps)
  residual = jax.tree.map(jnp.subtract, g, matvec(v))
  tiny = jnp.finfo(jnp.result_type(loss)).tiny
  cross = jax.grad(lambda full: optax.tree.vdot(inner_grad(full), v) / lam_h)(adapted)
  grads = put_group(jax.tree.map(jnp.subtract, g_out, cross), stage, v)
  # How far the inner problem is from solved: proximal gradient at phi* against grad L_in at
  # theta (where the proximal term vanishes).
  center = get_group(params, stage)
  prox_grad = jax.tree.map(lambda a, b, c: a + lam * (b - c), inner_grad(adapted),
                           get_group(adapted, stage), center)
  start_grad = inner_grad(params)
  stats.update(cg_residual=jnp.sqrt(_sq_norm(residual) / jnp.maximum(_sq_norm(g), tiny)),
               cg_iterations=iterations.astype(loss.dtype),
               prox_grad_ratio=jnp.sqrt(_sq_norm(prox_grad)
                                        / jnp.maximum(_sq_norm(start_grad), tiny)))
  return grads, loss, adapted, stats


__all__ = ['Implicit', 'conjugate_gradient', 'inner_stages', 'proximal_stage',
           'solve_problems']
