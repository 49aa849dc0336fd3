"""Speech emotion recognition on top of `meta`, `models` and `data`: the MMTL losses, the
systems of the paper's Table 2, the meta-test protocols, UA/WA, result tables, the experiment
loop and prediction on wav files."""
