"""Numba kernels that turn an IFS into an image: chaos game, bounding-box fit, rasterisation.

Every random choice comes from a counter-based generator (SplitMix64 of `key + i`), so an image is a
pure function of (system, key, settings): the same bytes whatever the thread count or batch split.
Kernels release the GIL; `render_batch` renders images in parallel across cores, and each image in two
passes (see `_render_one`): the orbit with four interleaved chains, then 3x3 patches ORed into a tiled bit canvas.

Non-finite points: a point with a coordinate beyond float32's range (|v| > 3.4e38, inf or NaN; possible
for the non-contractive FractalDB systems) is not drawn, and its chain restarts from the start point.
"""
from __future__ import annotations

import os
from collections.abc import Sequence

import numba
import numpy as np

MODES = ("patch", "mask", "binary", "density")
MAX_MAPS = 8
PATCH_GRAY = 127
CHAINS = 4
BLOCK = 4096
CHUNK = 512

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_LOW32 = np.uint64(0xFFFFFFFF)


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
  """A random non-empty 3x3 mask (9 bits, row-major) from the low 27 bits of the uint32 r: three tries,
  then the centre pixel. Selects, not branches, so loops over it vectorise."""
  nine = np.uint32(0x1FF)
  m1, m2, m3 = r & nine, (r >> np.uint32(9)) & nine, (r >> np.uint32(18)) & nine
  return m1 if m1 != 0 else (m2 if m2 != 0 else (m3 if m3 != 0 else np.uint32(16)))


@numba.njit(nogil=True, cache=True)
def _fill_draws(key, first, draws):
  """draws[j] = draw first + j + 1 of the key's stream; no loop-carried dependency, so it vectorises."""
  for j in range(draws.shape[0]):
    draws[j] = _mix(key + np.uint64(first + j + 1) * _GOLDEN)


@numba.njit(nogil=True, cache=True)
def _point_masks(draws, masks):
  """masks[j] = the 3x3 mask of draw j, from its high 32 bits (vectorises)."""
  for j in range(draws.shape[0]):
    masks[j] = _nonempty_mask(np.uint32(draws[j] >> np.uint64(32)))


@numba.njit(inline="always", cache=True)
def _affine(coef, thresholds, draw, x, y):
  """Applies the map that the draw's low 32 bits pick: how many cumulative thresholds they reach. The
  thresholds are a tuple, so its length is known when compiling: one compare for two maps, and a
  fixed, branch-free count of MAX_MAPS - 1 (unused ones are 2^32, out of reach) otherwise."""
  u, k = draw & _LOW32, np.uint64(0)
  for j in range(len(thresholds)):
    k += np.uint64(6) * np.uint64(u >= thresholds[j])
  return (coef[k] * x + coef[k + np.uint64(1)] * y + coef[k + np.uint64(2)],
          coef[k + np.uint64(3)] * x + coef[k + np.uint64(4)] * y + coef[k + np.uint64(5)])


@numba.njit(inline="always", cache=True)
def _widen(box, x, y):
  """The box (xmin, xmax, ymin, ymax) widened to hold (x, y); compares, as Numba's min/max are slow."""
  xmin, xmax, ymin, ymax = box
  return (x if x < xmin else xmin, x if x > xmax else xmax, y if y < ymin else ymin, y if y > ymax else ymax)


