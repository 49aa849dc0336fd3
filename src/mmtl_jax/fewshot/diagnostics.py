"""The gradient-diagnostic curve of the glyph task: along a training run, how close are the
cheap meta-gradients (first order, Reptile, implicit) to the exact one?

Every `config.diagnostics_every` outer steps, on that step's task batch and at the current
(body, head) params, `meta.diagnostics.mode_gradients` computes the meta-gradient of ONE
reference objective, MAML's (config.method.maml: one SGD stage of `steps` steps on the support
loss, query loss outside; iMAML's lambda and CG steps from config.method.imaml), in mode exact
and each of config.diagnostics_modes (default first_order, reptile (rescaled by
1 / (lr * steps)) and implicit), and
`meta.diagnostics.compare_gradients` compares each with exact, globally and per leaf (cosine,
norm ratio, relative error). The reference is the same whichever method is being trained, so
curves of different runs are comparable; the hook's time is not in s_per_iter (its memory is
in peak_mem_mb).

Output per (method, way, shot): <dir>/<method>_<way>way<shot>shot.json ({'points': [{'step',
'global', 'layers'}]}) and a .png with the global cosine and norm ratio against the step.
"""

import os
from typing import Any, Callable, Dict, List, Tuple

import jax

from mmtl_jax import meta
from mmtl_jax.fewshot.systems import NET, Losses
from mmtl_jax.run.files import atomic_write_json, to_jsonable

MODES = ('first_order', 'reptile', 'implicit')  # the default of config.diagnostics_modes


def reference_spec(config: Any, losses: Losses) -> meta.MetaSpec:
  """MAML's meta-objective as one stage (the diagnostics compare estimators on it)."""
  m = config.method.maml
  return meta.recipes.maml(losses.support, losses.query, groups=NET, steps=int(m.steps),
                           lr=float(m.lr), strategy=str(m.strategy))


def compared_estimators(config: Any, modes: Tuple[str, ...]) -> Dict[str, meta.Estimator]:
  """{mode: estimator} of config.diagnostics_modes (with 'exact'): each `meta.MODES` name
  built with its defaults, but 'implicit' with config.method.imaml's lambda, CG steps and
  damped system (the iMAML being trained)."""
  im = config.method.imaml
  settings = {'implicit': dict(lam=float(im.lam), cg_steps=int(im.cg_steps),
                               damping=float(im.cg_damping),
                               lam_damping=float(im.cg_lam_damping))}
  return {mode: meta.MODES.get(mode)(**settings.get(mode, {})) for mode in modes}


def plot_curve(points: List[Dict[str, Any]], path: str, title: str) -> None:
  """Global cosine and norm ratio to exact of each mode against the outer step (PNG)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
  steps = [p['step'] for p in points]
  modes = list(points[0]['global']) if points else []
  for ax, key in zip(axes, ('cosine', 'norm_ratio')):
    for mode in modes:
      ax.plot(steps, [p['global'][mode][key] for p in points], marker='o', label=mode)
    ax.set_xlabel('outer step')
    ax.set_ylabel(f'{key} to exact')
    ax.grid(alpha=0.3)
  axes[0].legend()
  fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def hook_factory(config: Any, out_dir: str) -> Callable[..., Tuple[Callable, Callable]]:
  """make_hook(name, way, shot, method, losses) -> (hook for loop.train, finish() -> summary
  {'json', 'png', 'points', 'last'}) writing the curve of one record into out_dir.

  Raises:
    ValueError: config.diagnostics_every < 1.
  """
  every = int(config.diagnostics_every)
  if every < 1:
    raise ValueError(f'diagnostics_every must be >= 1, got {every}')
  modes = ('exact',) + tuple(config.get('diagnostics_modes', MODES))

  def make_hook(name, way, shot, method, losses):
    del method
    spec = reference_spec(config, losses)
    estimators = compared_estimators(config, modes)
    grads_fn = jax.jit(lambda p, b, r: meta.diagnostics.mode_gradients(
        spec, p, b, r, estimators, with_solve=True))
    points = []

    def hook(it, params, batch, rng):
      if it % every == 0:
        grads, solve = grads_fn({g: params[g] for g in NET}, batch, rng)
        point = dict(step=it, **meta.diagnostics.compare_gradients(grads))
        if solve:  # the implicit direction's solves: a failed check is marked in the curve
          solve = {k: float(v) for k, v in solve.items()}
          problems = meta.solve_problems(solve)
          point['implicit_solve'] = dict(solve, problems=problems, failed=bool(problems))
        points.append(point)

    def finish():
      os.makedirs(out_dir, exist_ok=True)
      stem = os.path.join(out_dir, f'{name}_{way}way{shot}shot')
      atomic_write_json(stem + '.json', to_jsonable(
          {'modes': modes, 'every': every, 'points': points}))
      plot_curve(points, stem + '.png', f'{name} training, {way}-way {shot}-shot: '
                 'meta-gradients of the MAML objective vs exact')
      return {'json': stem + '.json', 'png': stem + '.png', 'points': len(points),
              'last': points[-1]['global'] if points else {}}

    return hook, finish

  return make_hook


__all__ = ['compared_estimators', 'hook_factory', 'MODES', 'plot_curve', 'reference_spec']
