"""Speech emotion recognition on top of `meta`, `models` and `data`: the MMTL losses, the
systems of the paper's Table 2, the meta-test protocols, UA/WA, result files and tables, the
experiment loop (train.py) and its drivers (sweep.py: a grid chosen on dev; study.py: several
arms over seeds, compared pairwise), and prediction on wav files."""

from mmtl_jax import extras

extras.require('ser', 'mmtl_jax.ser')  # before any import that needs the extra

