r"""A multi-seed study of the four systems with paired significance tests.

  python experiments/study.py --workdir=runs/study_demo --seeds=0,1,2
  python experiments/study.py --config=src/mmtl_jax/configs/emodb_small.py \
      --config.data.manifest.path=/data/emodb/annotations.csv --workdir=runs/study_emodb \
      --seeds=0,1,2

Arms: MMTL in the config's meta mode with CNN-LSTM and CNN-LSTM+MTL (one training run), and
MMTL in --reference_mode (default 'reptile_emotion', the paper's reference code). Every system
sees the same folds and seeds; MMTL in the config's mode is compared with each other system,
paired over (fold, seed): mean UA difference, 95% bootstrap interval, Wilcoxon p. Writes
<workdir>/study.json and study.md; rerunning resumes.
"""


from mmtl_jax import extras

extras.require_or_exit('ser', 'experiments/study.py')  # one line, not a traceback

from absl import app
from absl import flags
from absl import logging

from mmtl_jax import configs
from mmtl_jax.configs import quick
from mmtl_jax.ser import study
from mmtl_jax.ser import train
from mmtl_jax.run import errors

_CONFIG = errors.define_config_file('config', configs.config_path('demo'),
                                    'Experiment config file (get_config()).',
                                    quick=quick.apply)
_WORKDIR = flags.DEFINE_string('workdir', 'runs/study', 'Study directory (resumable).')
_SEEDS = flags.DEFINE_list('seeds', ['0', '1', '2'], 'Training seeds of every system.')
_REFERENCE_MODE = flags.DEFINE_string('reference_mode', 'reptile_emotion',
                                      'Meta mode of the second MMTL arm.')


def main(argv):
  if not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  config = _CONFIG.value
  config.train.seeds = study.parse_seeds(_SEEDS.value)
  arms = study.default_arms(config, _REFERENCE_MODE.value)
  content = study.run_study(config, arms, _WORKDIR.value, train.train_and_evaluate,
                           reference=arms[0].labels['mmtl'])
  print(study.markdown(content), end='')


if __name__ == '__main__':
  errors.run(main)
