"""LR/HR training pairs, cut on the fly from high-resolution images, on grain.

Sources of HR images (RGB uint8, random access): a folder, a curation manifest (its kept rows), a TFDS
dataset with an `image` feature, or photos bundled with scikit-image by name. Each training example is a
random HR patch (flipped / rotated at random) and its degraded LR version: optional Gaussian blur, bicubic
downsampling (the default and only required step), optional Gaussian noise, optional JPEG re-encoding.
Every random choice is seeded by grain from (seed, element index), so a batch is a pure function of the
config and a resumed run sees the batches an uninterrupted one would.
"""
from __future__ import annotations

import dataclasses
import functools
import io
from pathlib import Path

import ml_collections
import numpy as np
from PIL import Image, ImageFilter

from fractalpre import util
from fractalpre.data import host_pipeline, sources
from superres.curation import quality, scoring, table

KINDS = ("folder", "manifest", "tfds", "photos")


# ----------------------------------------------------------------------------------------- HR sources
class ImageFiles:
  """Image files as RGB uint8, decoded on access; the last `cache` decoded images are kept (lru_cache is
  thread-safe, so grain's worker threads decode in parallel; a rare double decode is harmless)."""

  def __init__(self, paths, cache: int = 256):
    self.paths = [Path(p) for p in paths]
    if not self.paths:
      raise ValueError("no HR images found")
    self._load = functools.lru_cache(maxsize=cache)(self._decode)

  def _decode(self, i: int) -> np.ndarray:
    return scoring.load_rgb(self.paths[i])[0]

  def __len__(self):
    return len(self.paths)

  def __getitem__(self, i):
    return self._load(int(i))


class Photos:
  """scikit-image's bundled photos by name (gray ones as RGB)."""

  def __init__(self, names):
    self.names = list(names)
    self.images = quality.bundled_photos(self.names)

  def __len__(self):
    return len(self.images)

  def __getitem__(self, i):
    return self.images[i]


class TfdsImages:
  """The `image` feature of a TFDS split (array_record; no TensorFlow at run time)."""

  def __init__(self, name: str, split: str, data_dir: str | None = None):
    self.source = sources.open_tfds(name, split, data_dir, key="data.name")[1]

  def __len__(self):
    return len(self.source)

  def __getitem__(self, i):
    image = np.asarray(self.source[int(i)]["image"])
    return np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image


def folder_images(root) -> list[Path]:
  root = Path(root)
  if not root.is_dir():
    raise ValueError(f"HR folder {str(root)!r} does not exist")
  return [p for p in scoring.list_files(root)[0] if p.suffix.lower() in util.IMAGE_EXTENSIONS]


def manifest_images(path) -> list[Path]:
  """The kept images of a `superres curate` manifest (csv, parquet or json)."""
  path = Path(path)
  if not path.is_file():
    raise ValueError(f"manifest {str(path)!r} does not exist")
  import json
  rows = json.loads(path.read_text()) if path.suffix == ".json" else table.read(path)
  return [Path(r["path"]) for r in rows if r.get("keep") in (True, "True", "true", 1, "1")]


def get_source(cfg: ml_collections.ConfigDict):
  """The HR source a data config names: kind folder (path), manifest (path), tfds (name, split,
  data_dir) or photos (names, comma-separated)."""
  kind = cfg.kind
  if kind == "folder":
    return ImageFiles(folder_images(cfg.path), cfg.get("cache", 256))
  if kind == "manifest":
    return ImageFiles(manifest_images(cfg.path), cfg.get("cache", 256))
  if kind == "tfds":
    return TfdsImages(cfg.name, cfg.get("split", "train"), cfg.get("data_dir") or None)
  if kind == "photos":
    return Photos([n for n in cfg.names.split(",") if n])
  raise ValueError(f"data kind must be one of {KINDS}, got {kind!r}")


# ----------------------------------------------------------------------------------------- degradation
def mod_crop(image: np.ndarray, scale: int) -> np.ndarray:
  """The image cut to a multiple of `scale` on both axes (top-left kept), the SR evaluation convention."""
  h, w = image.shape[:2]
  return image[:h - h % scale, :w - w % scale]


def bicubic(image: np.ndarray, width: int, height: int) -> np.ndarray:
  return np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BICUBIC))


