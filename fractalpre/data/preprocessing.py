"""The conventions both augmentation paths (host and device) and the weight export share: the model input's
normalisation, and the augmentation recipe's settings with their defaults (one home for each)."""
from __future__ import annotations

import dataclasses
import math

# Pixels in [0, 255] -> (x / 255 - MEAN) / STD, in [-1, 1], on every channel (timm's config says the same).
MEAN, STD = 0.5, 0.5


@dataclasses.dataclass(frozen=True)
class AugmentSettings:
  """A config's `data.augment`. A key the config leaves out is off (no crop, flip, smoothing or mixing);
  the 1p-frac recipe's values live in the configs (`configs/common.py`)."""
  crop_scale: tuple[float, float] | None = None  # RandomResizedCrop's area range; None: the whole image
  crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)  # its log-uniform aspect-ratio range
  hflip: float = 0.0  # probability of a horizontal flip
  vflip: float = 0.0
  label_smoothing: float = 0.0
  mixup: float = 0.0  # Beta(alpha, alpha) of mixup; 0: off
  cutmix: float = 0.0  # Beta(alpha, alpha) of cutmix; 0: off
  switch: float = 0.5  # with both on, the probability of cutmix for a batch (timm's Mixup)

  @classmethod
  def from_config(cls, aug) -> AugmentSettings:
    """From a config's `data.augment` (a ConfigDict or dict); unknown keys are refused."""
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(aug.keys()) - fields)
    if unknown:
      raise ValueError(f"data.augment has unknown keys {unknown}; known: {sorted(fields)}")
    given = {k: v for k, v in aug.items() if v is not None}
    for key in ("crop_scale", "crop_ratio"):
      if key in given:
        given[key] = tuple(given[key]) if isinstance(given[key], (tuple, list)) else given[key]
    if given.get("crop_scale") == (None,):  # what `--config.data.augment.crop_scale=None` sets: no crop
      del given["crop_scale"]
    return cls(**given)

  def __post_init__(self):
    def pair(key, low_bound, high_bound):
      value = getattr(self, key)
      ok = (isinstance(value, tuple) and len(value) == 2 and all(isinstance(v, (int, float)) for v in value)
            and low_bound < value[0] <= value[1] <= high_bound and math.isfinite(value[1]))
      if not ok:
        raise ValueError(f"data.augment.{key} must be (low, high) with {low_bound} < low <= high <= {high_bound}, "
                         f"got {value!r}")
    if self.crop_scale is not None:
      pair("crop_scale", 0, 1)
    pair("crop_ratio", 0, math.inf)
    for key, (low, high) in dict(hflip=(0, 1), vflip=(0, 1), switch=(0, 1), label_smoothing=(0, 1),
                                 mixup=(0, math.inf), cutmix=(0, math.inf)).items():
      value = getattr(self, key)
      if not (isinstance(value, (int, float)) and low <= value <= high and math.isfinite(value)):
        raise ValueError(f"data.augment.{key} must be a number in [{low}, {high}], got {value!r}")
