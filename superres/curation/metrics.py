"""Per-image scores for SR training-data curation; each a pure, vectorised function of an image.

Images are (H, W) gray or (H, W, 3) RGB (an alpha channel is dropped), 8-bit. Other inputs are converted
when that is unambiguous and refused otherwise (`to_uint8`): a score is never computed on an image it
misreads. Formulas: "Rethinking Image Super-Resolution from Training Data Perspectives" (DiverSeg, ECCV
2024) and the papers named at each score.
"""
from __future__ import annotations

import io
from typing import NamedTuple, Protocol

import numpy as np
import scipy.fft
from PIL import Image

from fractalpre import util


# ----------------------------------------------------------------------------------------- input
def to_uint8(image) -> tuple[np.ndarray, str]:
  """(the image as uint8 (H, W) or (H, W, 3), a note of what was converted, or ''). Floats in [0, 1] are
  scaled by 255 and floats in [0, 255] rounded (a float image whose values are all <= 1 is read as [0, 1],
  skimage's convention); integers in [0, 255] are cast. Refused with a ValueError naming the problem:
  no pixels, a shape that is not an image, NaN or infinite values, values out of those ranges, booleans."""
  image = np.asarray(image)
  notes = []
  if image.ndim == 3 and image.shape[2] in (1, 4):
    notes.append("alpha dropped" if image.shape[2] == 4 else "single channel taken as gray")
    image = image[..., :3] if image.shape[2] == 4 else image[..., 0]
  if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
    raise ValueError(f"an image must have shape (H, W) or (H, W, 3), got {image.shape}")
  if image.size == 0:
    raise ValueError(f"the image has no pixels (shape {image.shape})")
  if image.dtype == np.uint8:
    return image, "; ".join(notes)
  if image.dtype.kind not in "uif":
    raise ValueError(f"image values must be numbers (uint8, integers in [0, 255] or floats), got dtype {image.dtype}")
  if image.dtype.kind in "ui":
    lo, hi = image.min(), image.max()
    if lo < 0 or hi > 255:
      raise ValueError(f"integer image values must be in [0, 255], got [{lo}, {hi}] (scale wider images to 8 "
                       "bits first)")
    notes.append(f"{image.dtype} cast to uint8")
    return image.astype(np.uint8), "; ".join(notes)
  image, note = util.float_to_uint8(image)
  notes.append(note)
  return image, "; ".join(notes)


def _checked(image) -> np.ndarray:
  return to_uint8(image)[0]


# ----------------------------------------------------------------------------------------- gray
def opencv_gray(image) -> np.ndarray:
  """OpenCV's 8-bit RGB->gray in integers, (9798 R + 19235 G + 3735 B + 2^14) >> 15, as float64.
  The exact integer form matters: blockiness is matched to the authors' values to 1e-9."""
  image = _checked(image)
  if image.ndim == 2:
    return image.astype(np.float64)
  rgb = image.astype(np.int64)
  return ((9798 * rgb[..., 0] + 19235 * rgb[..., 1] + 3735 * rgb[..., 2] + (1 << 14)) >> 15).astype(np.float64)


class Gray(NamedTuple):
  """An image's OpenCV gray, computed once (`to_gray`) and accepted by every gray score in its place."""
  values: np.ndarray


def to_gray(image) -> Gray:
  return Gray(opencv_gray(image))


def _gray(image) -> np.ndarray:
  return image.values if isinstance(image, Gray) else opencv_gray(image)


# ----------------------------------------------------------------------------------------- blockiness
def _trimmed(size: int) -> int:
  """Largest multiple of 8 that leaves at least 4 pixels beyond the block grid."""
  m = size % 8
  return size - m if m >= 4 else size - m - 8


_DCT8 = scipy.fft.dct(np.eye(8), norm="ortho", axis=0)  # rows: orthonormal DCT-II basis


def _block_dct(gray: np.ndarray, n_h: int, n_w: int) -> np.ndarray:
  """(n_h, n_w, 8, 8) orthonormal 2-D DCT-II of the 8x8 blocks of gray[:8 n_h, :8 n_w]."""
  blocks = gray[:8 * n_h, :8 * n_w].reshape(n_h, 8, n_w, 8).transpose(0, 2, 1, 3)
  return np.einsum("ua,ijab,vb->ijuv", _DCT8, blocks, _DCT8, optimize=True)