@numba.njit(nogil=True, cache=True)
def _orbit_block(coef, thresholds, draws, first, xy, cx, cy, box):
  """Points first .. first + len(draws) - 1 of CHAINS = 4 interleaved orbits whose current points are
  (cx, cy): point i follows point i - 4 by the map that the low 32 bits of its draw pick. Independent
  chains hide the latency of the serial affine updates. xy holds x, y of point i at 2i, 2i + 1 as float32,
  and the box is taken over these stored values."""
  xa, xb, xc, xd = cx[0], cx[1], cx[2], cx[3]
  ya, yb, yc, yd = cy[0], cy[1], cy[2], cy[3]
  n = draws.shape[0]
  one, two, three = np.uint64(1), np.uint64(2), np.uint64(3)
  for j in range(0, n - n % 4, 4):
    u = np.uint64(j)
    da, db, dc, dd = draws[u], draws[u + one], draws[u + two], draws[u + three]
    xa, ya = _affine(coef, thresholds, da, xa, ya)
    xb, yb = _affine(coef, thresholds, db, xb, yb)
    xc, yc = _affine(coef, thresholds, dc, xc, yc)
    xd, yd = _affine(coef, thresholds, dd, xd, yd)
    fxa, fya, fxb, fyb = np.float32(xa), np.float32(ya), np.float32(xb), np.float32(yb)
    fxc, fyc, fxd, fyd = np.float32(xc), np.float32(yc), np.float32(xd), np.float32(yd)
    i = np.uint64(2 * (first + j))
    xy[i], xy[i + one], xy[i + two], xy[i + three] = fxa, fya, fxb, fyb
    xy[i + np.uint64(4)], xy[i + np.uint64(5)], xy[i + np.uint64(6)], xy[i + np.uint64(7)] = fxc, fyc, fxd, fyd
    box = _widen(_widen(_widen(_widen(box, fxa, fya), fxb, fyb), fxc, fyc), fxd, fyd)
  for j in range(n - n % 4, n):  # only in the last block: BLOCK is a multiple of 4
    xa, ya = _affine(coef, thresholds, draws[j], xa, ya)
    fxa, fya = np.float32(xa), np.float32(ya)
    xy[2 * (first + j)], xy[2 * (first + j) + 1] = fxa, fya
    box = _widen(box, fxa, fya)
  cx[0], cx[1], cx[2], cx[3] = xa, xb, xc, xd
  cy[0], cy[1], cy[2], cy[3] = ya, yb, yc, yd
  return box


@numba.njit(nogil=True, cache=True)
def _orbit_block_restarting(coef, thresholds, draws, first, xy, cx, cy, box, x0, y0):
  """`_orbit_block` for orbits that overflow: a point that is not finite in float32 is stored as NaN
  (not drawn) and its chain goes on from (x0, y0)."""
  for j in range(draws.shape[0]):
    c = (first + j) % CHAINS
    x, y = _affine(coef, thresholds, draws[j], cx[c], cy[c])
    i = 2 * (first + j)
    if np.isfinite(np.float32(x)) and np.isfinite(np.float32(y)):
      fx, fy = np.float32(x), np.float32(y)
      xy[i], xy[i + 1] = fx, fy
      box = _widen(box, fx, fy)
    else:
      x, y = x0, y0
      xy[i], xy[i + 1] = np.nan, np.nan
    cx[c], cy[c] = x, y
  return box


@numba.njit(inline="always", cache=True)
def _canvas_shape(size):
  """(tile rows, tiles per row, log2 of the row stride) of the tiled canvas for a size x size image (see
  `_unpack_canvas`): enough tiles for a patch's top-left pixel, at most size - 3 in both axes."""
  rows, per_row, shift = ((size - 3) >> 1) + 1, ((size - 3) >> 3) + 1, 0
  while (1 << shift) < per_row:
    shift += 1
  return rows, per_row, shift


@numba.njit(nogil=True, cache=True)
def _tile_patterns():
  """All 512 3x3 masks (9 bits, row-major) as tile patterns: mask row q at bits 16q .. 16q + 2."""
  m = np.arange(512).astype(np.uint64)
  return (m & np.uint64(0x7)) | ((m & np.uint64(0x38)) << np.uint64(13)) | ((m & np.uint64(0x1C0)) << np.uint64(26))


