"""Data: corpora (IEMOCAP layout, CSV manifests, synthetic), features, folds, task batches.

Data flow: `read_corpus` (the reader of config.data.kind in `CORPORA`) ->
`build_feature_store` (cached spectrogram segments) -> `make_folds` -> `TaskSampler.batch(step)`
for meta-training.
"""

from mmtl_jax import extras

extras.require('ser', 'mmtl_jax.data')  # before any import that needs the extra


from mmtl_jax.data.corpus import CORPORA, read_corpus
from mmtl_jax.data.features import file_features, waveform_features
from mmtl_jax.data.folds import Fold, class_weights, make_folds, speaker_class_weights
from mmtl_jax.data.sampler import TaskSampler
from mmtl_jax.data.store import FeatureStore, build_feature_store, format_summary, load_store

__all__ = [
    'CORPORA', 'Fold', 'FeatureStore', 'TaskSampler', 'build_feature_store',
    'class_weights', 'file_features', 'format_summary', 'load_store', 'make_folds',
    'read_corpus', 'speaker_class_weights', 'waveform_features',
]
