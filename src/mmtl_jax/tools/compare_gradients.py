"""Compares exact and first-order meta-gradients and the Reptile direction, layer by layer.

Used by experiments/compare_gradients.py: a thin caller of `mmtl_jax.meta.diagnostics` on the
MMTL spec of the SER model (`ser.mmtl_spec`). Everything runs in float64 (jax x64 enabled
inside a context, restored after) so a central finite difference can check the exact gradient.
"""

import json
import os
from typing import Any, Dict, Optional, Sequence

import jax
import numpy as np

import ml_collections

from mmtl_jax.data import features as features_lib
from mmtl_jax.meta import diagnostics
from mmtl_jax.run import checkpoint as ckpt_lib
from mmtl_jax.run import files
from mmtl_jax.run import progress
from mmtl_jax.ser import losses as ser


# The three gradients the layer table sets side by side.
COMPARED = ('exact', 'first_order', 'reptile')


def _float64_batch(config: Any) -> Dict[str, np.ndarray]:
  """The synthetic batch of config.compare, float arrays cast to float64 (labels kept)."""
  cc = config.compare
  batch = ser.random_batch(cc.tasks, cc.segments, cc.frames, cc.bins, cc.num_aux,
                           config.model.num_outputs, seed=cc.batch_seed)
  return {k: v.astype(np.float64) if v.dtype == np.float32 else v for k, v in batch.items()}


def _tool_format(report: Dict[str, Any]) -> Dict[str, Any]:
  """The diagnostics report in this tool's keys: first-order stats at the top level of each
  layer row, Reptile's prefixed 'reptile_'."""
  layers = []
  for row in report['layers']:
    out = {k: row[k] for k in ('name', 'size', 'exact_norm')}
    out.update(row['first_order'])
    out.update({f'reptile_{k}': v for k, v in row['reptile'].items()})
    layers.append(out)
  fd = report['finite_difference']
  return {'finite_difference': {k: fd[k] for k in ('eps', 'fd', 'exact', 'first_order',
                                                     'relative_error')},
          'layers': layers,
          'global': {m: report['global'][m] for m in ('first_order', 'reptile')}}


def compare(config: Any, params: Optional[Dict[str, Any]] = None,
            checkpoints: Sequence[Dict[str, Any]] = ()) -> Dict[str, Any]:
  """Gradients at `params` (default: a fresh init) on a synthetic batch; see module docstring.

  Returns {'finite_difference': {...,'relative_error'}, 'layers': [...], 'global': {...},
  'checkpoints': [{'layers', 'global', 'finite_difference'}] for each extra params}.
  """
  cc = config.compare
  config = ml_collections.ConfigDict(config.to_dict())
  config.meta.mode = 'exact'
  spec = ser.mmtl_spec(config)
  report = diagnostics.make_gradient_report(
      spec, _float64_batch(config), jax.random.PRNGKey(config.seed), estimators=COMPARED,
      fd_eps=cc.fd_eps, direction_seed=cc.direction_seed)
  name = 'initial parameters' if params is None else 'given parameters'
  if params is None:
    with jax.enable_x64(True):  # a float64 model initialises in float64
      params = ser.init_params(config.model, jax.random.PRNGKey(config.seed),
                               (1, cc.frames, cc.bins))
  # Minutes of float64 compilation and finite differences per parameter set: a line when
  # each starts and, while it runs, every config.train.report_every_s seconds.
  with progress.Progress('gradients', 1 + len(checkpoints), every_s=progress.interval(config),
                         heartbeat=True, announce=True) as reporter:
    def timed(name: str, p: Dict[str, Any]) -> Dict[str, Any]:
      reporter.start(name, 1)
      out = _tool_format(report(p))
      reporter.finish()
      return out

    result = timed(name, params)
    result['checkpoints'] = [timed(f'checkpoint {i + 1}/{len(checkpoints)}', p)
                             for i, p in enumerate(checkpoints)]
  m = config.meta
  result['settings'] = {'alpha': float(m.alpha), 'beta': float(m.beta),
                        'inner_steps': int(m.inner_steps),
                        'reptile_scaled_by': '1/(lr*inner_steps)',
                        'batch': [cc.tasks, cc.segments, cc.frames, cc.bins]}
  return result


# Where the run's config is found, from a fold directory upward: the workdir's config.json
# (ser/train.py), then the fold's inference bundle, then the workdir's results.json.
_RUN_CONFIGS = ('config.json', os.path.join('bundle', 'config.json'))


def locate(path: str) -> str:
  """The checkpoint directory `path` stands for (absolute; a relative path is taken from the
  current directory): a training step `<workdir>/<model>/<fold>/checkpoints/<step>` as is,
  a fold directory or its checkpoints/ as their latest step, anything else as is (an orbax
  PyTree checkpoint of {theta, phi}).

  Raises:
    MissingFileError: `path` is not a directory, or a fold directory without any step.
  """
  full = os.path.abspath(os.path.expanduser(path))
  if not os.path.isdir(full):
    raise files.MissingFileError(
        f'no checkpoint directory, {full}, give a training checkpoint '
        '(<workdir>/mmtl/<fold>/checkpoints/<step>), a fold directory, or an orbax checkpoint '
        'of {theta, phi} in --checkpoints')
  if ckpt_lib.is_step_dir(full):
    return full
  directory = os.path.join(full, 'checkpoints') if os.path.isdir(
      os.path.join(full, 'checkpoints')) else full
  steps = ckpt_lib.step_dirs(directory)
  if steps:
    return steps[max(steps)]
  if directory != full:
    raise files.MissingFileError(f'no complete checkpoint step in {directory}, {full}, train '
                                 'that fold first (or give another checkpoint)')
  return full


