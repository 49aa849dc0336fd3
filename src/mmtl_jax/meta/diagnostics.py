"""Gradient diagnostics for any `MetaSpec`: how far are the cheap meta-gradients from exact?

  report = gradient_report(spec, params, task_batch, rng)            # float64, offline
  report_fn = make_gradient_report(spec, task_batch, rng)            # compiled once, reused
  hook = make_gradient_hook(spec)                                    # during training
  metrics.update(jax.jit(hook)(params, task_batch, rng))             # every N steps

`gradient_report` computes the meta-gradient of the spec under every estimator of
`estimators` (a mapping {label: Estimator}, or `MODES` names built with their defaults;
default 'exact', 'first_order', 'reptile', 'implicit') and compares each with 'exact', per
leaf and globally (cosine, norm ratio, relative error), plus a central finite difference of
the exact meta-objective along a random unit direction. An estimator that cannot run the spec
(its `problems`, e.g. `Implicit` on a two-stage spec) is left out. Under a `MultiStep` spec
every estimator gets the same multi-step loss. Reptile's direction is lr * steps times a
gradient, so it is divided by lr * steps of the stage adapting each group (stages with a
plain lr) to make norms comparable.
"""

import contextlib
import dataclasses
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Union

import jax
import jax.numpy as jnp

import optax

from mmtl_jax.meta._estimators import Estimator, Exact, MultiStep, Reptile, estimator
from mmtl_jax.meta._implicit import solve_problems
from mmtl_jax.meta.gradient import meta_gradient, meta_objective
from mmtl_jax.meta.spec import MetaSpec, Params, PyTree

COMPARED = ('exact', 'first_order', 'reptile', 'implicit')
# {label: Estimator}, or MODES names (each built with its defaults, labelled by its name).
Estimators = Union[Mapping[str, Estimator], Sequence[str]]
_TINY = 1e-30


def leaf_names(tree: PyTree) -> List[str]:
  """'group/layer/leaf' path names of the leaves, in jax.tree.leaves order."""
  flat, _ = jax.tree_util.tree_flatten_with_path(tree)
  return [jax.tree_util.keystr(path, simple=True, separator='/') for path, _ in flat]


def similarity(approx: PyTree, exact: PyTree) -> Dict[str, jax.Array]:
  """{'cosine', 'norm_ratio', 'relative_error'} of two trees taken as flat vectors (jit-able):
  cos(approx, exact), |approx| / |exact| and |approx - exact| / |exact|."""
  vdot = optax.tree.vdot
  dot, na2, ne2 = vdot(approx, exact), vdot(approx, approx), vdot(exact, exact)
  ne, na = jnp.sqrt(ne2), jnp.sqrt(na2)
  diff = jax.tree.map(jnp.subtract, approx, exact)
  return {'cosine': dot / jnp.maximum(ne * na, _TINY), 'norm_ratio': na / jnp.maximum(ne, _TINY),
          'relative_error': jnp.sqrt(optax.tree.vdot(diff, diff)) / jnp.maximum(ne, _TINY)}


def reptile_scale(spec: MetaSpec, direction: Params) -> Params:
  """Reptile's direction per group divided by lr * steps of the stage adapting it."""
  out = dict(direction)
  for stage in spec.stages:
    if stage.lr is not None:
      for group in stage.groups:
        out[group] = jax.tree.map(lambda d, s=stage: d / (s.lr * s.steps), out[group])
  return out


def _labelled(estimators: Estimators) -> Dict[str, Estimator]:
  if isinstance(estimators, Mapping):
    return {str(k): estimator(v) for k, v in estimators.items()}
  return {e if isinstance(e, str) else type(e).__name__: estimator(e) for e in estimators}


def compared_spec(spec: MetaSpec, est: Estimator) -> Optional[MetaSpec]:
  """spec with estimator `est` (under spec's `MultiStep` loss when it has one), or None when
  `est` cannot run it."""
  if isinstance(spec.estimator, MultiStep):
    try:
      est = MultiStep(est, spec.estimator.anneal)
    except ValueError:
      return None
  try:
    return dataclasses.replace(spec, estimator=est)
  except ValueError:
    return None


