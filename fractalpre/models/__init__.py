"""Model registry: `get_model("vit_ti16", num_classes=1000, drop_path=0.1)`.

Precision policies (parameters always fp32; layer norms, softmax and the head in fp32): `fp32`; `bf16`
(matmuls and activations in bfloat16); `fp8` (bf16, plus Flax's fp8 dot-general in every Dense and
attention projection of a ViT: e4m3 forward, e5m2 gradients, delayed scaling from amax histories kept in
the `_overwrite_with_gradient` collection).
"""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from fractalpre.models import resnet, vit

VIT = {"vit_cpu": "cpu", "vit_ti16": "Ti/16", "vit_s16": "S/16", "vit_b16": "B/16"}
RESNET = {"resnet18": "18", "resnet50": "50"}
NAMES = tuple(VIT) + tuple(RESNET)
DTYPES = {"fp32": jnp.float32, "bf16": jnp.bfloat16, "fp8": jnp.bfloat16}
FP8_COLLECTION = "_overwrite_with_gradient"


def get_model(name: str, num_classes: int, precision: str = "fp32", **kwargs):
  """A Flax module by registry name; `kwargs` override the variant (patch, pool, drop_path, ...)."""
  if precision not in DTYPES:
    raise ValueError(f"precision must be one of {tuple(DTYPES)}, got {precision!r}")
  if name in VIT:
    fp8 = {"dot_general_cls": nn.Fp8DirectDotGeneralOp} if precision == "fp8" else {}
    return vit.ViT(num_classes=num_classes, dtype=DTYPES[precision], **{**vit.VARIANTS[VIT[name]], **fp8, **kwargs})
  if precision == "fp8":
    raise ValueError(f"precision 'fp8' is supported for the ViT models {tuple(VIT)}, got {name!r}")
  if name in RESNET:
    return resnet.ResNet(num_classes=num_classes, dtype=DTYPES[precision],
                         **{**resnet.VARIANTS[RESNET[name]], **kwargs})
  raise ValueError(f"model must be one of {NAMES}, got {name!r}")
