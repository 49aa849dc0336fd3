"""EmoDB (../shared/data/emodb) through the CSV manifest reader: 4 emotions, 10 speakers,
leave-one-speaker-out folds. Auxiliary tasks: the perception test's recognition and
naturalness percentages, 4 bins each (the shared head has model.num_outputs = 4 outputs)::

  python experiments/preprocess.py --config=src/mmtl_jax/configs/emodb.py --workdir=/tmp/emodb

Bin edges are chosen so that the 339 utterances of the 4 classes fill every bin:
recognition_pct [80,90) 51, [90,95) 57, [95,100) 98, [100,101) 133;
naturalness_pct [45,70) 69, [70,80) 83, [80,90) 103, [90,101) 84.
"""

import os

import ml_collections

from mmtl_jax.configs import base

# <repo>/src/mmtl_jax/configs -> <repo>/../shared/data/emodb/annotations.csv
_DEFAULT_MANIFEST = os.path.normpath(os.path.join(
    os.path.dirname(os.path.abspath(__file__)), '..', '..', '..', '..', 'shared', 'data',
    'emodb', 'annotations.csv'))


def get_config() -> ml_collections.ConfigDict:
  c = base.get_config()
  c.data.kind = 'manifest'
  c.data.manifest = _DEFAULT_MANIFEST
  c.data.path_column = 'file'
  c.data.speaker_column = 'speaker'
  c.data.label_column = 'emotion'
  c.data.classes = ('neutral', 'anger', 'happiness', 'sadness')
  c.data.aux_tasks = ('recognition_pct', 'naturalness_pct')
  c.data.aux_columns = ml_collections.ConfigDict({
      'recognition_pct': (80.0, 90.0, 95.0, 100.0, 101.0),
      'naturalness_pct': (45.0, 70.0, 80.0, 90.0, 101.0),
  })
  c.folds.scheme = 'speaker'
  return c
