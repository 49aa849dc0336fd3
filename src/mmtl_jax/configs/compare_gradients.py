"""Exact vs first-order meta-gradients vs the Reptile direction, on the SER model.

  python experiments/compare_gradients.py --json=/tmp/grads.json --plot=/tmp/grads.png
  python experiments/compare_gradients.py --config.meta.alpha=0.1   # larger inner steps

Defaults: a small-ish meta learner on a synthetic random batch, float64, < 1 min on a CPU.
"""

import ml_collections

from mmtl_jax.configs import base


def get_config():
  c = base.get_config()
  c.model.conv_features = (8, 12, 16)
  c.model.conv_kernels = ((6, 8), (4, 6), (3, 4))
  c.model.lstm_hidden = 32
  c.model.fc_hidden = 32
  c.model.dtype = 'float64'  # the whole comparison and the finite differences run in float64
  c.meta.strategy = 'loop'
  c.compare = ml_collections.ConfigDict()
  c.compare.tasks = 2
  c.compare.segments = 4
  c.compare.frames = 48
  c.compare.bins = 32
  c.compare.num_aux = 3
  c.compare.batch_seed = 0
  c.compare.direction_seed = 1
  c.compare.fd_eps = 1e-5
  return c


__all__ = ['get_config']
