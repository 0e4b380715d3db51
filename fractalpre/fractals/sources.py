"""Random-access fractal sources: `len(ds)`, `ds[i] -> (image, label)`, `ds.batch(indices)`.

Every image is a pure function of (seed, class, instance): classes are resolved (searched or
perturbed until they pass their fill-rate test) independently of each other, so any subset, order,
shard or thread count gives the same bytes.
"""
from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterable, Sequence

import numpy as np

from fractalpre.fractals import ifs, render

# Stream tags keep the random streams of different purposes apart for the same seed.
_BASE, _PERTURB, _SEARCH, _PATCH = 1, 2, 3, 4


@dataclasses.dataclass(frozen=True)
class RenderSettings:
  """How every image of a source is drawn (see `render.render_batch`)."""
  size: int = 224
  points: int = 100_000
  mode: str = "patch"
  pad: int = 6
  color: bool = False
  background: bool = False

  def __post_init__(self):
    render.validate(self.size, self.points, self.mode, self.pad, self.color, self.background)

  def draw(self, systems, keys, probabilities=None, out=None) -> np.ndarray:
    return render.render_batch(systems, keys, size=self.size, points=self.points, mode=self.mode,
                               pad=self.pad, color=self.color, background=self.background,
                               probabilities=probabilities, out=out)


@dataclasses.dataclass(frozen=True)
class ClassSystem:
  """A resolved category: its IFS, map probabilities, and the draw that passed the fill test."""
  system: np.ndarray
  probabilities: np.ndarray
  attempt: int
  fill: float

  def to_json(self) -> dict:
    return {"maps": np.round(self.system, 12).tolist(), "probabilities": np.round(self.probabilities, 12).tolist(),
            "attempt": self.attempt, "fill": round(self.fill, 6)}


def _check_positive(name: str, value: int) -> None:
  if value <= 0:
    raise ValueError(f"{name} must be > 0, got {value}")


