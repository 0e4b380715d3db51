"""Numba kernels that turn an IFS into an image: chaos game, bounding-box fit, rasterisation.

Every random choice comes from a counter-based generator (SplitMix64 of `key + i`), so an image is a
pure function of (system, key, settings): the same bytes whatever the thread count or batch split.
Kernels release the GIL; `render_batch` renders images in parallel across cores.

Non-finite points: a point with a coordinate beyond float32's range (|v| > 3.4e38, inf or NaN; possible
for the non-contractive FractalDB systems) is not drawn, and its chain restarts from the start point.
"""
from __future__ import annotations

from collections.abc import Sequence

import numba
import numpy as np

MODES = ("patch", "mask", "binary", "density")
MAX_MAPS = 8
PATCH_GRAY = 127
CHAINS = 4
BLOCK = 4096

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_LOW32 = np.uint64(0xFFFFFFFF)
_MASK9 = np.uint64(0x1FF)


@numba.njit(inline="always", cache=True)
def _mix(z):
  """SplitMix64's finaliser: a bijective hash, so hash(key + i) is a counter-based generator."""
  z = (z ^ (z >> np.uint64(30))) * _M1
  z = (z ^ (z >> np.uint64(27))) * _M2
  return z ^ (z >> np.uint64(31))


@numba.njit(inline="always", cache=True)
def _uniform(key, i):
  """U[0, 1) from the i-th draw of stream `key`."""
  return (_mix(key + np.uint64(i) * _GOLDEN) >> np.uint64(11)) * (1.0 / 9007199254740992.0)


@numba.njit(inline="always", cache=True)
def _nonempty_mask(r):
  """A random non-empty 3x3 mask (9 bits, row-major) from the low 27 bits of r: three tries, then
  the centre pixel."""
  m = r & _MASK9
  if m == 0:
    m = (r >> np.uint64(9)) & _MASK9
    if m == 0:
      m = (r >> np.uint64(18)) & _MASK9
      if m == 0:
        m = np.uint64(16)
  return m


@numba.njit(inline="always", cache=True)
def _map_index(u, n_maps, thresholds):
  k = 0
  for j in range(n_maps - 1):
    k += u >= thresholds[j]
  return k


@numba.njit(nogil=True, cache=True)
def _fill_draws(key, first, draws):
  """draws[j] = draw first + j + 1 of the key's stream; no loop-carried dependency, so it vectorises."""
  for j in range(draws.shape[0]):
    draws[j] = _mix(key + np.uint64(first + j + 1) * _GOLDEN)


@numba.njit(inline="always", cache=True)
def _affine(coef, n_maps, thresholds, draw, x, y):
  k = _map_index(draw & _LOW32, n_maps, thresholds)
  return coef[k, 0] * x + coef[k, 1] * y + coef[k, 2], coef[k, 3] * x + coef[k, 4] * y + coef[k, 5]


@numba.njit(inline="always", cache=True)
def _store(xy, i, x, y, box):
  """Stores a point as float32 and widens the box (compares: Numba's min/max are slow)."""
  fx, fy = np.float32(x), np.float32(y)
  xy[i, 0] = fx
  xy[i, 1] = fy
  xmin, xmax, ymin, ymax = box
  return (fx if fx < xmin else xmin, fx if fx > xmax else xmax,
          fy if fy < ymin else ymin, fy if fy > ymax else ymax)


@numba.njit(nogil=True, cache=True)
def _orbit_block(coef, n_maps, thresholds, draws, first, xy, cx, cy, box):
  """Points first .. first + len(draws) - 1 of CHAINS = 4 interleaved orbits whose current points are
  (cx, cy): point i follows point i - 4 by the map that the low 32 bits of its draw pick. Independent
  chains hide the latency of the serial affine updates. Points are stored as float32 and the box is
  taken over the stored values, so every stored point maps into the canvas without clamping."""
  xa, xb, xc, xd = cx[0], cx[1], cx[2], cx[3]
  ya, yb, yc, yd = cy[0], cy[1], cy[2], cy[3]
  n = draws.shape[0]
  for j in range(0, n - n % 4, 4):
    xa, ya = _affine(coef, n_maps, thresholds, draws[j], xa, ya)
    xb, yb = _affine(coef, n_maps, thresholds, draws[j + 1], xb, yb)
    xc, yc = _affine(coef, n_maps, thresholds, draws[j + 2], xc, yc)
    xd, yd = _affine(coef, n_maps, thresholds, draws[j + 3], xd, yd)
    box = _store(xy, first + j, xa, ya, box)
    box = _store(xy, first + j + 1, xb, yb, box)
    box = _store(xy, first + j + 2, xc, yc, box)
    box = _store(xy, first + j + 3, xd, yd, box)
  for j in range(n - n % 4, n):  # only in the last block: BLOCK is a multiple of 4
    xa, ya = _affine(coef, n_maps, thresholds, draws[j], xa, ya)
    box = _store(xy, first + j, xa, ya, box)
  cx[0], cx[1], cx[2], cx[3] = xa, xb, xc, xd
  cy[0], cy[1], cy[2], cy[3] = ya, yb, yc, yd
  return box


