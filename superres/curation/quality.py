"""Dataset-level JPEG quality estimate (DiverSeg, "Rethinking Image Super-Resolution from Training Data
Perspectives", ECCV 2024): gates whole sources, not single images.

The target set's blockiness distribution is compared with those of a reference set re-encoded at
q in {100, 95, 85, 75, 50}: D_q = KL(target || reference_q) between Gaussian KDEs on one grid, and
q_hat = sum_q (q/100) exp(-D_q) / sum_q exp(-D_q). DiverSeg drops sources with q_hat < 0.9.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
from scipy.stats import gaussian_kde

from superres.curation import metrics

QUALITIES = (100, 95, 85, 75, 50)
MAX_SCORE = 300.0
BUNDLED_PHOTOS = ("astronaut", "camera", "coffee", "chelsea", "rocket", "coins", "immunohistochemistry",
                  "hubble_deep_field", "retina", "brick", "grass", "gravel", "moon", "clock", "text", "page")


def bundled_photos(names: Sequence[str] = BUNDLED_PHOTOS) -> list[np.ndarray]:
  """The real photos that ship inside scikit-image (all, or those named), as RGB uint8."""
  import skimage.data
  from PIL import Image
  unknown = sorted(set(names) - set(BUNDLED_PHOTOS))
  if unknown:
    raise ValueError(f"unknown photo(s) {unknown}; bundled: {list(BUNDLED_PHOTOS)}")
  return [np.asarray(Image.fromarray(getattr(skimage.data, name)()).convert("RGB")) for name in names]


def reference_scores(images: Iterable[np.ndarray], qualities: Sequence[int] = QUALITIES) -> dict[int, np.ndarray]:
  """Blockiness of every reference image re-encoded at each quality."""
  images = list(images)
  return {q: np.array([metrics.blockiness(metrics.decode(metrics.encode_jpeg(im, q))) for im in images])
          for q in qualities}


def _density(scores: np.ndarray, grid: np.ndarray) -> np.ndarray:
  scores = scores[np.isfinite(scores) & (scores < MAX_SCORE)]
  if len(scores) < 2 or np.ptp(scores) == 0:
    raise ValueError(f"need at least 2 distinct scores below {MAX_SCORE:g} to fit a density, got {len(scores)}")
  p = gaussian_kde(scores)(grid) + 1e-12
  return p / p.sum()


def estimate(target: np.ndarray, reference: dict[int, np.ndarray], grid_points: int = 1201) -> dict:
  """{'quality': q_hat in [0, 1], 'kl': {q: D_q}} for the target's blockiness scores."""
  grid = np.linspace(0.0, MAX_SCORE, grid_points)
  p = _density(np.asarray(target, np.float64), grid)
  kl = {q: float(np.sum(p * np.log(p / _density(np.asarray(s, np.float64), grid)))) for q, s in reference.items()}
  d = np.array(list(kl.values()))
  w = np.exp(-(d - d.min()))  # shifting D leaves the normalised weights unchanged
  q_hat = float(np.sum(np.array(list(kl)) / 100.0 * w) / w.sum())
  return {"quality": q_hat, "kl": kl}
