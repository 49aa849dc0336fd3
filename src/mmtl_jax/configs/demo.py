"""The default: MMTL and both baselines over all folds of the embedded synthetic corpus, on a
laptop CPU in minutes (scaled-down spectrogram and model; same code path as the paper config).

  python experiments/train.py --workdir=runs/demo
  python experiments/train.py --workdir=runs/demo_exact --config.meta.mode=exact

The synthetic corpus is written to <workdir>/synthetic_corpus on first use.
"""

import ml_collections

from mmtl_jax.configs import synthetic


def scale_down(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Laptop-CPU scale on any corpus config: small spectrogram and model, 150 steps."""
  # 1 s segments, 16 ms hop, 12 ms window, DFT 192 (83.3 Hz bins): 64 frames x 48 bins
  # below 4 kHz, an eighth of the paper's 300 x 200.
  c.features.n_fft = 192
  c.features.win_ms = 12.0
  c.features.hop_ms = 16.0
  c.features.max_segment_s = 1.0
  c.features.n_frames = 64
  c.model.conv_features = (6, 12, 16)
  c.model.conv_kernels = ((5, 5), (3, 3), (3, 3))
  c.model.lstm_hidden = 32
  c.model.fc_hidden = 32
  # Not 'reptile': with one inner step, Reptile's theta direction ignores the emotion loss.
  c.meta.mode = 'first_order'
  # Learning rates chosen on dev speakers only (docs/SETTINGS.md has the sweep's figures).
  c.meta.gamma = 0.003
  c.train.baseline_lr.cnn_lstm = 0.001
  c.train.baseline_lr.cnn_lstm_mtl = 0.003
  c.train.steps = 150
  c.train.segments_per_speaker = 12
  c.train.eval_every = 25
  c.train.checkpoint_every = 25
  c.train.log_every = 5
  c.eval.finetune_steps = 3
  c.eval.finetune_lr = 0.003  # gamma
  c.eval.batch_size = 128
  return c


def get_config() -> ml_collections.ConfigDict:
  return scale_down(synthetic.get_config())


__all__ = ['get_config', 'scale_down']
