"""Compares exact and first-order meta-gradients and the Reptile direction, layer by layer.

Used by experiments/compare_gradients.py. Everything runs in float64 (jax x64 enabled inside a
context, restored after) so a central finite difference can check the exact gradient.
"""

from typing import Any, Callable, Dict, List, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mmtl_jax import meta
from mmtl_jax.ser import losses as ser


# The three gradients the layer table sets side by side.
COMPARED = ('exact', 'first_order', 'reptile')

def _leaves_with_names(tree: Any) -> List:
  flat, _ = jax.tree_util.tree_flatten_with_path(tree)
  names = ['/'.join(str(getattr(k, 'key', k)) for k in path) for path, _ in flat]
  return list(zip(names, [np.asarray(v, np.float64).ravel() for _, v in flat]))


def _stats(approx: np.ndarray, exact: np.ndarray) -> Dict[str, float]:
  ne, na = np.linalg.norm(exact), np.linalg.norm(approx)
  denom = max(ne * na, 1e-300)
  return {'cosine': float(approx @ exact / denom), 'norm_ratio': float(na / max(ne, 1e-300)),
          'relative_error': float(np.linalg.norm(approx - exact) / max(ne, 1e-300))}


def layer_table(exact: Any, first_order: Any, reptile: Any) -> List[Dict[str, Any]]:
  """Per-leaf stats of first_order (top-level keys) and reptile (reptile_*) vs exact."""
  rows = []
  for (name, e), (_, f), (_, r) in zip(*map(_leaves_with_names, (exact, first_order, reptile))):
    row = {'name': name, 'size': int(e.size), 'exact_norm': float(np.linalg.norm(e))}
    row.update(_stats(f, e))
    row.update({f'reptile_{k}': v for k, v in _stats(r, e).items()})
    rows.append(row)
  return rows


def _to64(tree: Any) -> Any:
  return jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), tree)


def _float64_batch(config: Any) -> Dict[str, np.ndarray]:
  """The synthetic batch of config.compare, float arrays cast to float64 (labels kept)."""
  cc = config.compare
  batch = ser.random_batch(cc.tasks, cc.segments, cc.frames, cc.bins, cc.num_aux,
                           config.model.num_outputs, seed=cc.batch_seed)
  return {k: v.astype(np.float64) if v.dtype == np.float32 else v for k, v in batch.items()}


def _gradients_fn(batch: Dict[str, Any], rng: jax.Array, losses: tuple,
                  cfgs: Dict[str, Any]) -> Callable[[Any], Dict[str, Any]]:
  """jit: params -> {mode: meta-gradient} for every mode of COMPARED, in float64."""
  inner_loss, transfer_loss = losses
  steps = cfgs['exact'].inner_steps

  @jax.jit
  def gradients(p):
    p = _to64(p)
    grads = {mode: meta.meta_gradient(p, batch, rng, inner_loss, transfer_loss, c)[0]
             for mode, c in cfgs.items()}
    # Reptile's direction is lr * steps * (a gradient): rescale so norms are comparable.
    grads['reptile'] = {
        'theta': jax.tree.map(lambda g: g / (cfgs['exact'].alpha * steps),
                              grads['reptile']['theta']),
        'phi': jax.tree.map(lambda g: g / (cfgs['exact'].beta * steps),
                            grads['reptile']['phi'])}
    return grads

  return gradients


def _finite_difference_fn(batch: Dict[str, Any], rng: jax.Array, losses: tuple,
                          exact: Any, cc: Any) -> Callable[[Any, Dict[str, Any]], tuple]:
  """jit: (params, grads) -> (fd, <grads['exact'], d>, <grads['first_order'], d>).

  fd is the central finite difference of the `exact` meta objective along a random unit
  direction d (fixed by cc.direction_seed), so it checks the exact gradient's projection.
  """
  inner_loss, transfer_loss = losses

  @jax.jit
  def finite_difference(p, grads):
    p = _to64(p)
    leaves, treedef = jax.tree.flatten(p)
    keys = jax.random.split(jax.random.PRNGKey(cc.direction_seed), len(leaves))
    direction = [jax.random.normal(k, l.shape, jnp.float64) for k, l in zip(keys, leaves)]
    norm = jnp.sqrt(sum(jnp.sum(d ** 2) for d in direction))
    direction = treedef.unflatten([d / norm for d in direction])
    objective = lambda q: meta.meta_objective(q, batch, rng, inner_loss, transfer_loss, exact)
    shift = lambda s: jax.tree.map(lambda x, d: x + s * cc.fd_eps * d, p, direction)
    fd = (objective(shift(1.0)) - objective(shift(-1.0))) / (2 * cc.fd_eps)
    dot = lambda g: sum(jnp.vdot(a, b) for a, b in zip(jax.tree.leaves(g),
                                                        jax.tree.leaves(direction)))
    return fd, dot(grads['exact']), dot(grads['first_order'])

  return finite_difference