def _v_bar(coef: np.ndarray) -> np.ndarray:
  """Mean over centre blocks (indices 2 .. n-2) of sqrt((b + c - 2a)^2 + (d + e - 2a)^2), normalised by
  (n_h - 2)(n_w - 2) as in the authors' code."""
  n_h, n_w = coef.shape[:2]
  a = coef[2:n_h - 1, 2:n_w - 1]
  left, right = coef[2:n_h - 1, 1:n_w - 2], coef[2:n_h - 1, 3:n_w]
  up, down = coef[1:n_h - 2, 2:n_w - 1], coef[3:n_h, 2:n_w - 1]
  v = np.sqrt((left + right - 2 * a) ** 2 + (up + down - 2 * a) ** 2)
  return v.sum(axis=(0, 1)) / ((n_h - 2) * (n_w - 2))


def blockiness(image: np.ndarray) -> float:
  """JPEG blockiness (Bhardwaj & Pankajakshan 2018, as used by DiverSeg): how much more the DCT
  coefficients of the 8x8 grid vary across block borders than those of the grid shifted by 4 px.
  Rises with compression. NaN when undefined (flat images: 0/0) or the image is under 36 px a side."""
  gray = _gray(image)
  h, w = _trimmed(gray.shape[0]), _trimmed(gray.shape[1])
  n_h, n_w = h // 8, w // 8
  if n_h < 4 or n_w < 4:
    return float("nan")
  aligned = _v_bar(_block_dct(gray, n_h, n_w))
  shifted = _v_bar(_block_dct(gray[4:, 4:], n_h, n_w))
  with np.errstate(divide="ignore", invalid="ignore"):
    score = np.sum(np.abs((shifted - aligned) / aligned))
  return float(score) if np.isfinite(score) else float("nan")


def blockiness_per_block(image: np.ndarray) -> float:
  """The same score written as the authors' per-block loop (about 60x slower): the reference that
  tests and benchmarks compare `blockiness` against."""
  gray = opencv_gray(image)
  h, w = _trimmed(gray.shape[0]), _trimmed(gray.shape[1])
  n_h, n_w = h // 8, w // 8
  if n_h < 4 or n_w < 4:
    return float("nan")
  bars = []
  for shift in (0, 4):
    g = gray[shift:, shift:]
    coef = np.empty((n_h, n_w, 8, 8))
    for i in range(n_h):
      for j in range(n_w):
        coef[i, j] = scipy.fft.dctn(g[8 * i:8 * i + 8, 8 * j:8 * j + 8], norm="ortho")
    total = np.zeros((8, 8))
    for i in range(2, n_h - 1):
      for j in range(2, n_w - 1):
        for u in range(8):
          for v in range(8):
            a, b, c = coef[i, j, u, v], coef[i, j - 1, u, v], coef[i, j + 1, u, v]
            d, e = coef[i - 1, j, u, v], coef[i + 1, j, u, v]
            total[u, v] += np.sqrt((b + c - 2 * a) ** 2 + (d + e - 2 * a) ** 2)
    bars.append(total / ((n_h - 2) * (n_w - 2)))
  aligned, shifted = bars
  with np.errstate(divide="ignore", invalid="ignore"):
    score = sum(abs((shifted[u, v] - aligned[u, v]) / aligned[u, v]) for u in range(8) for v in range(8))
  return float(score) if np.isfinite(score) else float("nan")


# ----------------------------------------------------------------------------------------- JPEG header
_STD_LUMA = np.array([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99])


