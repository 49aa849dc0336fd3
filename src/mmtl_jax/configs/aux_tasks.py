"""Table 3: MMTL with a subset of the auxiliary tasks, on any base config.

The argument after ':' names the subset with the letters V, A, D (valence, activation,
dominance) and optionally the base config (default 'iemocap')::

  python experiments/train.py --config=src/mmtl_jax/configs/aux_tasks.py:VA \
      --config.data.root=/data/IEMOCAP_full_release --workdir=runs/iemocap_VA
  python experiments/train.py --config=src/mmtl_jax/configs/aux_tasks.py:VD,demo \
      --workdir=runs/demo_VD

Only MMTL is trained (the baselines do not depend on the subset).
"""

import importlib

import ml_collections

_NAMES = {'V': 'valence', 'A': 'activation', 'D': 'dominance'}


def get_config(arg: str = 'VAD') -> ml_collections.ConfigDict:
  subset, _, base = arg.partition(',')
  subset = subset.strip().upper()
  if not subset or any(ch not in _NAMES for ch in subset) or len(set(subset)) != len(subset):
    raise ValueError(f'auxiliary subset {subset!r}: use distinct letters of V, A, D (e.g. VA)')
  c = importlib.import_module(f'mmtl_jax.configs.{base.strip() or "iemocap"}').get_config()
  c.data.aux_tasks = tuple(_NAMES[ch] for ch in 'VAD' if ch in subset)
  c.train.models = ('mmtl',)
  return c


__all__ = ['get_config']
