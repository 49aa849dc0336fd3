"""Few-shot image classification on a procedurally generated glyph alphabet: a second domain
for the meta-learning library (`mmtl_jax.meta`), Omniglot-style.

  glyphs.py      random stroke characters rendered with numpy; rotations as new classes
  episodes.py    character-level train/val/test split; N-way K-shot task batches
  systems.py     maml, fomaml, reptile, imaml, meta_sgd, anil as `meta.MetaSpec`s, and the
                 finetune baseline (SYSTEMS); settings per way (method_config)
  baselines.py   the pixel nearest-centroid baseline
  loop.py        meta-training (s/iteration, iMAML's solve checks) and evaluation
  measure.py     peak RSS of a block of work
  experiment.py  every seed x setting x method -> records; the validation search; memory
                 of the compiled meta-gradient against the inner steps
  stats.py       intervals over seeds and paired comparisons on the same test episodes
  report.py      the tables, baselines, paired comparisons and the literature's findings
  diagnostics.py the gradient-diagnostic curve over training (meta.diagnostics; JSON + PNG)

The model is `mmtl_jax.models.conv4.Conv4`; the entry point is experiments/fewshot.py.
"""

from mmtl_jax import extras

extras.require('ser', 'mmtl_jax.fewshot')  # before any import that needs the extra

