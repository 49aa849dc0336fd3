"""Flax modules of Table 1 (no training logic): the meta learner and the transfer learner."""

from mmtl_jax.models.meta_learner import BiLSTM, MetaLearner, compute_dtype
from mmtl_jax.models.transfer import TransferLearner

__all__ = ['BiLSTM', 'MetaLearner', 'TransferLearner', 'compute_dtype']
