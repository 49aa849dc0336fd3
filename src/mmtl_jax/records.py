"""Records and types shared across the layers; this module imports none of its siblings.

`Utterance` and `Problem` are the corpus contract (every reader returns them), `bin_index`
the one binning rule of auxiliary labels, and `PyTree` / `Params` the parameter types of
the meta-update.
"""

from __future__ import annotations

import bisect
import dataclasses
import os
from typing import Any, Dict, Optional, Sequence

PyTree = Any
Params = Dict[str, PyTree]  # named parameter groups, e.g. {'theta': ..., 'phi': ...}
Problem = dict  # {'path': str, 'reason': str}: a non-fatal finding of a corpus reader


@dataclasses.dataclass(frozen=True)
class Utterance:
  """One labelled recording.

  Attributes:
    utt_id: unique id within the corpus, e.g. 'Ses01F_impro01_M003'.
    path: absolute path of the wav file (it may not exist; the feature store checks).
    speaker: speaker name, e.g. 'Ses01M' (IEMOCAP: session + gender of the id's last field).
    session: IEMOCAP session number, None for corpora without sessions.
    dialog: dialog name, e.g. 'Ses01F_impro01' ('' where the corpus has none).
    label: class name, one of config.data.classes.
    aux: auxiliary label bin indices, in the order of config.data.aux_tasks.
    aux_raw: the raw auxiliary values in the same order (floats), or None if categorical.
  """
  utt_id: str
  path: str
  speaker: str
  session: Optional[int]
  dialog: str
  label: str
  aux: tuple[int, ...]
  aux_raw: Optional[tuple[float, ...]] = None


def bin_index(value: float, edges: Sequence[float], where: str) -> int:
  """Index of the bin [edges[i], edges[i+1]) holding `value`.

  A value on an inner edge goes to the upper bin. `where` ('file:line') names the input in the
  error raised for a value outside [edges[0], edges[-1]).
  """
  if not edges[0] <= value < edges[-1]:
    raise ValueError(f'{where}: value {value} outside [{edges[0]}, {edges[-1]}) '
                     f'(bin edges {tuple(edges)})')
  return bisect.bisect_right(edges, value) - 1


def absolute(path: str, base: str) -> str:
  """`path` made absolute against `base` (unless already absolute), normalised."""
  return os.path.normpath(path if os.path.isabs(path) else os.path.join(base, path))


__all__ = ['absolute', 'bin_index', 'Params', 'Problem', 'PyTree', 'Utterance']