@numba.njit(nogil=True, cache=True)
def _patch_positions(xy, first, xmin, sx, ox, ymin, sy, oy, stride_shift, checked, pos, masks):
  """For points first .. first + len(pos) - 1: where the patch goes in the tiled canvas (64 * tile + bit
  offset; see `_unpack_canvas`); with `checked`, a NaN point gets mask 0 (it draws nothing). Tile rows
  are 2^stride_shift tiles apart, so it takes shifts, not multiplies (Numba widens integer arithmetic to
  64 bits, and AVX2 has no 64-bit multiply), and no branches: it vectorises."""
  ox1, oy1, stride = np.uint32(ox - 1), np.uint32(oy - 1), np.uint32(stride_shift)
  one, three, four, six, seven = np.uint32(1), np.uint32(3), np.uint32(4), np.uint32(6), np.uint32(7)
  for j in range(pos.shape[0]):
    i = np.uint64(first + j)
    x, y = np.float64(xy[i + i]), np.float64(xy[i + i + np.uint64(1)])
    left = ox1 + np.uint32(np.int32((x - xmin) * sx))
    top = oy1 - np.uint32(np.int32((y - ymin) * sy))
    tile = ((top >> one) << stride) + (left >> three)
    pos[j] = (tile << six) + ((top & one) << four) + (left & seven)
  if checked:
    for j in range(pos.shape[0]):
      if np.isnan(xy[2 * (first + j)]):
        pos[j], masks[j] = 0, 0


@numba.njit(nogil=True, cache=True)
def _draw_patches(pos, masks, patterns, bits):
  """ORs each point's tile pattern into its tile: one read-modify-write per point."""
  six, sixty_three = np.uint32(6), np.uint32(63)
  for j in range(pos.shape[0]):
    p = pos[j]
    bits[np.uint64(p >> six)] |= patterns[np.uint64(masks[j])] << np.uint64(p & sixty_three)


@numba.njit(nogil=True, cache=True)
def _unpack_canvas(bits, out):
  """Tiled canvas -> out, gray PATCH_GRAY where any patch drew.

  A tile is one 64-bit word holding 4 rows of 16 pixels (row q at bits 16q .. 16q + 15); tile (T, S)
  covers rows 2T .. 2T + 3 and columns 8S .. 8S + 15, so tiles overlap by half both ways and every 3x3
  patch falls inside the one tile (top // 2, left // 8). Tile (T, S) is bits[T * 2^shift + S]. Unpacking
  first folds each tile's overlap into its neighbours (right, then below), after which pixel (r, c) is
  bit 16 (r - 2T) + c - 8S of tile (T, S) = (r // 2, c // 8), clipped to the last tile row and column."""
  size = out.shape[0]
  rows, per_row, shift = _canvas_shape(size)
  stride = 1 << shift
  high_bytes = np.uint64(0xFF00FF00FF00FF00)
  for t in range(rows):
    for s in range(1, per_row):
      bits[t * stride + s] |= (bits[t * stride + s - 1] & high_bytes) >> np.uint64(8)
  for t in range(1, rows):
    for s in range(per_row):
      bits[t * stride + s] |= bits[(t - 1) * stride + s] >> np.uint64(32)
  gray = np.zeros((256, 8), np.uint8)  # the 8 pixels of each byte of a tile row
  for v in range(256):
    for j in range(8):
      gray[v, j] = PATCH_GRAY * ((v >> j) & 1)
  for r in range(size):
    t = min(r >> 1, rows - 1)
    row, q = bits[t * stride:t * stride + per_row], np.uint64(16 * (r - 2 * t))
    for s in range(min(per_row, size >> 3)):
      byte = (row[s] >> q) & np.uint64(0xFF)
      for j in range(8):
        out[r, 8 * s + j] = gray[byte, j]
    word = row[per_row - 1] >> q
    for c in range(8 * min(per_row, size >> 3), size):
      out[r, c] = np.uint8(((word >> np.uint64(c - 8 * (per_row - 1))) & np.uint64(1)) * PATCH_GRAY)


