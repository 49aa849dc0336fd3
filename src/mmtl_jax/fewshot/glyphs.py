"""A procedurally generated glyph alphabet: Omniglot's shape, rendered with numpy alone.

Real handwritten sets cannot be downloaded here, so every character is a random pen drawing:
1 to 4 strokes, each a quadratic Bezier curve whose control points lie in the unit square;
about half the strokes start where the previous one ended (a pen that does not lift). A
character's 20 samples ("drawers") redraw it with every control point jittered, a small random
affine map (rotation, scale, shear, shift) and a random pen pressure. A sample is rendered by
splatting points along its strokes into a 2x grid (np.bincount), blurring the grid
(scipy.ndimage) into a pen of soft width and area-averaging it down to size x size.

Rotations by 90, 180 and 270 degrees are new classes, as Omniglot is used in few-shot learning
(Santoro et al. 2016, Finn et al. 2017): class c of the rotated alphabet is character c // 4
turned by (c % 4) * 90 degrees. Only the base characters are stored; `class_images` rotates.

Character c is drawn from the key (seed, c) alone, so it is the same however many characters
are rendered.
"""

from typing import Tuple

import numpy as np
from scipy import ndimage

ROTATIONS = 4  # 0, 90, 180, 270 degrees
_POINTS_PER_STROKE = 48  # dense enough that the blur closes the gaps on a 2x grid
_UPSAMPLE = 2


def character_strokes(seed: int, char: int) -> np.ndarray:
  """The control points of character `char`: [strokes, 3, 2] in [0.15, 0.85]^2 (x, y)."""
  rng = np.random.default_rng([seed, char])
  num = int(rng.integers(1, 5))
  strokes = rng.uniform(0.15, 0.85, size=(num, 3, 2))
  for s in range(1, num):
    if rng.random() < 0.5:  # the pen did not lift: start where the last stroke ended
      strokes[s, 0] = strokes[s - 1, 2]
  return strokes


def _jitter(rng: np.random.Generator, strokes: np.ndarray, samples: int,
            jitter: float) -> np.ndarray:
  """`samples` jittered copies of the control points: [samples, strokes, 3, 2]."""
  points = strokes[None] + rng.normal(0.0, jitter, size=(samples,) + strokes.shape)
  angle = rng.normal(0.0, 0.15, size=samples)  # radians, about +-9 degrees
  scale = rng.uniform(0.85, 1.1, size=(samples, 2))
  shear = rng.normal(0.0, 0.1, size=samples)
  cos, sin = np.cos(angle), np.sin(angle)
  rot = np.stack([np.stack([cos, -sin], -1), np.stack([sin, cos], -1)], -2)
  aff = rot @ (np.eye(2)[None] * scale[:, None, :])
  aff[:, 0, 1] += shear
  shift = rng.normal(0.0, 0.04, size=(samples, 1, 1, 2))
  centred = points - 0.5
  return np.einsum('nij,nskj->nski', aff, centred) + 0.5 + shift


def _curve_points(control: np.ndarray) -> np.ndarray:
  """Quadratic Bezier points: [..., strokes, 3, 2] -> [..., strokes * P, 2]."""
  t = np.linspace(0.0, 1.0, _POINTS_PER_STROKE)[:, None]
  p0, p1, p2 = control[..., 0:1, :], control[..., 1:2, :], control[..., 2:3, :]
  curve = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t ** 2 * p2
  return curve.reshape(control.shape[:-3] + (-1, 2))


def _raster(points: np.ndarray, size: int, pen: float, pressure: np.ndarray) -> np.ndarray:
  """Splats points [N, P, 2] in the unit square into N uint8 images [N, size, size]."""
  n, grid = points.shape[0], size * _UPSAMPLE
  pix = np.clip(np.floor(points * grid).astype(np.int64), 0, grid - 1)
  flat = (np.arange(n)[:, None] * grid + pix[..., 1]) * grid + pix[..., 0]
  hits = np.minimum(np.bincount(flat.ravel(), minlength=n * grid * grid), 1)
  canvas = hits.reshape(n, grid, grid).astype(np.float32)
  canvas = ndimage.gaussian_filter(canvas, sigma=(0, pen, pen))
  canvas = canvas.reshape(n, size, _UPSAMPLE, size, _UPSAMPLE).mean(axis=(2, 4))
  canvas = np.clip(canvas * (4.0 * pen) * pressure[:, None, None], 0.0, 1.0)
  return np.round(canvas * 255).astype(np.uint8)


def render_character(seed: int, char: int, samples: int = 20, size: int = 28,
                     jitter: float = 0.03, pen: float = 1.2) -> np.ndarray:
  """The `samples` drawings of character `char`: uint8 [samples, size, size], ink = high.

  Deterministic in (seed, char, samples, size, jitter, pen).
  """
  strokes = character_strokes(seed, char)
  rng = np.random.default_rng([seed, char, 1])
  control = _jitter(rng, strokes, samples, jitter)
  pressure = rng.uniform(0.8, 1.2, size=samples)
  return _raster(_curve_points(control), size, pen, pressure)


def render_alphabet(num_characters: int, samples: int = 20, size: int = 28, seed: int = 0,
                    jitter: float = 0.03, pen: float = 1.2) -> np.ndarray:
  """All base characters: uint8 [num_characters, samples, size, size] (before rotations).

  Raises:
    ValueError: a count or size below 1.
  """
  if num_characters < 1 or samples < 1 or size < 4:
    raise ValueError(f'need num_characters >= 1, samples >= 1, size >= 4; got '
                     f'{num_characters}, {samples}, {size}')
  out = np.empty((num_characters, samples, size, size), np.uint8)
  for char in range(num_characters):
    out[char] = render_character(seed, char, samples, size, jitter, pen)
  return out


def num_classes(num_characters: int) -> int:
  """Classes of the rotated alphabet: every character in each of the 4 rotations."""
  return num_characters * ROTATIONS


def class_of(char: int, rotation: int) -> int:
  """The class id of character `char` turned by rotation * 90 degrees."""
  return char * ROTATIONS + rotation


def split_class(cls: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
  """(character, rotation) of class ids (inverse of `class_of`)."""
  cls = np.asarray(cls)
  return cls // ROTATIONS, cls % ROTATIONS


def class_images(alphabet: np.ndarray, classes: np.ndarray, sample_idx: np.ndarray
                 ) -> np.ndarray:
  """Images of the rotated alphabet: alphabet [C, S, H, W], classes [...], sample_idx
  [..., k] -> uint8 [..., k, H, W], image (i.., j) = sample sample_idx[i.., j] of class
  classes[i..] (its character rotated counter-clockwise by (class % 4) * 90 degrees)."""
  chars, rots = split_class(classes)
  images = alphabet[chars[..., None], sample_idx]
  out = images.copy()
  for r in range(1, ROTATIONS):
    mask = rots == r
    out[mask] = np.rot90(images[mask], k=r, axes=(-2, -1))
  return out


__all__ = [
    'character_strokes', 'class_images', 'class_of', 'num_classes', 'render_alphabet',
    'render_character', 'ROTATIONS', 'split_class',
]
