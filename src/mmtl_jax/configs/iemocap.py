"""IEMOCAP with the paper's protocol: improvised dialogs, neu/ang/hap/sad (exc not merged),
V/A/D auxiliary tasks, 5 leave-one-session-out folds. Only data.root has to be set::

  python experiments/preprocess.py --config=src/mmtl_jax/configs/iemocap.py \\
      --config.data.root=/data/IEMOCAP_full_release --workdir=/tmp/iemocap
"""

import ml_collections

from mmtl_jax.configs import base


def get_config() -> ml_collections.ConfigDict:
  c = base.get_config()
  c.data.kind = 'iemocap'
  return c