def mode_gradients(spec: MetaSpec, params: Params, task_batch: PyTree, rng: jax.Array,
                   estimators: Estimators = COMPARED, *, with_solve: bool = False,
                   **kwargs) -> Any:
  """{label: meta-gradient} of spec under each estimator that can run it (Reptile's
  rescaled); kwargs (state, step, mesh) go to `meta_gradient`. Pure: jit it. with_solve:
  return (that dict, the solve metrics {'cg_residual', 'prox_grad_ratio'} of an estimator
  that reports them (iMAML's), {} without one)."""
  out = _mode_gradients(spec, params, task_batch, rng, estimators, **kwargs)
  return out if with_solve else out[0]


def _mode_gradients(spec, params, task_batch, rng, estimators, **kwargs):
  """(`mode_gradients`, the solve metrics {'cg_residual', 'prox_grad_ratio'} or {})."""
  grads, solve = {}, {}
  for label, est in _labelled(estimators).items():
    candidate = compared_spec(spec, est)
    if candidate is None:
      continue
    out = meta_gradient(candidate, params, task_batch, rng, **kwargs)
    grads[label] = reptile_scale(spec, out.grads) if isinstance(est, Reptile) else out.grads
    if 'cg_residual' in out.metrics:
      solve = {k: out.metrics[k] for k in ('cg_residual', 'prox_grad_ratio')}
  return grads, solve


def random_direction(params: PyTree, seed: int) -> PyTree:
  """A unit-norm random direction shaped like params (normal per leaf, keys split from seed)."""
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
  d = [jax.random.normal(k, jnp.shape(l), jnp.result_type(l)) for k, l in zip(keys, leaves)]
  norm = jnp.sqrt(sum(jnp.sum(x ** 2) for x in d))
  return treedef.unflatten([x / norm for x in d])


def finite_difference(objective: Callable[[PyTree], jax.Array], params: PyTree,
                      direction: PyTree, eps: float) -> jax.Array:
  """Central difference (f(p + eps d) - f(p - eps d)) / (2 eps), the projection <grad f, d>."""
  shift = lambda s: jax.tree.map(lambda p, d: p + s * eps * d, params, direction)
  return (objective(shift(1.0)) - objective(shift(-1.0))) / (2 * eps)


def compare_gradients(grads: Dict[str, Params], reference: str = 'exact') -> Dict[str, Any]:
  """{'global': {mode: similarity}, 'layers': [{'name', 'size', 'exact_norm', mode: {...}}]}
  of every mode of `grads` against grads[reference] (host floats)."""
  ref = grads[reference]
  others = [m for m in grads if m != reference]
  out = {'global': {m: _floats(similarity(grads[m], ref)) for m in others}, 'layers': []}
  per_mode = {m: jax.tree.leaves(grads[m]) for m in others}
  for i, (name, leaf) in enumerate(zip(leaf_names(ref), jax.tree.leaves(ref))):
    row = {'name': name, 'size': int(jnp.size(leaf)),
           'exact_norm': float(jnp.linalg.norm(jnp.ravel(leaf)))}
    row.update({m: _floats(similarity(per_mode[m][i], leaf)) for m in others})
    out['layers'].append(row)
  return out


def _floats(tree: Dict[str, jax.Array]) -> Dict[str, float]:
  return {k: float(v) for k, v in tree.items()}


def _to64(tree: PyTree) -> PyTree:
  return jax.tree.map(lambda x: jnp.asarray(x, jnp.float64)
                      if jnp.issubdtype(jnp.result_type(x), jnp.floating) else x, tree)


