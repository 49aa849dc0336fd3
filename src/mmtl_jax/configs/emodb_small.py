"""EmoDB (real speech) at the demo's laptop-CPU scale: 4 emotions, leave-one-speaker-out
(10 folds), auxiliary tasks from the perception test's ratings::

  python experiments/train.py --config=src/mmtl_jax/configs/emodb_small.py \
      --config.data.manifest.path=/data/emodb/annotations.csv --workdir=runs/emodb

The same variants as configs/emodb.py after ':' ('sex', 'quick'), e.g. emodb_small.py:quick
(one fold, few steps, all systems: under 3 minutes on 2 CPU cores, see the README).
"""

import ml_collections

from mmtl_jax.configs import demo
from mmtl_jax.configs import emodb


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  c = demo.scale_down(emodb.get_config())
  # Chosen on dev speakers only (docs/SETTINGS.md has the sweep's figures).
  c.meta.gamma = 0.003
  c.train.baseline_lr.cnn_lstm = 0.01
  c.train.baseline_lr.cnn_lstm_mtl = 0.01
  return emodb.variants(c, arg)


__all__ = ['get_config']
