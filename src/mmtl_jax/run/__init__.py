"""Run infrastructure, independent of speech: atomic JSON files, orbax checkpoints and
inference bundles, metric logs (TensorBoard + JSON lines)."""
