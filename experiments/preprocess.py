"""Builds (or reuses) the feature store of a config and prints a corpus summary.

  python experiments/preprocess.py --workdir=/tmp/pp
  python experiments/preprocess.py --config=src/mmtl_jax/configs/iemocap.py \
      --config.data.root=/data/IEMOCAP_full_release --workdir=/tmp/iemocap

The last line printed is the path of the store's JSON manifest.
"""

from absl import app
from absl import flags
from ml_collections import config_flags

from mmtl_jax import configs
from mmtl_jax.data import store as store_lib

_CONFIG = config_flags.DEFINE_config_file(
    'config', configs.config_path('synthetic'), 'Config file (get_config()).')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Experiment directory (features cache).')
flags.mark_flags_as_required(['workdir'])


def main(argv):
  del argv
  store = store_lib.build_feature_store(_CONFIG.value, _WORKDIR.value)
  print(store_lib.format_summary(store))
  print(store.manifest_path)


if __name__ == '__main__':
  app.run(main)
