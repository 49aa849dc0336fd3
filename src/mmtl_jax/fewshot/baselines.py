"""Trivial baselines that a meta-learner must beat on the same test episodes.

  nearest_centroid   pixels: each query image takes the label of the nearest class mean of
                     the support images (Euclidean distance on raw [0, 1] pixels). No
                     training at all; it measures how easy the domain is at the pixel level.

The other baseline, `finetune` (the network without meta-training, fine-tuned on each support
set), is a `systems.System` because it uses the same network and adaptation machinery.
"""

from typing import Dict

import numpy as np

BASELINES = ('nearest_centroid',)


def nearest_centroid(batch: Dict[str, np.ndarray], way: int) -> np.ndarray:
  """Per-episode query accuracy [E] of a task batch (episodes.sample_tasks layout)."""
  e = batch['support_x'].shape[0]
  support = batch['support_x'].reshape(e, batch['support_x'].shape[1], -1)
  query = batch['query_x'].reshape(e, batch['query_x'].shape[1], -1)
  onehot = np.eye(way, dtype=np.float32)[batch['support_y']]  # [E, S, way]
  centroids = np.einsum('esw,esd->ewd', onehot, support) / onehot.sum(1)[..., None]
  dist = ((query[:, :, None, :] - centroids[:, None, :, :]) ** 2).sum(-1)  # [E, Q, way]
  return (dist.argmin(-1) == batch['query_y']).mean(-1).astype(np.float64)


__all__ = ['BASELINES', 'nearest_centroid']
