"""EDSR (Lim et al. 2017): residual blocks without batch norm, a global skip, pixel-shuffle upsampling.
EDSR-baseline is 16 blocks of 64 features with res_scale 1; inputs and outputs are RGB in [0, 1]."""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from superres.sr.models.upsample import Upsampler

RGB_MEAN = (0.4488, 0.4371, 0.4040)  # DIV2K's mean, subtracted at the input and added back at the output


def residual_sr(x, body, features: int, scale: int, dtype):
  """The frame EDSR and RCAN share, called from a compact `__call__`: mean shift, head conv, `body` with a
  conv and a global skip, upsampler, tail conv, mean added back."""
  mean = jnp.asarray(RGB_MEAN, jnp.float32)
  head = nn.Conv(features, (3, 3), dtype=dtype, name="head")(x - mean)
  y = nn.Conv(features, (3, 3), dtype=dtype, name="body_end")(body(head)) + head
  y = Upsampler(features, scale, dtype, name="upsample")(y)
  return nn.Conv(3, (3, 3), dtype=dtype, name="tail")(y).astype(jnp.float32) + mean


class ResBlock(nn.Module):
  features: int
  res_scale: float = 1.0
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    y = nn.Conv(self.features, (3, 3), dtype=self.dtype)(x)
    y = nn.Conv(self.features, (3, 3), dtype=self.dtype)(nn.relu(y))
    return x + self.res_scale * y


class EDSR(nn.Module):
  scale: int = 4
  features: int = 64
  blocks: int = 16
  res_scale: float = 1.0
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train  # no dropout or batch norm

    def body(y):
      for i in range(self.blocks):
        y = ResBlock(self.features, self.res_scale, self.dtype, name=f"block{i}")(y)
      return y

    return residual_sr(x, body, self.features, self.scale, self.dtype)
