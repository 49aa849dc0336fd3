"""The 'quick' preset: a first try of any training config on real data in minutes.

  python experiments/train.py --config=src/mmtl_jax/configs/emodb_small.py --quick \
      --config.data.manifest.path=/data/emodb/annotations.csv --workdir=runs/emodb_quick

One fold (folds.which = (0,)), STEPS training steps, every system (MMTL and both
baselines), one seed, at most 3 fine-tuning steps (or epochs) for the 'paper' protocol. The
features and the model keep the config's scale: on emodb_small (the demo's laptop scale) it
runs in under 3 minutes on 2 CPU cores (README, "A quick try"); on a paper-scale config it
is a smoke test, not a result. Every table of such a run says '1 × 1' folds x seeds and
prints 'n/a' for the spread.

`--config.*` overrides given with --quick still win (run.errors.apply_preset).
"""

import ml_collections

STEPS = 30
SYSTEMS = ('mmtl', 'cnn_lstm', 'cnn_lstm_mtl')


def apply(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Changes `c` in place to the quick preset (see module docstring) and returns it."""
  c.folds.which = (0,)
  c.folds.swap = False
  c.train.steps = STEPS
  c.train.eval_every = 10
  c.train.checkpoint_every = 10
  c.train.log_every = 5
  c.train.models = SYSTEMS
  c.train.seeds = ()
  c.eval.finetune_steps = min(int(c.eval.finetune_steps), 3)
  return c


__all__ = ['apply', 'STEPS', 'SYSTEMS']
