import io

import numpy as np
import pytest
import scipy.stats
import skimage.data
from PIL import Image

from superres.curation import metrics, quality

ASTRONAUT = skimage.data.astronaut()


def test_gray_is_opencvs_integer_formula():
  rgb = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [10, 200, 30]]], np.uint8)
  want = [(9798 * r + 19235 * g + 3735 * b + 16384) >> 15 for r, g, b in rgb[0].astype(int)]
  np.testing.assert_array_equal(metrics.opencv_gray(rgb)[0], want)


@pytest.mark.parametrize("shape", [(512, 512), (203, 317), (100, 77)])
def test_vectorised_blockiness_equals_the_per_block_loop(shape):
  image = np.asarray(Image.fromarray(ASTRONAUT).resize(shape[::-1]))
  jpeg = metrics.decode(metrics.encode_jpeg(image, 60))
  assert metrics.blockiness(jpeg) == pytest.approx(metrics.blockiness_per_block(jpeg), abs=1e-9)


def test_blockiness_on_astronaut_matches_the_published_values():
  # The DiverSeg authors' definition, measured: PNG 1.71, q95 6.97, q85 24.0, q75 43.5, q50 100.5.
  got = [metrics.blockiness(ASTRONAUT)] + [metrics.blockiness(metrics.decode(metrics.encode_jpeg(ASTRONAUT, q)))
                                           for q in (95, 85, 75, 50, 30)]
  np.testing.assert_allclose(got, [1.71, 6.97, 24.0, 43.5, 100.5, 159.5], rtol=0.005)


def test_blockiness_rises_with_compression_on_the_bundled_photos():
  # Per quality, the median over the bundled photos. (Single photos that were JPEGs before scikit-image
  # shipped them, like `coins`, keep their old blocks: flat above q75, so not monotonic on their own.)
  qualities = [100, 95, 85, 75, 50, 30]
  scores = np.array([[metrics.blockiness(metrics.decode(metrics.encode_jpeg(photo, q))) for q in qualities]
                     for photo in quality.bundled_photos()])
  assert scipy.stats.spearmanr(qualities, np.median(scores, axis=0)).statistic <= -0.95
  monotonic = [scipy.stats.spearmanr(qualities, s).statistic <= -0.95 for s in scores]
  assert sum(monotonic) >= 0.75 * len(monotonic)


def test_flat_and_tiny_images_are_unscorable():
  assert np.isnan(metrics.blockiness(np.full((64, 64, 3), 90, np.uint8)))
  assert np.isnan(metrics.blockiness(np.zeros((30, 30), np.uint8)))


@pytest.mark.parametrize("q", [5, 23, 50, 75, 90, 95, 100])
def test_header_quality_is_the_encoders_quality(q):
  image = Image.open(io.BytesIO(metrics.encode_jpeg(ASTRONAUT, q)))
  assert metrics.jpeg_quality(image.quantization) == (float(q), True)


def test_header_quality_absent_for_png():
  buf = io.BytesIO()
  Image.fromarray(ASTRONAUT).save(buf, format="PNG")
  assert metrics.jpeg_quality(getattr(Image.open(buf), "quantization", None)) == (None, False)


def test_simple_scores_against_direct_computation():
  rng = np.random.default_rng(0)
  gray = rng.integers(0, 256, (64, 64)).astype(np.uint8)
  counts = np.bincount(gray.ravel(), minlength=256) / gray.size
  assert metrics.entropy(gray) == pytest.approx(-sum(p * np.log2(p) for p in counts if p > 0))
  lap = 4 * gray[1:-1, 1:-1].astype(float) - gray[:-2, 1:-1] - gray[2:, 1:-1] - gray[1:-1, :-2] - gray[1:-1, 2:]
  assert metrics.sharpness(gray) > 0.9 * lap.var()  # same operator; the border differs
  half = np.zeros((64, 64), np.uint8)
  half[:, 32:] = rng.integers(0, 256, (64, 32))
  assert metrics.flat_fraction(half) == pytest.approx(0.5)
  assert metrics.megapixels(np.zeros((1000, 2000, 3))) == 2.0


def test_perceptual_hash_finds_resized_reencoded_copies_only():
  photos = quality.bundled_photos()
  hashes = [metrics.perceptual_hash(p) for p in photos]
  for photo, h in zip(photos, hashes):
    small = np.asarray(Image.fromarray(photo).resize((photo.shape[1] // 3, photo.shape[0] // 3)))
    copy = metrics.decode(metrics.encode_jpeg(small, 70))
    assert metrics.hamming(h, metrics.perceptual_hash(copy)) <= 10
  distinct = [metrics.hamming(a, b) for i, a in enumerate(hashes) for b in hashes[i + 1:]]
  assert min(distinct) > 10


def test_segment_count_is_comparable_across_sizes_and_rises_with_detail():
  seg = metrics.FelzenszwalbSegmenter()
  big = seg.count(ASTRONAUT)
  small = seg.count(np.asarray(Image.fromarray(ASTRONAUT).resize((256, 256))))
  assert abs(big - small) <= 0.25 * big
  assert seg.count(np.full((300, 300, 3), 120, np.uint8)) == 1


def test_float_and_integer_inputs_score_like_their_uint8_image():
  image = ASTRONAUT[:128, :128]
  expected = [metrics.blockiness(image), metrics.sharpness(image), metrics.entropy(image),
              metrics.flat_fraction(image), metrics.perceptual_hash(image),
              metrics.FelzenszwalbSegmenter().count(image)]
  for variant in (image / 255.0, (image / 255.0).astype(np.float32), image.astype(np.float32), image.astype(np.int64)):
    got = [metrics.blockiness(variant), metrics.sharpness(variant), metrics.entropy(variant),
           metrics.flat_fraction(variant), metrics.perceptual_hash(variant),
           metrics.FelzenszwalbSegmenter().count(variant)]
    assert got == pytest.approx(expected), variant.dtype
  assert metrics.to_uint8(image / 255.0)[1] == "float64 in [0, 1] scaled to 8-bit"


@pytest.mark.parametrize("image,message", [
    (np.full((64, 64), np.nan), "NaN or infinite"),
    (np.zeros((0, 0, 3), np.uint8), r"no pixels \(shape \(0, 0, 3\)\)"),
    (np.zeros((8, 8, 5), np.uint8), r"shape \(H, W\) or \(H, W, 3\), got \(8, 8, 5\)"),
    (np.full((64, 64), 300.0), r"float image values must be in \[0, 1\] or \[0, 255\], got \[300, 300\]"),
    (np.full((64, 64), 4000, np.uint16), r"integer image values must be in \[0, 255\]"),
    (np.zeros((64, 64), bool), "dtype bool"),
])
def test_images_that_would_be_misread_are_refused(image, message):
  for score in (metrics.blockiness, metrics.perceptual_hash, metrics.sharpness, metrics.megapixels,
                metrics.FelzenszwalbSegmenter().count):
    with pytest.raises(ValueError, match=message):
      score(image)