def standard_table(quality: int) -> np.ndarray:
  """The IJG luminance table scaled for quality q: S = 5000/q (q < 50) or 200 - 2q; max(floor((S T + 50)/100), 1)."""
  scale = 5000 // quality if quality < 50 else 200 - 2 * quality
  return np.clip((_STD_LUMA * scale + 50) // 100, 1, 255)


def jpeg_quality(quantization: dict | None) -> tuple[float | None, bool]:
  """(quality, exact) from a JPEG's quantisation tables (Pillow's `image.quantization`): the q whose
  scaled standard luminance table equals table 0, else the q with the nearest table (exact=False);
  (None, False) when there are no tables (not a JPEG). Table order (zig-zag or natural) does not matter
  to the comparison: each standard table is compared as a sorted multiset."""
  if not quantization:
    return None, False
  table = np.sort(np.asarray(quantization[min(quantization)], np.int64).ravel())
  if table.size != 64:
    return None, False
  errors = np.array([np.abs(np.sort(standard_table(q)) - table).sum() for q in range(1, 101)])
  best = int(np.argmin(errors))
  return float(best + 1), bool(errors[best] == 0)


# ----------------------------------------------------------------------------------------- simple scores
def sharpness(image: np.ndarray) -> float:
  """Variance of the 4-neighbour Laplacian of the gray image over interior pixels (low = blurry)."""
  g = _gray(image)
  if g.shape[0] < 3 or g.shape[1] < 3:
    return float("nan")
  lap = 4 * g[1:-1, 1:-1] - g[:-2, 1:-1] - g[2:, 1:-1] - g[1:-1, :-2] - g[1:-1, 2:]
  return float(lap.var())


def entropy(image: np.ndarray) -> float:
  """Shannon entropy of the 8-bit gray histogram, in bits (0 .. 8)."""
  counts = np.bincount(_gray(image).astype(np.uint8).ravel(), minlength=256)
  p = counts[counts > 0] / counts.sum()
  return float(-(p * np.log2(p)).sum())


def flat_fraction(image: np.ndarray, patch: int = 16, max_std: float = 2.0) -> float:
  """Fraction of non-overlapping patch x patch tiles whose gray standard deviation is below max_std."""
  gray = _gray(image)
  h, w = gray.shape[0] // patch * patch, gray.shape[1] // patch * patch
  if h == 0 or w == 0:
    return float("nan")
  tiles = gray[:h, :w].reshape(h // patch, patch, w // patch, patch)
  return float((tiles.std(axis=(1, 3)) < max_std).mean())


def megapixels(image) -> float:
  shape = image.values.shape if isinstance(image, Gray) else _checked(image).shape
  return shape[0] * shape[1] / 1e6


def perceptual_hash(image: np.ndarray) -> int:
  """64-bit DCT hash: the 8x8 lowest frequencies of the 32x32 gray image, thresholded at their median."""
  small = np.asarray(Image.fromarray(_gray(image).astype(np.uint8)).resize((32, 32), Image.Resampling.BILINEAR),
                     np.float64)  # gray values are integers 0..255, so the uint8 cast is exact
  low = scipy.fft.dctn(small, norm="ortho")[:8, :8].ravel()
  bits = low > np.median(low)
  return int(np.packbits(bits).view(">u8")[0])


def hamming(a: int, b: int) -> int:
  return (int(a) ^ int(b)).bit_count()


# ----------------------------------------------------------------------------------------- diversity
class Segmenter(Protocol):
  """Counts the segments of an RGB uint8 image; the score is within-image diversity."""
  name: str

  def count(self, image: np.ndarray) -> int: ...


class FelzenszwalbSegmenter:
  """scikit-image's Felzenszwalb graph segmentation at a fixed working area (default 128 x 128 pixels,
  aspect kept), so counts are comparable across image sizes and cost about 15 ms per image. Counts are
  not SAM mask counts: calibrate a threshold on your data (the report's histograms help)."""

  name = "felzenszwalb"

  def __init__(self, working_area: int = 128 * 128, scale: float = 100.0, sigma: float = 0.5, min_size: int = 50):
    self.working_area, self.scale, self.sigma, self.min_size = working_area, scale, sigma, min_size

  def count(self, image) -> int:
    import skimage.segmentation
    image = _checked(image)
    h, w = image.shape[:2]
    factor = np.sqrt(self.working_area / (h * w))
    size = (max(1, int(round(w * factor))), max(1, int(round(h * factor))))
    small = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))
    labels = skimage.segmentation.felzenszwalb(small, scale=self.scale, sigma=self.sigma, min_size=self.min_size,
                                               channel_axis=-1 if small.ndim == 3 else None)
    return int(labels.max() + 1)


def encode_jpeg(image: np.ndarray, quality: int) -> bytes:
  """Pillow's JPEG encoding at `quality` (what the tests and the reference set use)."""
  buf = io.BytesIO()
  Image.fromarray(_checked(image)).save(buf, format="JPEG", quality=quality)
  return buf.getvalue()


def decode(data: bytes) -> np.ndarray:
  return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