def downsample(hr: np.ndarray, scale: int) -> np.ndarray:
  """Bicubic (antialiased, Pillow) downsampling by an integer factor; HR must be a multiple of it."""
  h, w = hr.shape[:2]
  return bicubic(hr, w // scale, h // scale)


@dataclasses.dataclass(frozen=True)
class Degradation:
  """HR -> LR. Each optional step draws its strength uniformly from a (low, high) range; (0, 0) = off.
  `blur`: Gaussian sigma on HR pixels before downsampling; `noise`: Gaussian std in 8-bit levels after;
  `jpeg`: quality of a final JPEG re-encoding (0 = off)."""
  scale: int
  blur: tuple[float, float] = (0.0, 0.0)
  noise: tuple[float, float] = (0.0, 0.0)
  jpeg: tuple[int, int] = (0, 0)

  def __post_init__(self):
    if self.scale < 2:
      raise ValueError(f"scale must be >= 2, got {self.scale}")
    for name in ("blur", "noise", "jpeg"):
      low, high = getattr(self, name)
      if not 0 <= low <= high:
        raise ValueError(f"degradation {name} must be a range 0 <= low <= high, got {(low, high)}")
    if self.jpeg[1] > 100 or (self.jpeg[1] and self.jpeg[0] < 1):
      raise ValueError(f"degradation jpeg qualities must be in [1, 100] (or (0, 0) = off), got {self.jpeg}")

  def __call__(self, hr: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    image = hr
    if self.blur[1] > 0:
      sigma = rng.uniform(*self.blur)
      image = np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur(sigma)))
    lr = downsample(image, self.scale)
    if self.noise[1] > 0:
      std = rng.uniform(*self.noise)
      lr = np.clip(np.rint(lr + rng.normal(0.0, std, lr.shape)), 0, 255).astype(np.uint8)
    if self.jpeg[1] > 0:
      buf = io.BytesIO()
      Image.fromarray(lr).save(buf, format="JPEG", quality=int(rng.integers(self.jpeg[0], self.jpeg[1] + 1)))
      lr = np.asarray(Image.open(buf).convert("RGB"))
    return lr


@dataclasses.dataclass(frozen=True)
class PatchPair:
  """A random HR patch of (lr_patch x scale) pixels, flipped / transposed at random (the 8 dihedral
  views), and its degraded LR patch; both as float32 in [0, 1]. Images smaller than the patch are
  reflect-padded."""
  degradation: Degradation
  lr_patch: int
  augment: bool = True

  def __call__(self, hr: np.ndarray, rng: np.random.Generator):
    p = self.lr_patch * self.degradation.scale
    h, w = hr.shape[:2]
    if h < p or w < p:
      hr = np.pad(hr, ((0, max(p - h, 0)), (0, max(p - w, 0)), (0, 0)), mode="reflect")
      h, w = hr.shape[:2]
    top, left = rng.integers(0, h - p + 1), rng.integers(0, w - p + 1)
    patch = hr[top:top + p, left:left + p]
    if self.augment:
      if rng.random() < 0.5:
        patch = patch[:, ::-1]
      if rng.random() < 0.5:
        patch = patch[::-1]
      if rng.random() < 0.5:
        patch = patch.transpose(1, 0, 2)
    patch = np.ascontiguousarray(patch)
    lr = self.degradation(patch, rng)
    return lr.astype(np.float32) / 255.0, patch.astype(np.float32) / 255.0


def _stack_pairs(pairs):
  return {"image": np.stack([p[0] for p in pairs]), "target": np.stack([p[1] for p in pairs])}


def degradation_from_config(cfg: ml_collections.ConfigDict, scale: int) -> Degradation:
  d = cfg.get("degrade", {}) or {}
  return Degradation(scale, tuple(d.get("blur", (0.0, 0.0))), tuple(d.get("noise", (0.0, 0.0))),
                     tuple(d.get("jpeg", (0, 0))))


def train_iterator(source, cfg: ml_collections.ConfigDict, scale: int, lr_patch: int, global_batch: int, seed: int):
  """An infinite grain iterator of this host's share of each global batch of pairs:
  {"image": LR float32 (b, p, p, 3), "target": HR float32 (b, p s, p s, 3)}, in [0, 1]."""
  pairs = PatchPair(degradation_from_config(cfg, scale), lr_patch, cfg.get("augment", True))
  return host_pipeline.shuffled_batches(source, seed, global_batch, pairs, _stack_pairs,
                                         workers=cfg.get("workers", 4), prefetch=cfg.get("prefetch", 4))
