"""Builds (or reuses) the feature store of a config and prints a corpus summary.

  python experiments/preprocess.py --workdir=/tmp/pp
  python experiments/preprocess.py --config=src/mmtl_jax/configs/iemocap.py \
      --config.data.root=/data/IEMOCAP_full_release --workdir=/tmp/iemocap

The whole config is checked first: every problem is reported at once (exit status 1) before
any feature is extracted. The last line printed is the path of the store's JSON manifest.
"""

from mmtl_jax import extras

extras.require_or_exit('ser', 'experiments/preprocess.py')  # one line, not a traceback

from absl import flags

from mmtl_jax import configs
from mmtl_jax.data import store as store_lib
from mmtl_jax.ser import config_check
from mmtl_jax.run import errors

_CONFIG = errors.define_config_file(
    'config', configs.config_path('synthetic'), 'Config file (get_config()).')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Experiment directory (features cache).')
flags.mark_flags_as_required(['workdir'])


def main(argv):
  del argv
  config_check.check_config(_CONFIG.value)  # every problem at once, one line (run/errors.py)
  store = store_lib.build_feature_store(_CONFIG.value, _WORKDIR.value)
  print(store_lib.format_summary(store))
  print(store.manifest_path)


if __name__ == '__main__':
  errors.run(main)