@numba.njit(nogil=True, cache=True)
def _orbit_block_restarting(coef, n_maps, thresholds, draws, first, xy, cx, cy, box, x0, y0):
  """`_orbit_block` for orbits that overflow: a point that is not finite in float32 is stored as NaN
  (not drawn) and its chain goes on from (x0, y0)."""
  for j in range(draws.shape[0]):
    c = (first + j) % CHAINS
    x, y = _affine(coef, n_maps, thresholds, draws[j], cx[c], cy[c])
    if np.isfinite(np.float32(x)) and np.isfinite(np.float32(y)):
      box = _store(xy, first + j, x, y, box)
    else:
      x, y = x0, y0
      xy[first + j, 0] = np.nan
    cx[c], cy[c] = x, y
  return box


@numba.njit(inline="always", cache=True)
def _or_pattern(bits, word, shift, pattern):
  """ORs a 3-bit pattern into a row of the bit canvas at bit `shift` of `word` (may spill over)."""
  bits[word] |= pattern << shift
  if shift > np.uint64(61):
    bits[word + np.uint64(1)] |= pattern >> (np.uint64(64) - shift)


@numba.njit(nogil=True, cache=True)
def _draw_patches(xy, first, draws, checked, xmin, sx, ox, ymin, sy, oy, words, image_mask, bits):
  """ORs the 3x3 mask of points first .. first + len(draws) - 1 (each its own, from the high bits of
  its draw, or `image_mask` when non-zero) into the bit canvas as three rows of 3 bits: three
  read-modify-writes per point instead of nine. Unsigned indices: Numba adds no wrap-around code."""
  seven, three, six, sixty_three = np.uint64(7), np.uint64(3), np.uint64(6), np.uint64(63)
  words = np.uint64(words)
  for j in range(draws.shape[0]):
    i = first + j
    if checked and np.isnan(xy[i, 0]):
      continue
    left = np.uint64(ox - 1 + int((xy[i, 0] - xmin) * sx))
    top = np.uint64(oy - 1 - int((xy[i, 1] - ymin) * sy))
    word, shift = top * words + (left >> np.uint64(6)), left & sixty_three
    m = image_mask if image_mask else _nonempty_mask(draws[j] >> np.uint64(32))
    _or_pattern(bits, word, shift, m & seven)
    _or_pattern(bits, word + words, shift, (m >> three) & seven)
    _or_pattern(bits, word + words + words, shift, (m >> six) & seven)


