"""The gradient-diagnostic curve of MMTL: how far the cheap meta-gradients are from the exact
one as meta-training goes on (issue 11).

  result = gradient_curve.curve(config, workdir, every=10)   # {'records': [...], 'settings'}
  gradient_curve.plot(result, 'curve.png'); print(gradient_curve.format_table(result))

MMTL trains on the first fold of config.folds exactly as `mmtl_jax.ser.train` does (same
init key, `TaskSampler.batch(step)` and fold_in(key(seed), step) for steps 1..train.steps,
the same `System.train_step`), with no dev selection, checkpoints or evaluation. At step 0
and every `every` steps (and the last) `meta.diagnostics.make_gradient_hook` compares each
mode's meta-gradient with the exact one at the current params, on ONE fixed diagnostic task
batch (`sampler.batch(0)`, never trained on) and key, so the curve moves only with the
params. Each record is {'step', 'mode', 'group' ('all' | 'theta' | 'phi'), 'cosine',
'norm_ratio'}. Reptile's direction is divided by lr * steps of each group's stage; the
'reptile_emotion' direction (Reptile plus the first-order gradient) is not rescaled, so only
its cosine is comparable. Everything runs in the config's dtype (float32 by default): use
experiments/compare_gradients.py for a float64 check against finite differences.
"""

import dataclasses
from typing import Any, Dict, List, Optional, Sequence

import jax
import ml_collections

from mmtl_jax import meta
from mmtl_jax.data import folds as folds_lib
from mmtl_jax.data import sampler as sampler_lib
from mmtl_jax.data import store as store_lib
from mmtl_jax.meta import diagnostics
from mmtl_jax.ser import config_check
from mmtl_jax.ser import losses as ser
from mmtl_jax.ser import systems as systems_lib

MODES = ('first_order', 'reptile', 'reptile_emotion')
GROUPS = ('all', 'theta', 'phi')  # 'all': both groups as one vector


@dataclasses.dataclass(frozen=True)
class Setup:
  """What the curve's training loop needs (built by `setup`)."""
  system: systems_lib.System
  sampler: sampler_lib.TaskSampler
  input_shape: tuple
  key: jax.Array
  fold: Any


def setup(config: ml_collections.ConfigDict, workdir: str) -> Setup:
  """The feature store of config under workdir (built if absent), its first fold's sampler
  and the MMTL system; ValueError for a config `check_config` rejects."""
  config_check.check_config(config)
  store = store_lib.build_feature_store(config, workdir)
  fold = folds_lib.make_folds(store, config)[0]
  sampler = sampler_lib.TaskSampler(store, fold.train_speakers, config, int(config.seed))
  return Setup(systems_lib.make_system('mmtl', config), sampler,
               (1,) + tuple(store.features.shape[1:]), jax.random.key(int(config.seed)), fold)


def records_of(metrics: Dict[str, Any], step: int, modes: Sequence[str]) -> List[Dict[str, Any]]:
  """The hook's {'{mode}/cosine', '{mode}/{group}/norm_ratio', ...} as curve records."""
  out = []
  for mode in modes:
    for group in GROUPS:
      prefix = mode if group == 'all' else f'{mode}/{group}'
      out.append({'step': int(step), 'mode': mode, 'group': group,
                  'cosine': float(metrics[f'{prefix}/cosine']),
                  'norm_ratio': float(metrics[f'{prefix}/norm_ratio'])})
  return out


def _due(step: int, every: int, steps: int) -> bool:
  return step % every == 0 or step == steps


