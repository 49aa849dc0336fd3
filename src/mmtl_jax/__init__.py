"""mmtl_jax: Meta Multi-task Learning (Cai et al., Interspeech 2020) for speech emotion
recognition, in JAX/Flax.

Subpackages:
  data:    corpora (IEMOCAP layout, CSV manifests, synthetic), features, folds, task batches.
  models:  Flax modules of Table 1 (meta learner, transfer learner).
  meta:    the reusable, SER-independent meta-learning library (recipes over one engine).
"""

__version__ = "0.2.0"
