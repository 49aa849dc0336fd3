"""Run infrastructure, independent of speech: atomic JSON files, orbax checkpoints and
inference bundles, metric logs (TensorBoard + JSON lines), the workdir lock, the provenance
of results, the JAX process (mesh, placement, primary process, compilation cache), worker
processes that die with their parent, and temporary directories left by killed builds."""

from mmtl_jax import extras

extras.require('ser', 'mmtl_jax.run')  # before any import that needs the extra

