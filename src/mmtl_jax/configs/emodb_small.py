"""EmoDB (real speech) at the demo's laptop-CPU scale: 4 emotions, leave-one-speaker-out
(10 folds), auxiliary tasks from the perception test's ratings::

  python experiments/train.py --config=src/mmtl_jax/configs/emodb_small.py \
      --config.data.manifest.path=/data/emodb/annotations.csv --workdir=runs/emodb
"""

import ml_collections

from mmtl_jax.configs import demo
from mmtl_jax.configs import emodb


def get_config() -> ml_collections.ConfigDict:
  return demo.scale_down(emodb.get_config())
