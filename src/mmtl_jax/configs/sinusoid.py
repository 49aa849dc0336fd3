"""Few-shot sinusoid regression (Finn et al. 2017, section 5.1) with the SAME meta-update.

  python experiments/sinusoid.py --config=src/mmtl_jax/configs/sinusoid.py --json=/tmp/sin.json
  python experiments/sinusoid.py --config=src/mmtl_jax/configs/sinusoid.py \
      --config.train.steps=200 --config.eval.tasks=100   # smoke run
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.task = ml_collections.ConfigDict()
  c.task.amplitude = (0.1, 5.0)
  c.task.phase = (0.0, 3.141592653589793)
  c.task.x = (-5.0, 5.0)
  c.task.k_support = 10  # K: points of the inner (adaptation) loss
  c.task.k_query = 10  # points of the outer loss during meta-training

  c.model = ml_collections.ConfigDict()
  c.model.hidden = (40, 40)

  c.meta = ml_collections.ConfigDict()
  c.meta.modes = ('exact', 'first_order', 'reptile')
  c.meta.strategy = 'vmap'  # a 1-40-40-1 MLP has no convolutions: vmap is fastest everywhere
  c.meta.inner_steps = 1
  c.meta.alpha = 0.01
  c.meta.gamma = 0.001
  c.meta.remat = False
  c.meta.task_chunk = 0

  c.train = ml_collections.ConfigDict()
  c.train.steps = 70000  # Finn et al.; ~25 s per mode on a 2-core CPU
  c.train.meta_batch = 25
  c.train.steps_per_call = 1000  # steps fused into one jitted lax.scan
  c.train.baseline = True  # also train the pretrained (joint regression) baseline

  c.eval = ml_collections.ConfigDict()
  c.eval.tasks = 1000
  c.eval.seed = 1234  # held-out tasks: a fixed seed, disjoint stream from training
  c.eval.query_points = 100  # MSE measured on this many fresh points per task
  c.eval.adapt_steps = 1
  return c


__all__ = ['get_config']
