import numba
import numpy as np
import pytest

from fractalpre.fractals import ifs, render

U64 = np.uint64


def _mix(z):
  with np.errstate(over="ignore"):
    z = (z ^ (z >> U64(30))) * U64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> U64(27))) * U64(0x94D049BB133111EB)
    return z ^ (z >> U64(31))


def _nonempty(r):
  for shift in (0, 9, 18):
    m = int(r >> U64(shift)) & 0x1FF
    if m:
      return m
  return 16


def reference_render(system, key, size, points, pad, mode):
  """The renderer written again in plain NumPy/Python, point by point, from the documented rules."""
  n = len(system)
  cum = np.cumsum(ifs.map_probabilities(system))[:-1]
  thresholds = np.minimum(np.round(cum * 2.0**32), 2.0**32).astype(U64)
  with np.errstate(over="ignore"):
    draws = _mix(U64(key) + np.arange(1, points + 1, dtype=U64) * U64(0x9E3779B97F4A7C15))
  x0, y0 = ifs.start_point(system)
  chains = [[x0, y0] for _ in range(4)]
  pts = []
  for i in range(points):
    k = int(np.sum((draws[i] & U64(0xFFFFFFFF)) >= thresholds[: n - 1]))
    x, y = chains[i % 4]
    a = system[k].ravel()
    with np.errstate(over="ignore", invalid="ignore"):
      x, y = a[0] * x + a[1] * y + a[2], a[3] * x + a[4] * y + a[5]
      fx, fy = np.float32(x), np.float32(y)
    if np.isfinite(fx) and np.isfinite(fy):
      pts.append((i, float(fx), float(fy)))
    else:
      x, y = x0, y0
    chains[i % 4] = [x, y]
  xs, ys = np.array([p[1] for p in pts]), np.array([p[2] for p in pts])
  span = size - 2 * pad - 1
  sx, sy = span / (xs.max() - xs.min()), span / (ys.max() - ys.min())
  out = np.zeros((size, size), np.int64)
  for (i, x, y) in pts:
    col = pad + int((x - xs.min()) * sx)
    row = size - 1 - pad - int((y - ys.min()) * sy)
    if mode == "patch":
      m = _nonempty(draws[i] >> U64(32))
      for b in range(9):
        if m >> b & 1:
          out[row - 1 + b // 3, col - 1 + b % 3] = render.PATCH_GRAY
    else:
      out[row, col] += 1
  if mode == "density":
    out = (out * 255 + out.max() // 2) // out.max()
  elif mode == "binary":
    out = np.where(out > 0, 255, 0)
  return out.astype(np.uint8)


@pytest.mark.parametrize("mode", ["patch", "binary", "density"])
@pytest.mark.parametrize("size,n_maps", [(64, 2), (66, 4), (130, 3), (200, 5), (97, 8)])
def test_kernel_equals_the_reference(mode, size, n_maps):
  # 66 and 97 put patches in the canvas's last columns (past its last word's first 32); 8 maps fill
  # every threshold.
  system = ifs.sample_sigma_system(ifs.rng_for(size, n_maps), n_maps, 0.8 * n_maps + 1)
  got = render.render(system, key=1234 + size, size=size, points=3001, mode=mode, pad=4)
  np.testing.assert_array_equal(got, reference_render(system, 1234 + size, size, 3001, 4, mode))


@pytest.mark.parametrize("mode", ["patch", "binary"])
def test_overflowing_orbits_restart_and_match_the_reference(mode):
  system = np.array([[[1.9, 0.3, 0.5], [0.2, 1.7, -0.4]], [[0.4, 0.0, 0.1], [0.0, 0.4, 0.3]]])
  got = render.render(system, key=7, size=64, points=4000, mode=mode, pad=3)
  want = reference_render(system, 7, 64, 4000, 3, mode)
  assert got.any()
  np.testing.assert_array_equal(got, want)


def test_mask_mode_uses_one_mask_for_every_point():
  system = ifs.sample_sigma_system(ifs.rng_for(4), 2, 3.0)
  image = render.render(system, key=3, size=96, points=5000, mode="mask")
  binary = render.render(system, key=3, size=96, points=5000, mode="binary")
  m = _nonempty(_mix(U64(3)))
  expected = np.zeros((96 + 2, 96 + 2), bool)
  for b in range(9):
    if m >> b & 1:
      expected[b // 3:b // 3 + 96, b % 3:b % 3 + 96] |= binary > 0
  np.testing.assert_array_equal(image > 0, expected[1:-1, 1:-1])
  assert set(np.unique(image)) <= {0, render.PATCH_GRAY}


def test_same_bytes_across_thread_counts_and_batch_splits():
  systems = [ifs.sample_sigma_system(ifs.rng_for(i), 2, 3.5) for i in range(6)]
  keys = [render.image_key(0, i) for i in range(6)]
  before = numba.get_num_threads()
  try:
    numba.set_num_threads(1)
    one = render.render_batch(systems, keys, size=96, points=20_000)
    numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
    two = render.render_batch(systems, keys, size=96, points=20_000)
  finally:
    numba.set_num_threads(before)
  np.testing.assert_array_equal(one, two)
  split = np.concatenate([render.render_batch(systems[:1], keys[:1], size=96, points=20_000),
                          render.render_batch(systems[1:], keys[1:], size=96, points=20_000)])
  np.testing.assert_array_equal(one, split)
  assert len({im.tobytes() for im in one}) == 6


def test_color_and_background():
  system = ifs.sample_sigma_system(ifs.rng_for(8), 2, 3.5)
  gray = render.render(system, key=5, size=64, points=10_000)
  rgb = render.render(system, key=5, size=64, points=10_000, color=True)
  both = render.render(system, key=5, size=64, points=10_000, color=True, background=True)
  assert rgb.shape == both.shape == (64, 64, 3)
  np.testing.assert_array_equal(rgb.any(-1), gray > 0)  # black outside the fractal
  np.testing.assert_array_equal(both[gray > 0], rgb[gray > 0])  # the fractal overwrites the background
  assert both[gray == 0].any(-1).mean() > 0.9
  # One hue offset, saturation and value per image: every fractal pixel is the same colour here.
  assert len({tuple(c) for c in rgb[gray > 0]}) == 1


def test_fill_rate_counts_nonzero_pixels():
  images = np.zeros((2, 4, 4, 3), np.uint8)
  images[0, 0, 0, 1] = 9
  images[1, :2] = 1
  np.testing.assert_allclose(render.fill_rate(images), [1 / 16, 0.5])


@pytest.mark.parametrize("kwargs,message", [
    ({"size": 15}, "size must be >= 16, got 15"),
    ({"points": 0}, "points must be > 0, got 0"),
    ({"mode": "dots"}, "mode must be one of"),
    ({"pad": 0}, r"pad must be in \[1, 30\] for size 64, got 0"),
    ({"background": True}, "background needs color"),
])
def test_bad_settings_are_refused(kwargs, message):
  settings = {"size": 64, "points": 100, **kwargs}
  with pytest.raises(ValueError, match=message):
    render.render(np.zeros((2, 2, 3)), **settings)


def test_bad_map_probabilities_are_refused():
  systems = [ifs.sample_sigma_system(ifs.rng_for(i), 2, 3.5) for i in range(3)]
  good = [ifs.map_probabilities(s) for s in systems]
  with pytest.raises(ValueError, match=r"map probabilities must be 2 non-negative numbers summing to 1, got \[0.5 0.6\]"):
    render.render_batch(systems, [1, 2, 3], size=32, points=100, probabilities=[good[0], [0.5, 0.6], good[2]])
  with pytest.raises(ValueError, match="map probabilities must be 2 non-negative numbers"):
    render.render_batch(systems, [1, 2, 3], size=32, points=100, probabilities=[good[0], good[1], [1.0]])


def test_reused_output_buffer_gives_the_same_images():
  systems = [ifs.sample_sigma_system(ifs.rng_for(i), 2, 3.5) for i in range(3)]
  fresh = render.render_batch(systems, [1, 2, 3], size=48, points=2000)
  buffer = np.full((3, 48, 48), 9, np.uint8)
  assert render.render_batch(systems, [1, 2, 3], size=48, points=2000, out=buffer) is buffer
  np.testing.assert_array_equal(buffer, fresh)
  with pytest.raises(ValueError, match=r"out must be a C-contiguous uint8 array of shape \(3, 48, 48\)"):
    render.render_batch(systems, [1, 2, 3], size=48, points=2000, out=np.zeros((3, 48, 40), np.uint8))