@numba.njit(nogil=True, cache=True)
def _render_one(coef, n_maps, thresholds, x0, y0, key, pad, mode, patterns, xy, masks, draws, pos, bits, out):
  """Renders into out (size, size). Pass 1 makes the draws BLOCK at a time (so they stay in cache), runs
  the orbit and keeps the float32 points, their box and (patch mode) their 3x3 masks as uint16; pass 2
  maps the points to patch positions CHUNK at a time (vectorised) and ORs the patches into a tiled bit
  canvas (scalar, one word a point). Per point it keeps 10 bytes, which sets the memory traffic."""
  size, points, block = out.shape[0], masks.shape[0], draws.shape[0]
  cx, cy = np.full(CHAINS, x0), np.full(CHAINS, y0)
  t = thresholds
  all_thresholds = (t[0], t[1], t[2], t[3], t[4], t[5], t[6])  # MAX_MAPS - 1
  inf32 = np.float32(np.inf)
  box = (inf32, -inf32, inf32, -inf32)
  for first in range(0, points, block):
    d = draws[:min(block, points - first)]
    _fill_draws(key, first, d)
    if n_maps == 2:  # 1p-frac's systems
      box = _orbit_block(coef, (thresholds[0],), d, first, xy, cx, cy, box)
    else:
      box = _orbit_block(coef, all_thresholds, d, first, xy, cx, cy, box)
    if mode == 0:
      _point_masks(d, masks[first:first + d.shape[0]])
  xmin, xmax, ymin, ymax = box
  restart = not (np.isfinite(xmin) and np.isfinite(xmax) and np.isfinite(ymin) and np.isfinite(ymax))
  if restart:  # an orbit's first non-finite float32 coordinate is +-inf, so it shows in the box
    cx[:], cy[:] = x0, y0
    box = (inf32, -inf32, inf32, -inf32)
    for first in range(0, points, block):
      d = draws[:min(block, points - first)]
      _fill_draws(key, first, d)
      box = _orbit_block_restarting(coef, all_thresholds, d, first, xy, cx, cy, box, x0, y0)
    xmin, xmax, ymin, ymax = box
    if not xmin <= xmax:
      out[:] = 0
      return
  xmin, xmax, ymin, ymax = np.float64(xmin), np.float64(xmax), np.float64(ymin), np.float64(ymax)
  # Pixel = offset + floor((v - min) * scale): in [0, span] for every stored v, so no clamping.
  span = size - 2 * pad - 1
  sx = span / (xmax - xmin) if xmax > xmin else 0.0
  sy = span / (ymax - ymin) if ymax > ymin else 0.0
  ox = pad + (0 if xmax > xmin else span // 2)
  oy = size - 1 - pad - (0 if ymax > ymin else span // 2)  # rows count down: the image is flipped
  if mode <= 1:
    stride_shift = _canvas_shape(size)[2]
    if mode == 1:
      masks[:] = _nonempty_mask(np.uint32(_mix(key) & _LOW32))
    bits[:] = 0
    chunk = pos.shape[0]
    for first in range(0, points, chunk):
      n = min(chunk, points - first)
      _patch_positions(xy, first, xmin, sx, ox, ymin, sy, oy, stride_shift, restart, pos[:n], masks[first:first + n])
      _draw_patches(pos[:n], masks[first:first + n], patterns, bits)
    _unpack_canvas(bits, out)
    return
  out[:] = 0
  counts = np.zeros((size, size), np.uint32)
  for i in range(points):
    if not np.isnan(xy[2 * i]):
      counts[oy - int((xy[2 * i + 1] - ymin) * sy), ox + int((xy[2 * i] - xmin) * sx)] += 1
  peak = counts.max()
  for r in range(size):
    for c in range(size):
      if mode == 2:
        out[r, c] = 255 if counts[r, c] else 0
      else:
        out[r, c] = np.uint8((counts[r, c] * 255 + peak // 2) // peak)


@numba.njit(nogil=True, parallel=True, cache=True)
def _render_batch(coefs, n_maps, thresholds, starts, keys, points, pad, mode, threads, out):
  """Each thread renders every `threads`-th image into buffers it allocates once; coefs holds each
  system's maps as MAX_MAPS rows of (a, b, e, c, d, f) flattened."""
  count, size = out.shape[0], out.shape[1]
  rows, _, shift = _canvas_shape(size)
  tiles = rows << shift
  # Per-thread buffers, one row each, padded so that threads never share a cache line.
  xy = np.empty((threads, 2 * points + 1024), np.float32)
  masks = np.empty((threads, points + 1024), np.uint16)
  draws = np.empty((threads, min(points, BLOCK) + 512), np.uint64)
  pos = np.empty((threads, CHUNK + 64), np.uint32)
  bits = np.empty((threads, tiles + 512), np.uint64)
  patterns = _tile_patterns()
  for t in numba.prange(threads):
    for b in range(t, count, threads):
      _render_one(coefs[b], n_maps[b], thresholds[b], starts[b, 0], starts[b, 1], keys[b], pad, mode, patterns,
                  xy[t, :2 * points], masks[t, :points], draws[t, :min(points, BLOCK)], pos[t, :CHUNK],
                  bits[t, :tiles], out[b])


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
  """The colouring of catalys1/fractal-pretraining (Anderson & Farrell, WACV 2022): fractal hue = gray +
  random offset, saturation U(0.3, 1), value U(0.5, 1);
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
      if q.shape != (n,):
        raise ValueError(f"map probabilities must be {n} non-negative numbers summing to 1, got {q}")
      p[i, :n] = q
    bad = ~(np.all(p >= 0, axis=1) & np.isclose(p.sum(axis=1), 1.0))  # checked at once: cheaper per image
    if bad.any():
      i = int(np.argmax(bad))
      raise ValueError(f"map probabilities must be {n_maps[i]} non-negative numbers summing to 1, "
                       f"got {p[i, :n_maps[i]]}")
  cum = np.cumsum(p, axis=1)  # unused thresholds are 2^32, which no 32-bit draw reaches
  thresholds = np.where(np.arange(MAX_MAPS)[None, :] < n_maps[:, None] - 1,
                        np.minimum(np.round(cum * 2.0**32), 2.0**32), 2.0**32).astype(np.uint64)
  # Start at the fixed point of map 1, (I - A_1)^-1 b_1 (ifs.start_point), by Cramer's rule.
  a, b, e, c, d, f = (coefs[:, 0, k] for k in range(6))
  det = (1 - a) * (1 - d) - b * c
  ok = np.abs(det) >= 1e-12
  safe = np.where(ok, det, 1.0)
  starts = np.stack([np.where(ok, ((1 - d) * e + b * f) / safe, 0.0), np.where(ok, (c * e + (1 - a) * f) / safe, 0.0)], 1)
  return coefs.reshape(count, MAX_MAPS * 6), n_maps, thresholds, starts


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
  check_memory(size, points, 1, 1, color)


def buffer_bytes(size: int, points: int, images: int, threads: int, color: bool = False) -> int:
  """Bytes `render_batch` allocates: the output images plus each thread's point and canvas buffers."""
  rows, _, shift = _canvas_shape(size)
  per_thread = 10 * (points + 1024) + 8 * (min(points, BLOCK) + 512) + 4 * (CHUNK + 64) + 8 * ((rows << shift) + 512)
  return images * size * size * (4 if color else 1) + threads * per_thread


def memory_bytes() -> int:
  return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_memory(size: int, points: int, images: int, threads: int, color: bool = False) -> None:
  """Refuses, before allocating, a render whose buffers exceed this machine's memory."""
  need, have = buffer_bytes(size, points, images, threads, color), memory_bytes()
  if need > have:
    first = "size" if images * size * size > 10 * threads * points else "points"
    raise ValueError(f"{first} too large: size {size} with points {points} needs {need / 2**30:.1f} GiB of "
                     f"render buffers for {images} image(s) on {threads} thread(s), more than this machine's "
                     f"{have / 2**30:.1f} GiB of memory")


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
  threads = min(numba.get_num_threads(), len(keys))
  check_memory(size, points, len(keys), threads, color)
  coefs, n_maps, thresholds, starts = _pack(systems, probabilities)
  keys = np.asarray([int(k) & 0xFFFFFFFFFFFFFFFF for k in keys], np.uint64)
  gray = np.empty((len(keys), size, size), np.uint8) if out is None else out
  if gray.shape != (len(keys), size, size) or gray.dtype != np.uint8 or not gray.flags.c_contiguous:
    raise ValueError(f"out must be a C-contiguous uint8 array of shape {(len(keys), size, size)}, got {gray.shape}")
  if len(keys):
    _render_batch(coefs, n_maps, thresholds, starts, keys, points, pad, MODES.index(mode), threads, gray)
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
