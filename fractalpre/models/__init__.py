"""Model registry: `get_model("vit_ti16", num_classes=1000, drop_path=0.1)`."""
from __future__ import annotations

import jax.numpy as jnp

from fractalpre.models import resnet, vit

_VIT = {"vit_cpu": "cpu", "vit_ti16": "Ti/16", "vit_s16": "S/16", "vit_b16": "B/16"}
_RESNET = {"resnet18": "18", "resnet50": "50"}
NAMES = tuple(_VIT) + tuple(_RESNET)
DTYPES = {"fp32": jnp.float32, "bf16": jnp.bfloat16}


def get_model(name: str, num_classes: int, precision: str = "fp32", **kwargs):
  """A Flax module by registry name; `kwargs` override the variant (patch, pool, drop_path, ...)."""
  if precision not in DTYPES:
    raise ValueError(f"precision must be one of {tuple(DTYPES)}, got {precision!r}")
  if name in _VIT:
    return vit.ViT(num_classes=num_classes, dtype=DTYPES[precision], **{**vit.VARIANTS[_VIT[name]], **kwargs})
  if name in _RESNET:
    return resnet.ResNet(num_classes=num_classes, dtype=DTYPES[precision],
                         **{**resnet.VARIANTS[_RESNET[name]], **kwargs})
  raise ValueError(f"model must be one of {NAMES}, got {name!r}")