def _analyse(p: Any, gradients: Callable, finite_difference: Callable,
             fd_eps: float) -> Dict[str, Any]:
  """{'finite_difference', 'layers', 'global'} of `compare` at params `p`."""
  grads = gradients(p)
  fd, analytic, first_order = map(float, finite_difference(p, grads))
  flat = lambda g: np.concatenate([v for _, v in _leaves_with_names(g)])
  return {
      'finite_difference': {
          'eps': fd_eps, 'fd': fd, 'exact': analytic, 'first_order': first_order,
          'relative_error': abs(fd - analytic) / max(abs(fd), 1e-300)},
      'layers': layer_table(grads['exact'], grads['first_order'], grads['reptile']),
      'global': {'first_order': _stats(flat(grads['first_order']), flat(grads['exact'])),
                 'reptile': _stats(flat(grads['reptile']), flat(grads['exact']))},
  }


def compare(config: Any, params: Optional[Dict[str, Any]] = None,
            checkpoints: Sequence[Dict[str, Any]] = ()) -> Dict[str, Any]:
  """Gradients at `params` (default: a fresh init) on a synthetic batch; see module docstring.

  Returns {'finite_difference': {...,'relative_error'}, 'layers': [...], 'global': {...},
  'checkpoints': [{'layers', 'global', 'finite_difference'}] for each extra params}.
  """
  with jax.enable_x64(True):
    cc = config.compare
    model = config.model
    batch = _float64_batch(config)
    losses = ser.make_losses(model)
    rng = jax.random.PRNGKey(config.seed)
    cfgs = {mode: meta.MetaConfig.from_config(dict(config.meta.to_dict(), mode=mode))
            for mode in COMPARED}
    gradients = _gradients_fn(batch, rng, losses, cfgs)
    finite_difference = _finite_difference_fn(batch, rng, losses, cfgs['exact'], cc)
    if params is None:
      params = ser.init_params(model, jax.random.PRNGKey(config.seed), (1, cc.frames, cc.bins))
    result = _analyse(params, gradients, finite_difference, cc.fd_eps)
    result['checkpoints'] = [_analyse(p, gradients, finite_difference, cc.fd_eps)
                             for p in checkpoints]
    result['settings'] = {'alpha': cfgs['exact'].alpha, 'beta': cfgs['exact'].beta,
                          'inner_steps': cfgs['exact'].inner_steps,
                          'reptile_scaled_by': '1/(lr*inner_steps)',
                          'batch': [cc.tasks, cc.segments, cc.frames, cc.bins]}
    return result


def plot(result: Dict[str, Any], path: str) -> None:
  """Bar chart per layer: cosine to exact (FO, Reptile) and relative error of FO."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  layers = result['layers']
  names = [l['name'] for l in layers]
  x = np.arange(len(names))
  fig, axes = plt.subplots(2, 1, figsize=(max(8, 0.5 * len(names)), 7), sharex=True)
  axes[0].bar(x - 0.2, [l['cosine'] for l in layers], 0.4, label='first-order vs exact')
  axes[0].bar(x + 0.2, [l['reptile_cosine'] for l in layers], 0.4, label='Reptile vs exact')
  axes[0].set_ylabel('cosine similarity')
  axes[0].axhline(0.0, color='k', lw=0.5)
  axes[0].legend()
  axes[1].bar(x, [l['relative_error'] for l in layers], 0.6, color='C2')
  axes[1].set_yscale('log')
  axes[1].set_ylabel('|FO - exact| / |exact|')
  axes[1].set_xticks(x, names, rotation=60, ha='right', fontsize=8)
  fd = result['finite_difference']['relative_error']
  fig.suptitle(f'Meta-gradients per layer (exact vs central FD: rel. error {fd:.1e})')
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
