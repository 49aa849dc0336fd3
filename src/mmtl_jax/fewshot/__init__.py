"""Few-shot image classification on a procedurally generated glyph alphabet: a second domain
for the meta-learning library (`mmtl_jax.meta`), Omniglot-style.

  glyphs.py      random stroke characters rendered with numpy; rotations as new classes
  episodes.py    character-level train/val/test split; N-way K-shot task batches
  systems.py     maml, fomaml, reptile, imaml, meta_sgd, anil as `meta.MetaSpec`s (SYSTEMS)
  loop.py        meta-training (s/iteration) and evaluation (accuracy, 95% CI)
  measure.py     peak RSS of a block of work
  experiment.py  every method x setting -> records
  report.py      the markdown table and the exact vs first-order comparison with the literature
  diagnostics.py the gradient-diagnostic curve over training (meta.diagnostics; JSON + PNG)

The model is `mmtl_jax.models.conv4.Conv4`; the entry point is experiments/fewshot.py.
"""
