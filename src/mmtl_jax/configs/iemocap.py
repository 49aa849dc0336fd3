"""IEMOCAP with the paper's protocol: improvised dialogs, neu/ang/hap/sad (exc not merged),
V/A/D auxiliary tasks, leave-one-session-out folds. Only data.root has to be set::

  python experiments/preprocess.py --config=src/mmtl_jax/configs/iemocap.py \\
      --config.data.root=/data/IEMOCAP_full_release --workdir=/tmp/iemocap

Folds: the 5 session folds with dev and test swapped as well (folds.swap=True, 10 folds), so
that every one of the 10 speakers is tested once and the tables cover both genders; with
folds.swap=False only the 5 speakers of gender != folds.dev_gender (male) are ever tested.
Folds 0-4 are the same with or without swap, so --config.folds.which='(0, 1, 2, 3, 4)' gives the
5-fold runs.
"""

import ml_collections

from mmtl_jax.configs import base


def get_config() -> ml_collections.ConfigDict:
  c = base.get_config()
  c.data.kind = 'iemocap'
  c.folds.swap = True  # every speaker tested once (see the docstring)
  return c


__all__ = ['get_config']
