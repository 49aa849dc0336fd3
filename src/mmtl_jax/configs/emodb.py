"""EmoDB through the CSV manifest reader: 4 emotions, 10 speakers, leave-one-speaker-out
folds. Auxiliary tasks: the perception test's recognition and naturalness percentages, 4 bins
each (the shared head has model.num_outputs = 4 outputs). data.manifest.path is required: the
CSV of your EmoDB copy (columns file, speaker, emotion, recognition_pct, naturalness_pct; the
README says how to build it)::

  python experiments/preprocess.py --config=src/mmtl_jax/configs/emodb.py \
      --config.data.manifest.path=/data/emodb/annotations.csv --workdir=/tmp/emodb

Bin edges are chosen so that the 339 utterances of the 4 classes fill every bin:
recognition_pct [80,90) 51, [90,95) 57, [95,100) 98, [100,101) 133;
naturalness_pct [45,70) 69, [70,80) 83, [80,90) 103, [90,101) 84.
"""

import ml_collections

from mmtl_jax.configs import base

def get_config() -> ml_collections.ConfigDict:
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
