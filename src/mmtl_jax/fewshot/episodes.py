"""Class splits and N-way K-shot episodes of the rotated glyph alphabet (host numpy).

Splits are by character, as Omniglot's are: all 4 rotations of a character fall in the same
split, so no test class is a rotated training class. An episode draws `way` distinct classes
of one split, then `shot + query` distinct samples of each; labels 0..way-1 follow the random
class order. A task batch stacks `tasks` episodes on a leading task axis, the layout the meta
library's task strategies consume.

Episodes are a pure function of (seed, split, step): the same step gives the same batch.
"""

from typing import Dict, Sequence

import numpy as np

from mmtl_jax.fewshot import glyphs

SPLITS = ('train', 'val', 'test')


def split_classes(num_characters: int, fractions: Sequence[float]) -> Dict[str, np.ndarray]:
  """{'train', 'val', 'test'} -> class ids (int64, sorted) of the rotated alphabet.

  Characters are i.i.d. draws, so contiguous ranges are as good as a shuffle: train gets the
  first round(fractions[0] * num_characters) characters, val the next, test the rest.

  Raises:
    ValueError: fractions not 3 non-negative numbers summing to 1, or an empty split.
  """
  fractions = tuple(float(f) for f in fractions)
  if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1.0) > 1e-6:
    raise ValueError(f'split fractions must be 3 non-negative numbers summing to 1, got '
                     f'{fractions}')
  n_train = int(round(fractions[0] * num_characters))
  n_val = int(round(fractions[1] * num_characters))
  bounds = [0, n_train, n_train + n_val, num_characters]
  out = {}
  for i, name in enumerate(SPLITS):
    chars = np.arange(bounds[i], bounds[i + 1])
    if chars.size == 0:
      raise ValueError(f'split {name!r} has no character ({num_characters} characters, '
                       f'fractions {fractions})')
    out[name] = (chars[:, None] * glyphs.ROTATIONS + np.arange(glyphs.ROTATIONS)).ravel()
  return out


def episode_rng(seed: int, split: str, step: int) -> np.random.Generator:
  """The generator of batch `step` of `split` (independent streams per split)."""
  return np.random.default_rng([seed, SPLITS.index(split), step])


def sample_classes(rng: np.random.Generator, classes: np.ndarray, tasks: int, way: int
                   ) -> np.ndarray:
  """The classes of `tasks` episodes: [tasks, way] distinct ids of `classes` per row (the first
  draw `sample_tasks` makes from rng, so the same rng state gives the same classes)."""
  return np.asarray(classes)[rng.random((tasks, len(classes))).argsort(axis=1)[:, :way]]


def sample_tasks(alphabet: np.ndarray, classes: np.ndarray, rng: np.random.Generator, *,
                 tasks: int, way: int, shot: int, query: int) -> Dict[str, np.ndarray]:
  """A batch of `tasks` N-way K-shot episodes.

  Args:
    alphabet: uint8 [characters, samples, H, W] (glyphs.render_alphabet).
    classes: the class ids to draw from (one split).
    rng: numpy generator (see `episode_rng`).
    tasks, way, shot, query: episodes, classes per episode, support and query images per class.

  Returns:
    {'support_x': float32 [tasks, way * shot, H, W, 1] in [0, 1],
     'support_y': int32 [tasks, way * shot], 'query_x': float32 [tasks, way * query, H, W, 1],
     'query_y': int32 [tasks, way * query]}; images are class-major (label i at rows
    i * shot ... (i + 1) * shot - 1).

  Raises:
    ValueError: way above the split's classes, or shot + query above the samples per class.
  """
  samples = alphabet.shape[1]
  if min(tasks, way, shot, query) < 1:
    raise ValueError(f'tasks, way, shot, query must be >= 1, got {(tasks, way, shot, query)}')
  if way > len(classes):
    raise ValueError(f'{way}-way episodes need {way} classes; the split has {len(classes)}')
  if shot + query > samples:
    raise ValueError(f'shot + query = {shot + query} exceeds the {samples} samples per class')
  chosen = sample_classes(rng, classes, tasks, way)
  idx = rng.random((tasks, way, samples)).argsort(axis=-1)[..., :shot + query]
  images = glyphs.class_images(alphabet, chosen, idx).astype(np.float32) / 255.0
  labels = np.broadcast_to(np.arange(way, dtype=np.int32)[None, :, None],
                           (tasks, way, shot + query))

  def part(lo, hi):
    x = images[:, :, lo:hi].reshape((tasks, way * (hi - lo)) + images.shape[3:] + (1,))
    return x, np.ascontiguousarray(labels[:, :, lo:hi]).reshape(tasks, way * (hi - lo))

  support_x, support_y = part(0, shot)
  query_x, query_y = part(shot, shot + query)
  return {'support_x': support_x, 'support_y': support_y, 'query_x': query_x,
          'query_y': query_y}


__all__ = ['episode_rng', 'sample_classes', 'sample_tasks', 'split_classes', 'SPLITS']
