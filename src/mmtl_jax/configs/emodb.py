"""EmoDB through the CSV manifest reader: 4 emotions, 10 speakers, leave-one-speaker-out
folds. Auxiliary tasks: the perception test's recognition and naturalness percentages, 4 bins
each (the shared head has model.num_outputs = 4 outputs). data.manifest.path is required: the
CSV of your EmoDB copy (columns file, speaker, emotion, recognition_pct, naturalness_pct),
which experiments/prepare_emodb.py writes from the original download::

  python experiments/prepare_emodb.py /data/emodb      # -> /data/emodb/annotations.csv
  python experiments/preprocess.py --config=src/mmtl_jax/configs/emodb.py \
      --config.data.manifest.path=/data/emodb/annotations.csv --workdir=/tmp/emodb

Variants after ':' (comma-separated): 'sex' takes the speaker's sex as the auxiliary task
instead of the ratings, for a download without the perception test's erkennung.txt (the
manifest then has no rating columns); 'quick' applies configs/quick.py (one fold, few steps),
e.g. --config=src/mmtl_jax/configs/emodb.py:sex,quick.

Bin edges are chosen so that the 339 utterances of the 4 classes fill every bin:
recognition_pct [80,90) 51, [90,95) 57, [95,100) 98, [100,101) 133;
naturalness_pct [45,70) 69, [70,80) 83, [80,90) 103, [90,101) 84.
"""

import ml_collections

from mmtl_jax.configs import base
from mmtl_jax.configs import quick

VARIANTS = ('sex', 'quick')


def variants(c: ml_collections.ConfigDict, arg: str) -> ml_collections.ConfigDict:
  """`c` with the comma-separated VARIANTS in `arg` applied (see module docstring)."""
  names = [a.strip() for a in arg.split(',') if a.strip()]
  unknown = [n for n in names if n not in VARIANTS]
  if unknown:
    raise ValueError(f'unknown EmoDB config variant(s) {unknown}: use any of {list(VARIANTS)}')
  if 'sex' in names:  # M / F; only here, so the default config's fields stay as they were
    c.data.aux_tasks = ('sex',)
    c.data.manifest.aux_columns.sex = 'categorical'
  if 'quick' in names:
    quick.apply(c)
  return c


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  return variants(_config(), arg)


def _config() -> ml_collections.ConfigDict:
  c = base.get_config()
  c.data.kind = 'manifest'
  c.data.manifest.path_column = 'file'
  c.data.manifest.speaker_column = 'speaker'
  c.data.manifest.label_column = 'emotion'
  c.data.classes = ('neutral', 'anger', 'happiness', 'sadness')
  c.data.aux_tasks = ('recognition_pct', 'naturalness_pct')
  c.data.manifest.aux_columns = ml_collections.ConfigDict({
      'recognition_pct': (80.0, 90.0, 95.0, 100.0, 101.0),
      'naturalness_pct': (45.0, 70.0, 80.0, 90.0, 101.0),
  })
  c.folds.scheme = 'speaker'
  return c


__all__ = ['get_config', 'VARIANTS', 'variants']
