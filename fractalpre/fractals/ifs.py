"""Iterated function systems: samplers, invariants and perturbations (pure NumPy, seeded).

A system is an (N, 2, 3) float64 array: map i is x -> A_i x + b_i with A_i = system[i, :, :2]
and b_i = system[i, :, 2]. Every sampler takes an explicit `np.random.Generator`; callers derive it
from (seed, class, ...) with `rng_for`, never from global state.
"""
from __future__ import annotations

import numpy as np

PERTURBATIONS = ("multiplicative", "additive")


def rng_for(*key: int) -> np.random.Generator:
  """A generator that is a pure function of the integer key (seed, class, instance, ...)."""
  return np.random.Generator(np.random.Philox(np.random.SeedSequence([int(k) for k in key])))


def sigma_range(n_maps: int) -> tuple[float, float]:
  """The open interval of sigma-factors an N-map system can have."""
  return 0.0, 3.0 * n_maps


def _rotation(theta: float) -> np.ndarray:
  c, s = np.cos(theta), np.sin(theta)
  return np.array([[c, -s], [s, c]])


def _random_orthogonal(rng: np.random.Generator) -> np.ndarray:
  """A rotation by an angle in (-pi, pi] times a random sign flip diag(+-1, +-1)."""
  flip = np.diag(rng.choice([-1.0, 1.0], size=2))
  return _rotation(rng.uniform(-np.pi, np.pi)) @ flip


def sample_singular_values(rng: np.random.Generator, n_maps: int, sigma: float) -> np.ndarray:
  """(N, 2) singular values with 1 >= s1 >= s2 >= 0 and sum(s1 + 2 s2) == sigma (Anderson & Farrell)."""
  lo, hi = sigma_range(n_maps)
  if not lo < sigma < hi:
    raise ValueError(f"sigma must be in ({lo:g}, {hi:g}) for {n_maps} maps, got {sigma}")
  p, q = sigma, sigma - 3 * n_maps + 3
  out = np.empty((n_maps, 2))
  for i in range(n_maps - 1):
    s1 = rng.uniform(max(0.0, q / 3), min(1.0, p))
    q -= s1
    p -= s1
    s2 = rng.uniform(max(0.0, q / 2), min(s1, p / 2))
    q = q - 2 * s2 + 3
    p -= 2 * s2
    out[i] = s1, s2
  s2 = rng.uniform(max(0.0, (p - 1) / 2), p / 3)
  out[-1] = p - 2 * s2, s2
  return out


def sample_sigma_system(rng: np.random.Generator, n_maps: int, sigma: float) -> np.ndarray:
  """A random N-map system whose sigma-factor is exactly `sigma` (Anderson & Farrell, "Improving Fractal
  Pre-training", WACV 2022)."""
  svals = sample_singular_values(rng, n_maps, sigma)
  system = np.empty((n_maps, 2, 3))
  for i, (s1, s2) in enumerate(svals):
    u, v = _random_orthogonal(rng), _random_orthogonal(rng)
    system[i, :, :2] = u @ np.diag([s1, s2]) @ v
    system[i, :, 2] = rng.uniform(-1.0, 1.0, size=2)
  return system


def sigma_factor(system: np.ndarray) -> float:
  """sum_i (s_i1 + 2 s_i2) from the singular values of each linear part."""
  s = np.linalg.svd(np.asarray(system)[:, :, :2], compute_uv=False)
  return float(np.sum(s[:, 0] + 2 * s[:, 1]))


def map_probabilities(system: np.ndarray) -> np.ndarray:
  """p_i = |det A_i| / sum_j |det A_j|; uniform when every map is singular."""
  det = np.abs(np.linalg.det(np.asarray(system)[:, :, :2]))
  total = det.sum()
  if not total > 0:
    return np.full(len(det), 1.0 / len(det))
  return det / total


def start_point(system: np.ndarray) -> np.ndarray:
  """Fixed point of map 1, (I - A_1)^-1 b_1, which lies on the attractor; the origin if I - A_1 is
  singular. Cramer's rule, written exactly as the renderer's batched version computes it."""
  a, b, e, c, d, f = np.asarray(system, np.float64)[0].ravel()
  det = (1 - a) * (1 - d) - b * c
  if abs(det) < 1e-12:
    return np.zeros(2)
  return np.array([((1 - d) * e + b * f) / det, (c * e + (1 - a) * f) / det])


def perturb(system: np.ndarray, delta: float, rng: np.random.Generator,
            mode: str = "multiplicative") -> np.ndarray:
  """A 1p-frac category: every parameter times U(1 - delta, 1 + delta), or plus U(-delta/2, delta/2)."""
  if delta < 0:
    raise ValueError(f"delta must be >= 0, got {delta}")
  if mode == "multiplicative":
    return system * rng.uniform(1 - delta, 1 + delta, size=system.shape)
  if mode == "additive":
    return system + rng.uniform(-delta / 2, delta / 2, size=system.shape)
  raise ValueError(f"perturbation must be one of {PERTURBATIONS}, got {mode!r}")


def sample_fractaldb_system(rng: np.random.Generator, min_maps: int = 2, max_maps: int = 7) -> np.ndarray:
  """A FractalDB category candidate: N ~ U{2..7}, all six parameters of each map ~ U(-1, 1)."""
  n = int(rng.integers(min_maps, max_maps + 1))
  return rng.uniform(-1.0, 1.0, size=(n, 2, 3))


FRACTALDB_FACTORS = (0.2, 0.6, 1.4, 1.8)
FRACTALDB_ROWS = 1 + 6 * len(FRACTALDB_FACTORS)  # identity + each of a..f times each factor = 25


def fractaldb_scaling(system: np.ndarray, row: int) -> np.ndarray:
  """Intra-category variant `row` in [0, 25): row 0 is the system itself; row 1 + 4 j + f multiplies
  parameter j (a..f, in row-major order of the 2x3 matrix) of every map by FRACTALDB_FACTORS[f]."""
  if not 0 <= row < FRACTALDB_ROWS:
    raise ValueError(f"row must be in [0, {FRACTALDB_ROWS}), got {row}")
  out = np.array(system, dtype=np.float64)
  if row:
    j, f = divmod(row - 1, len(FRACTALDB_FACTORS))
    out.reshape(len(out), 6)[:, j] *= FRACTALDB_FACTORS[f]
  return out
