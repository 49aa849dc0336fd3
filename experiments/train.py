"""Trains and evaluates MMTL and the baselines over all folds; writes results.json/md.

  python experiments/train.py                       # the demo on the synthetic corpus
  python experiments/train.py --config=src/mmtl_jax/configs/iemocap.py \
      --config.data.root=/data/IEMOCAP_full_release --workdir=runs/iemocap
  python experiments/train.py --config.meta.mode=exact --config.train.steps=300

Start the same command again to resume an interrupted run.
"""

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from mmtl_jax import configs
from mmtl_jax import train

_CONFIG = config_flags.DEFINE_config_file('config', configs.config_path('demo'),
                                          'Experiment config file (get_config()).')
_WORKDIR = flags.DEFINE_string('workdir', 'runs/demo', 'Experiment directory (resumable).')


def main(argv):
  if not flags.FLAGS['verbosity'].present:  # orbax logs every save at INFO
    logging.set_verbosity(logging.WARNING)
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)


if __name__ == '__main__':
  app.run(main)
