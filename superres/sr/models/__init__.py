"""SR model registry: `get_model("edsr_baseline", scale=4)`, sizes overridable by keyword."""
from __future__ import annotations

from fractalpre.models import DTYPES
from superres.sr.models import edsr, rcan

VARIANTS = {
    "edsr_baseline": (edsr.EDSR, dict(features=64, blocks=16, res_scale=1.0)),
    "edsr": (edsr.EDSR, dict(features=256, blocks=32, res_scale=0.1)),
    "rcan_lite": (rcan.RCAN, dict(features=32, groups=4, blocks=4, reduction=8)),
}
NAMES = tuple(VARIANTS)


def from_config(config):
  """The model of an SR config (`model.name` + sizes, `scale`, `precision`)."""
  return get_model(config.model.name, config.scale, config.get("precision", "fp32"),
                   **{k: v for k, v in config.model.items() if k != "name"})


def get_model(name: str, scale: int, precision: str = "fp32", **kwargs):
  """A Flax SR module by registry name; `kwargs` override its size (features, blocks, ...)."""
  if name not in VARIANTS:
    raise ValueError(f"SR model must be one of {NAMES}, got {name!r}")
  if precision not in ("fp32", "bf16"):
    raise ValueError(f"SR precision must be 'fp32' or 'bf16', got {precision!r}")
  cls, defaults = VARIANTS[name]
  return cls(scale=scale, dtype=DTYPES[precision], **{**defaults, **kwargs})