def make_gradient_report(spec: MetaSpec, task_batch: PyTree, rng: jax.Array, *,
                         estimators: Estimators = COMPARED, fd_eps: float = 1e-6,
                         direction_seed: int = 0, float64: bool = True, state: Any = None,
                         step: Any = None) -> Callable[[Params], Dict[str, Any]]:
  """report(params) -> the full offline comparison (module docstring), compiled once and
  reusable for many params (e.g. checkpoints). By default in float64: jax x64 is enabled
  inside a context on every call and restored after; float params, batch and state are cast.

  The report is {'global', 'layers'} of `compare_gradients` and 'finite_difference': {'eps',
  'fd' (central difference of the exact objective along a unit random direction d), 'exact'
  and each other estimator (<grad, d>), 'relative_error' |fd - exact| / |fd|}; with the implicit
  estimator also 'implicit_solve': {'cg_residual', 'prox_grad_ratio', 'problems' (the failures
  `solve_problems` finds, [] when the solves are sound), 'failed' (bool)}.
  """
  context = (lambda: jax.enable_x64(True)) if float64 else contextlib.nullcontext
  cast = _to64 if float64 else (lambda tree: tree)
  exact = compared_spec(spec, Exact())
  with context():
    task_batch, state = cast(task_batch), cast(state)
  kwargs = {'state': state, 'step': step}
  gradients = jax.jit(lambda p: _mode_gradients(spec, p, task_batch, rng, estimators,
                                                     **kwargs))
  objective = lambda p: meta_objective(exact, p, task_batch, rng, **kwargs)
  fd_fn = jax.jit(lambda p, d: finite_difference(objective, p, d, fd_eps))

  def report(params: Params) -> Dict[str, Any]:
    with context():
      params = cast(params)
      grads, solve = gradients(params)
      direction = random_direction(params, direction_seed)
      fd = float(fd_fn(params, direction))
      out = compare_gradients(grads)
      dots = {m: float(optax.tree.vdot(g, direction)) for m, g in grads.items()}
      out['finite_difference'] = dict(dots, eps=fd_eps, fd=fd, relative_error=abs(
          fd - dots['exact']) / max(abs(fd), _TINY))
      if solve:
        solve = {k: float(v) for k, v in solve.items()}
        problems = solve_problems(solve)
        out['implicit_solve'] = dict(solve, problems=problems, failed=bool(problems))
      return out

  return report


def gradient_report(spec: MetaSpec, params: Params, task_batch: PyTree, rng: jax.Array,
                    **kwargs) -> Dict[str, Any]:
  """`make_gradient_report(spec, task_batch, rng, **kwargs)(params)`: one comparison."""
  return make_gradient_report(spec, task_batch, rng, **kwargs)(params)


def make_gradient_hook(spec: MetaSpec, estimators: Estimators = ('first_order',),
                       per_group: bool = True) -> Callable[..., Dict[str, jax.Array]]:
  """A pure, jit-able hook(params, task_batch, rng, state=None, step=None) -> {name: scalar}
  to call every N training steps: for each estimator, '{label}/cosine', '{label}/norm_ratio'
  and '{label}/relative_error' against the exact meta-gradient, and with per_group the same
  per params group ('{label}/{group}/cosine', ...); with iMAML's estimator also
  'implicit/cg_residual' and 'implicit/prox_grad_ratio'. Costs one meta-gradient per
  estimator plus exact."""
  compared = {'exact': Exact(), **_labelled(estimators)}

  def hook(params, task_batch, rng, state=None, step=None):
    grads, solve = _mode_gradients(spec, params, task_batch, rng, compared, state=state,
                                   step=step)
    out = {f'implicit/{k}': v for k, v in solve.items()}
    for mode in grads:
      if mode == 'exact':
        continue
      out.update({f'{mode}/{k}': v for k, v in similarity(grads[mode], grads['exact']).items()})
      for group in (params if per_group else ()):
        stats = similarity(grads[mode][group], grads['exact'][group])
        out.update({f'{mode}/{group}/{k}': v for k, v in stats.items()})
    return out

  return hook


__all__ = ['COMPARED', 'compare_gradients', 'compared_spec', 'finite_difference', 'gradient_report',
           'leaf_names', 'make_gradient_hook', 'make_gradient_report', 'mode_gradients',
           'random_direction', 'reptile_scale', 'similarity']