def run_config(step_dir: str) -> Optional[Dict[str, Any]]:
  """The config (plain JSON) of the training run a step directory belongs to, or None: the
  first of <dir>/config.json, <dir>/bundle/config.json, <dir>/results.json's 'config' for
  <dir> the step's parents (fold, seed, model, workdir)."""
  directory = os.path.dirname(os.path.dirname(step_dir))  # .../<fold>/checkpoints/<step>
  for _ in range(4):
    for name in _RUN_CONFIGS:
      path = os.path.join(directory, name)
      if os.path.isfile(path):
        return files.read_json(path, 'start the training command of that workdir again')
    results = os.path.join(directory, 'results.json')
    if os.path.isfile(results):
      return files.read_json(results, 'start the training command again').get('config')
    directory = os.path.dirname(directory)
  return None


def restore(path: str) -> Dict[str, Any]:
  """{'theta', 'phi'} of a checkpoint (see `locate`): a training checkpoint's current params
  ('params' of ser/train.py's TrainState), or an orbax PyTree checkpoint of {theta, phi}.

  Raises:
    MissingFileError / DamagedFileError: one line naming `path`; CheckpointFormatError for a
    training checkpoint of another format.
  """
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  full = locate(path)
  if ckpt_lib.is_step_dir(full):
    state, _ = ckpt_lib.read_step(full)
    params = state.get('params', {}) if isinstance(state, dict) else {}
    if not {'theta', 'phi'} <= set(params):
      raise files.DamagedFileError(
          f"a training checkpoint without MMTL's theta and phi (params: {sorted(params)}), "
          f'{full}, give a checkpoint of the mmtl system (<workdir>/mmtl/<fold>/...)')
    return {'theta': params['theta'], 'phi': params['phi']}
  try:
    restored = ocp.PyTreeCheckpointer().restore(full)
    return {'theta': restored['theta'], 'phi': restored['phi']}
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise files.DamagedFileError(f'unreadable checkpoint ({type(e).__name__}: '
                                 f'{str(e).splitlines()[0] if str(e) else ""}), {full}, give a '
                                 'training checkpoint (<workdir>/mmtl/<fold>/checkpoints/<step>'
                                 '), a fold directory, or an orbax checkpoint of {theta, phi} '
                                 'in --checkpoints') from e


def config_for_run(config: Any, run: Dict[str, Any]) -> ml_collections.ConfigDict:
  """`config` with the trained run's model (computed in float64), its segment shape
  (frames, bins), its number of auxiliary tasks and its inner rates and steps, so that the
  checkpoint's params fit and are differentiated under the settings they were trained with.
  """
  out = ml_collections.ConfigDict(config.to_dict())
  model = dict(run['model'])
  model['dtype'] = 'float64'
  out.model = ml_collections.ConfigDict(ckpt_lib.lists_to_tuples(model))
  features = ml_collections.ConfigDict(run['features'])
  out.compare.frames = int(features.n_frames)
  out.compare.bins = int(features_lib.n_bins(features))
  out.compare.num_aux = len(run['data']['aux_tasks'])
  for field in ('alpha', 'beta', 'inner_steps'):
    out.meta[field] = run['meta'][field]
  return out


def restore_all(config: Any, paths: Sequence[str]
                ) -> tuple[ml_collections.ConfigDict, list[Dict[str, Any]], list[str]]:
  """(config fitted to the checkpoints' run, their {theta, phi}, their resolved directories).

  Training checkpoints bring their run's config (`run_config`, `config_for_run`); they must
  all come from runs of one model. Legacy {theta, phi} checkpoints use `config` as given.

  Raises:
    CheckpointMismatchError (an ExpectedError): the checkpoints come from runs of different
    models; see `locate` and `restore` for the others.
  """
  located = [locate(p) for p in paths]
  runs = [run_config(p) for p in located if ckpt_lib.is_step_dir(p)]
  runs = [r for r in runs if r is not None]
  models = {json.dumps(r.get('model'), sort_keys=True) for r in runs}
  if len(models) > 1:
    raise ckpt_lib.CheckpointMismatchError(
        f'the checkpoints come from runs of {len(models)} different models, --checkpoints, '
        'compare checkpoints of one run (or of runs with the same config.model) at a time')
  if runs:
    config = config_for_run(config, runs[0])
  return config, [restore(p) for p in located], located


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


__all__ = [
    'compare', 'COMPARED', 'config_for_run', 'locate', 'plot', 'restore', 'restore_all',
    'run_config',
]
