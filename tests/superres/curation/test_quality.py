import numpy as np
import pytest

from superres.curation import metrics, quality


@pytest.fixture(scope="module")
def setup():
  photos = quality.bundled_photos()
  reference = quality.reference_scores(photos)
  rng = np.random.default_rng(0)
  crops = []
  for photo in photos:  # crops at random places and sizes: images the reference does not contain
    h, w = photo.shape[:2]
    for _ in range(3):
      ch, cw = rng.integers(h // 3, h // 2), rng.integers(w // 3, w // 2)
      y, x = rng.integers(0, h - ch), rng.integers(0, w - cw)
      crops.append(photo[y:y + ch, x:x + cw])
  return reference, crops


def estimate_at(setup, q):
  reference, crops = setup
  scores = np.array([metrics.blockiness(metrics.decode(metrics.encode_jpeg(c, q))) for c in crops])
  return quality.estimate(scores, reference)["quality"]


def test_q75_crops_are_estimated_within_five(setup):
  assert 0.70 <= estimate_at(setup, 75) <= 0.80


def test_estimates_are_ordered(setup):
  assert estimate_at(setup, 95) > estimate_at(setup, 75) > estimate_at(setup, 50)


def test_degenerate_targets_are_refused():
  with pytest.raises(ValueError, match="need at least 2 distinct scores below 300"):
    quality.estimate(np.array([5.0, np.nan, 400.0]), {100: np.array([1.0, 2.0])})
