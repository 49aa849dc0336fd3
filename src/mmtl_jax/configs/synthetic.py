"""The embedded synthetic corpus (IEMOCAP layout) with the paper's settings.

The corpus is written once to <workdir>/synthetic_corpus (or --config.data.root) and reused::

  python experiments/preprocess.py --config=src/mmtl_jax/configs/synthetic.py --workdir=/tmp/pp
"""

import ml_collections

from mmtl_jax.configs import base


def get_config() -> ml_collections.ConfigDict:
  c = base.get_config()
  c.data.kind = 'synthetic'
  return c


__all__ = ['get_config']
