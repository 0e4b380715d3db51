import numpy as np
import pytest

from fractalpre.fractals import single_image


def test_classes_are_fixed_affine_views_deterministic_by_seed():
  a = single_image.SingleImage("camera", num_classes=5, size=48, delta=0.2)
  b = single_image.SingleImage("camera", num_classes=5, size=48, delta=0.2)
  images, labels = a.batch([4, 0, 2])
  np.testing.assert_array_equal(images, b.batch([4, 0, 2])[0])
  np.testing.assert_array_equal(labels, [4, 0, 2])
  assert len({im.tobytes() for im in a.batch(range(5))[0]}) == 5
  other = single_image.SingleImage("camera", num_classes=5, size=48, delta=0.2, seed=1)
  assert not np.array_equal(other[0][0], images[1])


def test_zero_delta_is_the_image_itself_and_edges_are_binary():
  ds = single_image.SingleImage("camera", num_classes=2, size=40, delta=0.0)
  np.testing.assert_allclose(ds[0][0].astype(int), ds.base.astype(int), atol=1)
  edges = single_image.SingleImage("astronaut", num_classes=2, size=64, rendering="edges", delta=0.0)
  assert set(np.unique(edges.base)) == {0, 255}


def test_image_from_a_path(tmp_path):
  from PIL import Image
  path = tmp_path / "x.png"
  Image.fromarray(np.tile(np.arange(64, dtype=np.uint8), (32, 1))).save(path)
  ds = single_image.SingleImage(str(path), num_classes=3, size=32)
  assert ds[2][0].shape == (32, 32)


def test_bad_arguments():
  with pytest.raises(ValueError, match="scikit-image photo name"):
    single_image.SingleImage("no_such_photo")
  with pytest.raises(ValueError, match="rendering must be one of"):
    single_image.SingleImage("camera", rendering="rgb")
