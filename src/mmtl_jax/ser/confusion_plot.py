"""The confusion figures of an experiment: where they go and how they look.

Each run (model x protocol) gets <workdir>/confusion/<model>__<protocol>.{png,json}
(`confusion_basename`); results.md links the PNG. `plot_confusion` draws one.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np

from mmtl_jax.run.files import atomic_write, safe_component
from mmtl_jax.ser import metrics

CONFUSION_DIR = 'confusion'


def confusion_basename(model: str, protocol: str) -> str:
  """File stem of a run's confusion PNG/JSON under <workdir>/confusion/: the names as
  `safe_component`s, so 'a/b' and 'a_b' get different files and none leaves the directory."""
  return f'{safe_component(model)}__{safe_component(protocol)}'


def plot_confusion(path: str | os.PathLike, counts: Any, classes: Sequence[str],
                   title: str = '') -> None:
  """Writes a confusion-matrix PNG: colour = row-normalised rate, text = count and rate.

  Uses matplotlib's object API with the Agg canvas, so no global backend is changed.
  """
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=g-import-not-at-top
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top

  cm = np.asarray(counts, dtype=np.int64)
  norm = metrics.row_normalise(cm)
  n = len(classes)
  fig = Figure(figsize=(1.2 * n + 2.0, 1.1 * n + 1.4))
  FigureCanvasAgg(fig)
  ax = fig.subplots()
  im = ax.imshow(norm, vmin=0.0, vmax=1.0, cmap='Blues')
  fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label='row-normalised rate')
  ax.set_xticks(range(n), labels=list(classes))
  ax.set_yticks(range(n), labels=list(classes))
  ax.set_xlabel('Predicted')
  ax.set_ylabel('True')
  if title:
    ax.set_title(title, fontsize=9)
  for i in range(n):
    for j in range(n):
      ax.text(j, i, f'{cm[i, j]}\n{100 * norm[i, j]:.1f}%', ha='center', va='center',
              fontsize=8, color='white' if norm[i, j] > 0.5 else 'black')
  fig.tight_layout()
  atomic_write(path, lambda f: fig.savefig(f, format='png', dpi=120))


__all__ = ['confusion_basename', 'CONFUSION_DIR', 'plot_confusion']
