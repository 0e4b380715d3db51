"""The single-real-image source (1p-img): L classes, each a fixed random affine view of one photo.

The 1p-frac recipe applied to one real image (Nakamura et al., "Scaling Backwards: Minimal Synthetic
Pre-training?", ECCV 2024): the image (a path, or a scikit-image photo by name) is turned to grayscale or Canny edges, and class l is the image under an affine map
drawn once from (seed, l) with strength `delta`: rotation U(+-delta pi), scale U(1 +- delta), shear
U(+-delta), translation U(+-delta/2) of the image size. The exact ranges of the paper are unpublished.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from fractalpre.fractals import ifs

RENDERINGS = ("gray", "edges")


def load_photo(name_or_path: str) -> np.ndarray:
  """An RGB or gray uint8 array from a file path or a scikit-image data name (e.g. 'astronaut')."""
  if Path(name_or_path).exists():
    return np.asarray(Image.open(name_or_path).convert("RGB"))
  import skimage.data
  loader = getattr(skimage.data, name_or_path, None)
  if loader is None or name_or_path.startswith("_"):
    raise ValueError(f"image must be an existing file or a scikit-image photo name such as 'astronaut', "
                     f"got {name_or_path!r}")
  return np.asarray(loader())


def _to_gray(photo: np.ndarray) -> np.ndarray:
  return np.asarray(Image.fromarray(photo).convert("L")) if photo.ndim == 3 else photo.astype(np.uint8)


class SingleImage:
  """Random access like the fractal sources: `ds[i] -> (uint8 (size, size), class)`."""

  name = "1p-img"

  def __init__(self, image: str = "astronaut", num_classes: int = 1000, delta: float = 0.1,
               size: int = 224, seed: int = 0, rendering: str = "gray"):
    if num_classes <= 0:
      raise ValueError(f"num_classes must be > 0, got {num_classes}")
    if not delta >= 0:
      raise ValueError(f"delta must be >= 0, got {delta}")
    if size < 16:
      raise ValueError(f"size must be >= 16, got {size}")
    if rendering not in RENDERINGS:
      raise ValueError(f"rendering must be one of {RENDERINGS}, got {rendering!r}")
    self.image, self.num_classes, self.delta, self.size, self.seed = image, num_classes, delta, size, seed
    self.rendering = rendering
    gray = _to_gray(load_photo(image))
    side = min(gray.shape)
    top, left = (gray.shape[0] - side) // 2, (gray.shape[1] - side) // 2
    self.base = np.asarray(Image.fromarray(gray[top:top + side, left:left + side]).resize(
        (size, size), Image.Resampling.BILINEAR))
    if rendering == "edges":  # at the working size, so edges stay one pixel wide and binary
      import skimage.feature
      self.base = (skimage.feature.canny(self.base / 255.0, sigma=1.0) * 255).astype(np.uint8)
    self.instances_per_class = 1

  def __len__(self) -> int:
    return self.num_classes

  def affine(self, cls: int) -> np.ndarray:
    """The 2x3 output->input pixel map of class `cls`, about the image centre."""
    rng = ifs.rng_for(self.seed, 5, cls)
    d = self.delta
    angle = rng.uniform(-d, d) * np.pi
    scale = rng.uniform(1 - d, 1 + d, size=2)
    shear = rng.uniform(-d, d)
    shift = rng.uniform(-d / 2, d / 2, size=2) * self.size
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    forward = rot @ np.array([[1.0, shear], [0.0, 1.0]]) @ np.diag(scale)
    inverse = np.linalg.inv(forward)
    centre = np.array([self.size / 2, self.size / 2])
    offset = centre - inverse @ (centre + shift)
    return np.concatenate([inverse, offset[:, None]], axis=1)

  def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
    if not 0 <= index < len(self):
      raise IndexError(f"index must be in [0, {len(self)}), got {index}")
    m = self.affine(int(index))
    image = Image.fromarray(self.base).transform(
        (self.size, self.size), Image.Transform.AFFINE, tuple(m.ravel()), resample=Image.Resampling.BILINEAR)
    return np.asarray(image), int(index)

  def batch(self, indices):
    images = [self[i][0] for i in indices]
    return np.stack(images), np.asarray(indices, np.int64)