def curve(config: ml_collections.ConfigDict, workdir: str, every: int = 10,
          modes: Sequence[str] = MODES, steps: Optional[int] = None) -> Dict[str, Any]:
  """Meta-trains MMTL for `steps` (default config.train.steps) and records the diagnostics
  at steps 0, every, 2 * every, ..., steps (module docstring).

  Returns {'records': [{'step', 'mode', 'group', 'cosine', 'norm_ratio'}], 'settings': {...}}.
  Raises ValueError for every < 1, steps < 0, or a mode of neither `meta.MODES` nor 'exact'.
  """
  steps = int(config.train.steps) if steps is None else int(steps)
  if every < 1 or steps < 0:
    raise ValueError(f'every must be >= 1 and steps >= 0, got every={every}, steps={steps}')
  modes = tuple(m for m in modes if m != 'exact')  # exact is the reference, not a curve
  for mode in modes:
    meta.MODES.get(mode)  # ValueError naming the registered modes
  s = setup(config, workdir)
  spec = ser.mmtl_spec(config)
  hook = jax.jit(diagnostics.make_gradient_hook(spec, modes))
  diag_batch = s.sampler.batch(0)  # training draws steps 1..steps: this batch stays unseen
  init_key = jax.random.fold_in(s.key, 0)  # train.create_state's
  diag_key = jax.random.fold_in(init_key, 1)
  params = s.system.init(init_key, s.input_shape)
  opt_state = s.system.init_opt(params)
  step_fn = jax.jit(s.system.train_step, donate_argnums=(0, 1))
  records = records_of(hook(params, diag_batch, diag_key), 0, modes)
  for step in range(1, steps + 1):
    params, opt_state, _ = step_fn(params, opt_state, s.sampler.batch(step),
                                   jax.random.fold_in(s.key, step))
    if _due(step, every, steps):
      records += records_of(hook(params, diag_batch, diag_key), step, modes)
  m = config.meta
  settings = {'fold': s.fold.index, 'steps': steps, 'every': every, 'modes': list(modes),
              'train_mode': str(m.mode), 'alpha': float(m.alpha), 'beta': float(m.beta),
              'inner_steps': int(m.inner_steps), 'gamma': float(m.gamma),
              'diagnostic_batch': list(diag_batch['x'].shape),
              'reptile_scaled_by': '1/(lr*inner_steps) per group'}
  return {'records': records, 'settings': settings}


def _series(records: Sequence[Dict[str, Any]], mode: str, group: str, field: str):
  rows = [r for r in records if r['mode'] == mode and r['group'] == group]
  return [r['step'] for r in rows], [r[field] for r in rows]


def plot(result: Dict[str, Any], path: str) -> None:
  """PNG: cosine to exact (top) and norm ratio (bottom) vs step, a line per mode, a column
  per group. Matplotlib's object API (no pyplot, no global backend change)."""
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  records = result['records']
  modes = list(dict.fromkeys(r['mode'] for r in records))
  groups = [g for g in GROUPS if any(r['group'] == g for r in records)]
  fig = Figure(figsize=(4.5 * len(groups), 6.5))
  axes = fig.subplots(2, len(groups), sharex=True, squeeze=False)
  for j, group in enumerate(groups):
    for i, mode in enumerate(modes):  # styles differ: modes can coincide (FO, reptile_emotion)
      style = {'ls': ('-', '--', ':', '-.')[i % 4], 'marker': 'os^x'[i % 4], 'ms': 4,
               'label': mode}
      for row, field in enumerate(('cosine', 'norm_ratio')):
        axes[row, j].plot(*_series(records, mode, group, field), **style)
    axes[0, j].set_title(f'{group}: vs exact meta-gradient')
    axes[1, j].set_xlabel('meta-training step')
    for ax in axes[:, j]:
      ax.axhline(1.0, color='k', lw=0.5)
      ax.ticklabel_format(axis='y', useOffset=False)
  axes[0, 0].set_ylabel('cosine similarity')
  axes[1, 0].set_ylabel('|approx| / |exact|')
  axes[0, 0].legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=100)


def format_table(result: Dict[str, Any]) -> str:
  """One line per step: each mode's cosine to exact (all / theta / phi) and global norm
  ratio |approx| / |exact|."""
  records = result['records']
  modes = list(dict.fromkeys(r['mode'] for r in records))
  at = {(r['step'], r['mode'], r['group']): r for r in records}
  sub = f" | {'cos all':>7} {'theta':>7} {'phi':>7} {'|a|/|e|':>7}"
  lines = [f"{'':>5}" + ''.join(f' | {m:<31}' for m in modes), f"{'step':>5}" + sub * len(modes)]
  for step in sorted({r['step'] for r in records}):
    line = f'{step:>5}'
    for m in modes:
      cos = ' '.join(f"{at[(step, m, g)]['cosine']:7.4f}" for g in GROUPS)
      line += f" | {cos} {at[(step, m, 'all')]['norm_ratio']:7.3f}"
    lines.append(line)
  return '\n'.join(line.rstrip() for line in lines)


__all__ = ['GROUPS', 'MODES', 'Setup', 'curve', 'format_table', 'plot', 'records_of', 'setup']
