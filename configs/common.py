"""Shared config helpers: big_vision's `:key=value,flag` argument strings."""
from __future__ import annotations

import ml_collections


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
  """'runlocal,delta=0.05' -> {runlocal: True, delta: 0.05, ...}, typed like the defaults."""
  out = ml_collections.ConfigDict(defaults)
  for item in filter(None, (arg or "").split(",")):
    key, eq, value = item.partition("=")
    if key not in defaults:
      raise ValueError(f"unknown config argument {key!r}; allowed: {sorted(defaults)}")
    if not eq:
      out[key] = True
    else:
      kind = type(defaults[key])
      out[key] = value.lower() in ("1", "true", "yes") if kind is bool else kind(value)
  return out


def augment(recipe: bool = True) -> ml_collections.ConfigDict:
  """The 1p-frac augmentation recipe (REFERENCE A3), or none (evaluation-like training)."""
  if not recipe:
    return ml_collections.ConfigDict(dict(crop_scale=None, hflip=0.0, vflip=0.0, label_smoothing=0.0,
                                          mixup=0.0, cutmix=0.0))
  return ml_collections.ConfigDict(dict(crop_scale=(0.08, 1.0), crop_ratio=(3 / 4, 4 / 3), hflip=0.5, vflip=0.5,
                                        label_smoothing=0.1, mixup=0.8, cutmix=1.0))