class _FractalSource:
  """Shared random access, batching and class resolution; subclasses define the categories."""

  name: str

  def __init__(self, num_classes: int, instances_per_class: int, seed: int, settings: RenderSettings,
               min_fill: float, max_attempts: int):
    _check_positive("num_classes", num_classes)
    _check_positive("instances_per_class", instances_per_class)
    _check_positive("max_attempts", max_attempts)
    if not 0 <= min_fill < 1:
      raise ValueError(f"min_fill must be in [0, 1), got {min_fill}")
    if seed < 0:
      raise ValueError(f"seed must be >= 0, got {seed}")
    self.num_classes, self.instances_per_class, self.seed = num_classes, instances_per_class, seed
    self.settings, self.min_fill, self.max_attempts = settings, min_fill, max_attempts
    self.first_instance = 0
    self._classes: dict[int, ClassSystem] = {}

  def __len__(self) -> int:
    return self.num_classes * self.instances_per_class

  def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
    images, labels = self.batch([index])
    return images[0], int(labels[0])

  def locate(self, index: int) -> tuple[int, int]:
    """index -> (class, instance)."""
    if not 0 <= index < len(self):
      raise IndexError(f"index must be in [0, {len(self)}), got {index}")
    c, i = divmod(int(index), self.instances_per_class)
    return c, self.first_instance + i

  def held_out(self, count: int) -> _FractalSource:
    """The same categories' next `count` instances of each class (instances_per_class onwards): a test
    split that shares no image with this one. Shares the resolved classes, so nothing is searched twice."""
    _check_positive("test_instances", count)
    limit = getattr(self, "MAX_INSTANCES", None)
    if limit is not None and self.first_instance + self.instances_per_class + count > limit:
      raise ValueError(f"test_instances must be in [1, {limit - self.instances_per_class}] ({self.name} has "
                       f"{limit} distinct instances per class), got {count}")
    view = copy.copy(self)
    view.first_instance, view.instances_per_class = self.first_instance + self.instances_per_class, count
    return view

  # Subclass hooks.
  def _candidate(self, cls: int, attempt: int) -> tuple[np.ndarray, np.ndarray]:
    """The (system, probabilities) of draw `attempt` for class `cls`."""
    raise NotImplementedError

  def _probe_key(self, cls: int, attempt: int) -> int:
    raise NotImplementedError

  def _instance(self, cls: int, instance: int) -> tuple[np.ndarray, np.ndarray, int, int]:
    """(system, probabilities, render key, flip) of an instance of a resolved class."""
    raise NotImplementedError

  def _failure(self, cls: int, best: float) -> str:
    raise NotImplementedError

  def params(self) -> dict:
    raise NotImplementedError

  def resolve(self, classes: Iterable[int]) -> dict[int, np.ndarray]:
    """Resolves classes: draw candidates until one's probe image reaches min_fill. Returns the probe
    images of the classes resolved by this call (keyed by class), so callers need not render them again."""
    todo = sorted({int(c) for c in classes} - self._classes.keys())
    for c in todo:
      if not 0 <= c < self.num_classes:
        raise IndexError(f"class must be in [0, {self.num_classes}), got {c}")
    probes, best = {}, {c: 0.0 for c in todo}
    attempt = 0
    while todo:
      if attempt == self.max_attempts:
        raise RuntimeError(self._failure(todo[0], best[todo[0]]))
      candidates = [self._candidate(c, attempt) for c in todo]
      images = self.settings.draw([s for s, _ in candidates], [self._probe_key(c, attempt) for c in todo],
                                  [p for _, p in candidates])
      fills = render.fill_rate(images)
      left = []
      for c, (system, probs), image, fill in zip(todo, candidates, images, fills):
        if fill >= self.min_fill:
          self._classes[c] = ClassSystem(system, probs, attempt, float(fill))
          probes[c] = image
        else:
          best[c] = max(best[c], float(fill))
          left.append(c)
      todo, attempt = left, attempt + 1
    return probes

  def class_system(self, cls: int) -> ClassSystem:
    self.resolve([cls])
    return self._classes[cls]

  def batch(self, indices: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Renders the images at `indices` in parallel: (images uint8 (B, H, W[, 3]), labels int64 (B,))."""
    located = [self.locate(i) for i in indices]
    probes = self.resolve(c for c, _ in located)
    systems, probs, keys, flips, reuse = [], [], [], [], {}
    for j, (c, i) in enumerate(located):
      system, p, key, flip = self._instance(c, i)
      if c in probes and key == self._probe_key(c, self._classes[c].attempt):
        reuse[j] = probes[c]
      systems.append(system), probs.append(p), keys.append(key), flips.append(flip)
    todo = [j for j in range(len(located)) if j not in reuse]
    s = self.settings
    images = np.empty((len(located), s.size, s.size) + ((3,) if s.color else ()), np.uint8)
    if len(todo) == len(located) and not s.color:  # the usual case: render in place, no copy
      s.draw(systems, keys, probs, out=images)
    elif todo:
      images[todo] = s.draw([systems[j] for j in todo], [keys[j] for j in todo], [probs[j] for j in todo])
    for j, image in reuse.items():
      images[j] = image
    for j, flip in enumerate(flips):
      if flip & 1:
        images[j] = images[j][:, ::-1]
      if flip & 2:
        images[j] = images[j][::-1]
    return images, np.array([c for c, _ in located], np.int64)


class OnePFrac(_FractalSource):
  """1p-frac (ECCV 2024 "Scaling Backwards"): one base fractal, `num_classes` perturbed categories.

  The base system has `n_maps` maps and a sigma-factor drawn from U(sigma - 0.1, sigma + 0.1); class l
  perturbs every parameter of it (multiplicatively by U(1 +- delta), or additively by U(+-delta/2)) and
  keeps the base map probabilities. A class whose image fills less than `min_fill` is re-drawn, at most
  `max_redraws` times. Instances beyond the first differ only in their random patch masks.
  """

  name = "1p-frac"

  def __init__(self, num_classes: int = 1000, delta: float = 0.1, sigma: float = 3.5, size: int = 224,
               points: int = 100_000, seed: int = 0, *, n_maps: int = 2, instances_per_class: int = 1,
               perturbation: str = "multiplicative", mode: str = "patch", pad: int = 6,
               color: bool = False, background: bool = False, min_fill: float = 0.05,
               max_redraws: int = 100):
    if n_maps < 1 or n_maps > render.MAX_MAPS:
      raise ValueError(f"n_maps must be in [1, {render.MAX_MAPS}], got {n_maps}")
    lo, hi = ifs.sigma_range(n_maps)
    if not lo < sigma < hi:
      raise ValueError(f"sigma must be in ({lo:g}, {hi:g}) for {n_maps} maps, got {sigma}")
    if not 0 <= delta < float("inf"):
      raise ValueError(f"delta must be a finite number >= 0, got {delta}")
    if perturbation not in ifs.PERTURBATIONS:
      raise ValueError(f"perturbation must be one of {ifs.PERTURBATIONS}, got {perturbation!r}")
    super().__init__(num_classes, instances_per_class, seed,
                     RenderSettings(size, points, mode, pad, color, background), min_fill, max_redraws)
    self.delta, self.sigma, self.n_maps, self.perturbation = delta, sigma, n_maps, perturbation
    rng = ifs.rng_for(seed, _BASE)
    eps = 1e-6 * hi
    target = rng.uniform(max(sigma - 0.1, eps), min(sigma + 0.1, hi - eps))
    self.base = ifs.sample_sigma_system(rng, n_maps, target)
    self.base_probabilities = ifs.map_probabilities(self.base)

  def _candidate(self, cls, attempt):
    rng = ifs.rng_for(self.seed, _PERTURB, cls, attempt)
    return ifs.perturb(self.base, self.delta, rng, self.perturbation), self.base_probabilities

  def _probe_key(self, cls, attempt):
    return render.image_key(self.seed, _PATCH, cls, 0, attempt)

  def _instance(self, cls, instance):
    c = self._classes[cls]
    return c.system, c.probabilities, render.image_key(self.seed, _PATCH, cls, instance, c.attempt), 0

  def _failure(self, cls, best):
    return (f"1p-frac seed={self.seed}: class {cls} reached a fill rate of {best:.4f} at best in "
            f"{self.max_attempts} perturbation draws, below min_fill={self.min_fill}; the base fractal "
            f"(sigma={self.sigma}) is too sparse: try another seed or a larger sigma")

  def params(self) -> dict:
    return {"dataset": self.name, "num_classes": self.num_classes,
            "instances_per_class": self.instances_per_class, "delta": self.delta, "sigma": self.sigma,
            "n_maps": self.n_maps, "perturbation": self.perturbation, "seed": self.seed,
            "min_fill": self.min_fill, "max_redraws": self.max_attempts,
            "base": {"maps": np.round(self.base, 12).tolist(), "sigma_factor": ifs.sigma_factor(self.base)},
            **dataclasses.asdict(self.settings)}


class FractalDB(_FractalSource):
  """FractalDB (Kataoka et al., ACCV 2020): categories found by random search, 1000 variants each.

  Class c is the first random system (N ~ U{2..7}, parameters U(-1, 1)) whose probe image fills at
  least `min_fill` (0.2). Instance i combines one of 25 parameter-scaling rows (i mod 25), one of 10
  patch-mask variants ((i // 25) mod 10) and one of 4 flips (i // 250): none, horizontal, vertical, both.
  """

  name = "fractaldb"
  MAX_INSTANCES = ifs.FRACTALDB_ROWS * 10 * 4

  def __init__(self, num_classes: int = 1000, instances_per_class: int = 1000, size: int = 362,
               points: int = 200_000, seed: int = 0, *, mode: str = "patch", pad: int = 6,
               color: bool = False, background: bool = False, min_fill: float = 0.2,
               max_attempts: int = 1000):
    if not 1 <= instances_per_class <= self.MAX_INSTANCES:
      raise ValueError(f"instances_per_class must be in [1, {self.MAX_INSTANCES}], got {instances_per_class}")
    super().__init__(num_classes, instances_per_class, seed,
                     RenderSettings(size, points, mode, pad, color, background), min_fill, max_attempts)

  def _candidate(self, cls, attempt):
    system = ifs.sample_fractaldb_system(ifs.rng_for(self.seed, _SEARCH, cls, attempt))
    return system, ifs.map_probabilities(system)

  def _probe_key(self, cls, attempt):
    return render.image_key(self.seed, _PATCH, cls, attempt, 0, 0)

  def _instance(self, cls, instance):
    c = self._classes[cls]
    row, variant, flip = instance % ifs.FRACTALDB_ROWS, (instance // ifs.FRACTALDB_ROWS) % 10, instance // 250
    system = ifs.fractaldb_scaling(c.system, row)
    return system, ifs.map_probabilities(system), render.image_key(self.seed, _PATCH, cls, c.attempt, row, variant), flip

  def _failure(self, cls, best):
    return (f"fractaldb seed={self.seed}: no system for class {cls} reached min_fill={self.min_fill} in "
            f"{self.max_attempts} draws (best {best:.4f}); lower min_fill or raise max_attempts")

  def params(self) -> dict:
    return {"dataset": self.name, "num_classes": self.num_classes,
            "instances_per_class": self.instances_per_class, "seed": self.seed, "min_fill": self.min_fill,
            "max_attempts": self.max_attempts, **dataclasses.asdict(self.settings)}
