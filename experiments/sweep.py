r"""Grid search chosen on the dev speakers: one training run per grid point, then the best
point per system by mean dev UA (test scores are never read).

  python experiments/sweep.py --workdir=runs/sweep_demo \
      --grid=meta.gamma=0.001,0.003,0.01 --grid=meta.mode=first_order,exact
  python experiments/sweep.py --config=src/mmtl_jax/configs/emodb_small.py \
      --config.data.manifest.path=/data/emodb/annotations.csv --workdir=runs/sweep_emodb \
      --grid=train.baseline_lr.cnn_lstm=0.001,0.003 --config.train.models=cnn_lstm

Writes <workdir>/sweep.json and sweep.md; rerunning the command resumes (finished points are
read back). Any --config.* flag applies to every point.
"""


from mmtl_jax import extras

extras.require_or_exit('ser', 'experiments/sweep.py')  # one line, not a traceback

from absl import app
from absl import flags
from absl import logging

from mmtl_jax import configs
from mmtl_jax.configs import quick
from mmtl_jax.ser import sweep
from mmtl_jax.ser import train
from mmtl_jax.run import errors

_CONFIG = errors.define_config_file('config', configs.config_path('demo'),
                                    'Experiment config file (get_config()).',
                                    quick=quick.apply)
_WORKDIR = flags.DEFINE_string('workdir', 'runs/sweep', 'Sweep directory (resumable).')
_GRID = flags.DEFINE_multi_string(
    'grid', [], "A grid axis 'field=v1,v2,...' (repeat the flag for more axes; use ';' "
    "between values that contain commas).")


def main(argv):
  if not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  grid = sweep.parse_grid(_GRID.value)
  if not grid:
    raise app.UsageError('give at least one --grid=field=v1,v2')
  content = sweep.run_sweep(_CONFIG.value, grid, _WORKDIR.value, train.train_and_evaluate)
  print(sweep.markdown(content), end='')


if __name__ == '__main__':
  errors.run(main)
