import numpy as np
import pytest

from fractalpre import fractals
from fractalpre.fractals import ifs, render

SMALL = dict(size=64, points=8_000)


def test_one_p_frac_classes_pass_the_fill_test_and_share_the_base():
  ds = fractals.OnePFrac(num_classes=40, **SMALL)
  images, labels = ds.batch(range(40))
  np.testing.assert_array_equal(labels, np.arange(40))
  assert np.all(render.fill_rate(images) >= 0.05)
  for c in range(40):
    cs = ds.class_system(c)
    ratio = cs.system / ds.base
    assert np.all((ratio >= 0.9 - 1e-12) & (ratio <= 1.1 + 1e-12))
    np.testing.assert_array_equal(cs.probabilities, ifs.map_probabilities(ds.base))
    assert cs.fill == pytest.approx(render.fill_rate(images[c:c + 1])[0])
  assert abs(ifs.sigma_factor(ds.base) - 3.5) <= 0.1 + 1e-9
  assert len({im.tobytes() for im in images}) == 40


def test_redrawn_classes_record_their_attempt():
  # A high min_fill makes some classes need several draws; each accepted one passes the test.
  ds = fractals.OnePFrac(num_classes=30, min_fill=0.2, delta=0.5, **SMALL)
  images, _ = ds.batch(range(30))
  attempts = [ds.class_system(c).attempt for c in range(30)]
  assert max(attempts) > 0
  assert np.all(render.fill_rate(images) >= 0.2)
  fresh = fractals.OnePFrac(num_classes=30, min_fill=0.2, delta=0.5, **SMALL)
  np.testing.assert_array_equal(np.stack([fresh[i][0] for i in (29, 3, 17)]), images[[29, 3, 17]])


def test_same_bytes_whatever_the_order_or_subset():
  a = fractals.OnePFrac(num_classes=20, instances_per_class=2, **SMALL)
  b = fractals.OnePFrac(num_classes=20, instances_per_class=2, **SMALL)
  full, _ = a.batch(range(40))
  order = [37, 2, 11, 0, 39, 20]
  part, labels = b.batch(order)
  np.testing.assert_array_equal(part, full[order])
  np.testing.assert_array_equal(labels, np.array(order) // 2)
  assert not np.array_equal(full[0], full[1])  # instances differ in their patch masks
  other_seed, _ = fractals.OnePFrac(num_classes=20, instances_per_class=2, seed=1, **SMALL).batch([0])
  assert not np.array_equal(other_seed[0], full[0])


def test_sparse_base_fractal_fails_with_a_clear_message():
  ds = fractals.OnePFrac(num_classes=4, sigma=0.5, min_fill=0.5, max_redraws=3, seed=11, **SMALL)
  with pytest.raises(RuntimeError, match=r"seed=11: class 0 reached a fill rate of .* in 3 perturbation draws"):
    ds[0]


def test_fractaldb_instances_are_rows_variants_and_flips():
  ds = fractals.FractalDB(num_classes=3, instances_per_class=1000, **SMALL)
  idx = [0, 1, 25, 250, 500, 750, 1000]
  images, labels = ds.batch(idx)
  np.testing.assert_array_equal(labels, [0, 0, 0, 0, 0, 0, 1])
  base, row1, variant1, hflip, vflip, both, other = images
  np.testing.assert_array_equal(hflip, base[:, ::-1])
  np.testing.assert_array_equal(vflip, base[::-1])
  np.testing.assert_array_equal(both, base[::-1, ::-1])
  assert not np.array_equal(row1, base) and not np.array_equal(variant1, base)
  for c in range(3):
    assert ds.class_system(c).fill >= 0.2
  # Row 1 scales parameter a of every map by 0.2: it is the class system rendered that way.
  system = ifs.fractaldb_scaling(ds.class_system(0).system, 1)
  key = render.image_key(0, 4, 0, ds.class_system(0).attempt, 1, 0)
  np.testing.assert_array_equal(row1, render.render(system, key=key, **SMALL))


@pytest.mark.parametrize("cls,kwargs,message", [
    (fractals.OnePFrac, {"sigma": 6.0}, r"sigma must be in \(0, 6\) for 2 maps, got 6.0"),
    (fractals.OnePFrac, {"delta": -0.5}, "delta must be a finite number >= 0, got -0.5"),
    (fractals.OnePFrac, {"delta": float("inf")}, "delta must be a finite number >= 0, got inf"),
    (fractals.OnePFrac, {"size": 10**6}, r"size too large: size 1000000 with points 100000 needs [\d.]+ GiB"),
    (fractals.OnePFrac, {"num_classes": 0}, "num_classes must be > 0, got 0"),
    (fractals.OnePFrac, {"size": 8}, "size must be >= 16, got 8"),
    (fractals.OnePFrac, {"points": -1}, "points must be > 0, got -1"),
    (fractals.FractalDB, {"instances_per_class": 1001}, r"instances_per_class must be in \[1, 1000\], got 1001"),
])
def test_bad_arguments_are_refused(cls, kwargs, message):
  with pytest.raises(ValueError, match=message):
    cls(**kwargs)


def test_index_out_of_range():
  ds = fractals.OnePFrac(num_classes=3, **SMALL)
  with pytest.raises(IndexError, match=r"index must be in \[0, 3\), got 3"):
    ds[3]