@numba.njit(nogil=True, cache=True)
def _render_one(coef, n_maps, thresholds, x0, y0, key, pad, mode, xy, draws, bits, out):
  """Renders into out (size, size). Draws are made BLOCK at a time (twice: for the orbit, then for the
  masks) so that only the float32 points, not the draws, must stay in cache."""
  size, points, block = out.shape[0], xy.shape[0], draws.shape[0]
  out[:] = 0
  cx, cy = np.full(CHAINS, x0), np.full(CHAINS, y0)
  box = (np.inf, -np.inf, np.inf, -np.inf)
  for first in range(0, points, block):
    d = draws[:min(block, points - first)]
    _fill_draws(key, first, d)
    box = _orbit_block(coef, n_maps, thresholds, d, first, xy, cx, cy, box)
  xmin, xmax, ymin, ymax = box
  restart = not (np.isfinite(xmin) and np.isfinite(xmax) and np.isfinite(ymin) and np.isfinite(ymax))
  if restart:  # an orbit's first non-finite float32 coordinate is +-inf, so it shows in the box
    cx[:], cy[:] = x0, y0
    box = (np.inf, -np.inf, np.inf, -np.inf)
    for first in range(0, points, block):
      d = draws[:min(block, points - first)]
      _fill_draws(key, first, d)
      box = _orbit_block_restarting(coef, n_maps, thresholds, d, first, xy, cx, cy, box, x0, y0)
    xmin, xmax, ymin, ymax = box
    if not xmin <= xmax:
      return
  # Pixel = offset + floor((v - min) * scale): in [0, span] for every stored v, so no clamping.
  span = size - 2 * pad - 1
  sx = span / (xmax - xmin) if xmax > xmin else 0.0
  sy = span / (ymax - ymin) if ymax > ymin else 0.0
  ox = pad + (0 if xmax > xmin else span // 2)
  oy = size - 1 - pad - (0 if ymax > ymin else span // 2)  # rows count down: the image is flipped
  if mode <= 1:
    words = size // 64 + 1
    image_mask = _nonempty_mask(_mix(key)) if mode == 1 else np.uint64(0)
    bits[:] = 0
    for first in range(0, points, block):
      d = draws[:min(block, points - first)]
      if mode == 0:
        _fill_draws(key, first, d)
      _draw_patches(xy, first, d, restart, xmin, sx, ox, ymin, sy, oy, words, image_mask, bits)
    for r in range(size):
      for c in range(size):
        w = bits[r * words + (c >> 6)]
        out[r, c] = np.uint8(((w >> np.uint64(c & 63)) & np.uint64(1)) * PATCH_GRAY)
    return
  counts = np.zeros((size, size), np.uint32)
  for i in range(points):
    if not np.isnan(xy[i, 0]):
      counts[oy - int((xy[i, 1] - ymin) * sy), ox + int((xy[i, 0] - xmin) * sx)] += 1
  peak = counts.max()
  for r in range(size):
    for c in range(size):
      if mode == 2:
        out[r, c] = 255 if counts[r, c] else 0
      else:
        out[r, c] = np.uint8((counts[r, c] * 255 + peak // 2) // peak)


@numba.njit(nogil=True, parallel=True, cache=True)
def _render_batch(coefs, n_maps, thresholds, starts, keys, points, pad, mode, threads, out):
  """Each thread renders every `threads`-th image into buffers it allocates once."""
  count, size = out.shape[0], out.shape[1]
  # Per-thread buffers, one row each, padded to whole pages so that threads never share a cache line.
  xy = np.empty((threads, points + 1024, 2), np.float32)
  draws = np.empty((threads, min(points, BLOCK) + 512), np.uint64)
  bits = np.empty((threads, size * (size // 64 + 1) + 512), np.uint64)
  for t in numba.prange(threads):
    for b in range(t, count, threads):
      _render_one(coefs[b], n_maps[b], thresholds[b], starts[b, 0], starts[b, 1], keys[b], pad, mode,
                  xy[t, :points], draws[t, :min(points, BLOCK)], bits[t, :size * (size // 64 + 1)], out[b])


@numba.njit(inline="always", cache=True)
def _hsv_to_rgb(h, s, v):
  """h, s, v in [0, 1) -> r, g, b in [0, 255]."""
  i = int(h * 6.0) % 6
  f = h * 6.0 - int(h * 6.0)
  p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
  if i == 0:
    r, g, b = v, t, p
  elif i == 1:
    r, g, b = q, v, p
  elif i == 2:
    r, g, b = p, v, t
  elif i == 3:
    r, g, b = p, q, v
  elif i == 4:
    r, g, b = t, p, v
  else:
    r, g, b = v, p, q
  return np.uint8(r * 255.0 + 0.5), np.uint8(g * 255.0 + 0.5), np.uint8(b * 255.0 + 0.5)


@numba.njit(nogil=True, cache=True)
def _plasma(n, key):
  """Diamond-square plasma noise on an (n, n) grid, n = 2^k + 1, values scaled to [0, 1]."""
  g = np.zeros((n, n))
  draw = 0
  for r, c in ((0, 0), (0, n - 1), (n - 1, 0), (n - 1, n - 1)):
    g[r, c] = _uniform(key, draw)
    draw += 1
  step, amp = n - 1, 1.0
  while step > 1:
    half = step // 2
    for r in range(half, n, step):
      for c in range(half, n, step):
        avg = (g[r - half, c - half] + g[r - half, c + half] + g[r + half, c - half] + g[r + half, c + half]) / 4
        g[r, c] = avg + (_uniform(key, draw) - 0.5) * amp
        draw += 1
    for r in range(0, n, half):
      for c in range((r + half) % step, n, step):
        total, cnt = 0.0, 0
        for dr, dc in ((-half, 0), (half, 0), (0, -half), (0, half)):
          rr, cc = r + dr, c + dc
          if 0 <= rr < n and 0 <= cc < n:
            total += g[rr, cc]
            cnt += 1
        g[r, c] = total / cnt + (_uniform(key, draw) - 0.5) * amp
        draw += 1
    step, amp = half, amp * 0.5
  lo, hi = g.min(), g.max()
  return (g - lo) / (hi - lo) if hi > lo else g * 0.0


@numba.njit(nogil=True, parallel=True, cache=True)
def _colorize_batch(gray, keys, background, out):
  """REFERENCE A5: fractal hue = gray + random offset, saturation U(0.3, 1), value U(0.5, 1);
  background either black or colourised plasma that the fractal overwrites."""
  size = gray.shape[1]
  n = 2
  while n + 1 < size:
    n *= 2
  for b in numba.prange(gray.shape[0]):
    key = _mix(keys[b] ^ np.uint64(0xC0105))
    hue0 = _uniform(key, 0)
    sat = 0.3 + 0.7 * _uniform(key, 1)
    val = 0.5 + 0.5 * _uniform(key, 2)
    plasma = _plasma(n + 1, _mix(key)) if background else np.zeros((1, 1))
    bg_hue0 = _uniform(key, 3)
    for r in range(size):
      for c in range(size):
        g = gray[b, r, c]
        if g:
          out[b, r, c, 0], out[b, r, c, 1], out[b, r, c, 2] = _hsv_to_rgb(
              (g / 255.0 + hue0) % 1.0, sat, val)
        elif background:
          p = plasma[r, c]
          out[b, r, c, 0], out[b, r, c, 1], out[b, r, c, 2] = _hsv_to_rgb(
              (p + bg_hue0) % 1.0, 0.3 + 0.5 * p, 0.2 + 0.6 * p)
        else:
          out[b, r, c, :] = 0


def image_key(*key: int) -> int:
  """A 64-bit render key that is a pure function of integers such as (seed, class, instance, attempt)."""
  a, b = np.random.SeedSequence([int(k) for k in key]).generate_state(2, np.uint32)
  return (int(a) << 32) | int(b)


def _pack(systems: Sequence[np.ndarray], probabilities: Sequence[np.ndarray] | None = None):
  """Systems -> padded coefficient, map-count, threshold and start-point arrays for the kernels,
  computed for the whole batch at once (per-system NumPy calls cost more than rendering small images)."""
  count = len(systems)
  coefs = np.zeros((count, MAX_MAPS, 6))
  n_maps = np.zeros(count, np.int64)
  for i, system in enumerate(systems):
    system = np.asarray(system, np.float64)
    if system.ndim != 3 or system.shape[1:] != (2, 3) or not 1 <= len(system) <= MAX_MAPS:
      raise ValueError(f"a system must have shape (N, 2, 3) with 1 <= N <= {MAX_MAPS}, got {system.shape}")
    n_maps[i] = len(system)
    coefs[i, :len(system)] = system.reshape(len(system), 6)
  valid = np.arange(MAX_MAPS)[None, :] < n_maps[:, None]
  if probabilities is None:  # |det A_i| / sum_j |det A_j|, uniform when every map is singular (ifs.map_probabilities)
    det = np.abs(coefs[..., 0] * coefs[..., 4] - coefs[..., 1] * coefs[..., 3]) * valid
    total = det.sum(axis=1, keepdims=True)
    p = np.where(total > 0, det / np.where(total > 0, total, 1), valid / n_maps[:, None])
  else:
    p = np.zeros((count, MAX_MAPS))
    for i, (q, n) in enumerate(zip(probabilities, n_maps)):
      q = np.asarray(q, np.float64)
      if q.shape != (n,) or not np.all(q >= 0) or not np.isclose(q.sum(), 1.0):
        raise ValueError(f"map probabilities must be {n} non-negative numbers summing to 1, got {q}")
      p[i, :n] = q
  cum = np.cumsum(p, axis=1)
  thresholds = np.where(np.arange(MAX_MAPS)[None, :] < n_maps[:, None] - 1,
                        np.minimum(np.round(cum * 2.0**32), 2.0**32), 0).astype(np.uint64)
  # Start at the fixed point of map 1, (I - A_1)^-1 b_1 (ifs.start_point), by Cramer's rule.
  a, b, e, c, d, f = (coefs[:, 0, k] for k in range(6))
  det = (1 - a) * (1 - d) - b * c
  ok = np.abs(det) >= 1e-12
  safe = np.where(ok, det, 1.0)
  starts = np.stack([np.where(ok, ((1 - d) * e + b * f) / safe, 0.0), np.where(ok, (c * e + (1 - a) * f) / safe, 0.0)], 1)
  return coefs, n_maps, thresholds, starts


def validate(size: int, points: int, mode: str, pad: int, color: bool = False, background: bool = False) -> None:
  """Raises ValueError naming the first bad setting and what is allowed."""
  if size < 16:
    raise ValueError(f"size must be >= 16, got {size}")
  if points <= 0:
    raise ValueError(f"points must be > 0, got {points}")
  if mode not in MODES:
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
  if not 1 <= pad <= (size - 4) // 2:
    raise ValueError(f"pad must be in [1, {(size - 4) // 2}] for size {size}, got {pad}")
  if background and not color:
    raise ValueError("background needs color (a plasma background is coloured)")


def render_batch(systems: Sequence[np.ndarray], keys: Sequence[int], *, size: int = 224,
                 points: int = 100_000, mode: str = "patch", pad: int = 6, color: bool = False,
                 background: bool = False,
                 probabilities: Sequence[np.ndarray] | None = None, out: np.ndarray | None = None) -> np.ndarray:
  """Renders one image per (system, key), in parallel over Numba's threads.

  Returns uint8 images of shape (B, size, size), or (B, size, size, 3) with `color`. Modes: `patch`
  (each point a fresh random non-empty 3x3 mask at gray 127: the FractalDB/1p-frac look), `mask` (one
  random mask for the whole image), `binary` (one pixel at 255 per point), `density` (hit count / max).
  `probabilities` overrides each system's map probabilities (default |det A_i| / sum_j |det A_j|).
  `out`, a reusable uint8 (B, size, size) buffer for the gray images, saves the page faults of a fresh
  array, which threads take one at a time (they cost 2-thread scaling about a third at 224 px).
  """
  validate(size, points, mode, pad, color, background)
  if len(systems) != len(keys):
    raise ValueError(f"got {len(systems)} systems but {len(keys)} keys")
  coefs, n_maps, thresholds, starts = _pack(systems, probabilities)
  keys = np.asarray([int(k) & 0xFFFFFFFFFFFFFFFF for k in keys], np.uint64)
  gray = np.empty((len(keys), size, size), np.uint8) if out is None else out
  if gray.shape != (len(keys), size, size) or gray.dtype != np.uint8 or not gray.flags.c_contiguous:
    raise ValueError(f"out must be a C-contiguous uint8 array of shape {(len(keys), size, size)}, got {gray.shape}")
  if len(keys):
    _render_batch(coefs, n_maps, thresholds, starts, keys, points, pad, MODES.index(mode),
                  min(numba.get_num_threads(), len(keys)), gray)
  if not color:
    return gray
  rgb = np.empty(gray.shape + (3,), np.uint8)
  if len(keys):
    _colorize_batch(gray, keys, background, rgb)
  return rgb


def render(system: np.ndarray, key: int = 0, **kwargs) -> np.ndarray:
  """One image; see `render_batch` for the settings."""
  return render_batch([system], [key], **kwargs)[0]


def fill_rate(images: np.ndarray) -> np.ndarray:
  """Fraction of non-zero pixels of each image in a (B, H, W[, C]) batch."""
  images = np.asarray(images)
  nonzero = images.reshape(len(images), images.shape[1] * images.shape[2], -1).any(axis=-1)
  return nonzero.mean(axis=1)
