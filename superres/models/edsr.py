"""EDSR (Lim et al. 2017): residual blocks without batch norm, a global skip, pixel-shuffle upsampling.
EDSR-baseline is 16 blocks of 64 features with res_scale 1; inputs and outputs are RGB in [0, 1]."""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from superres.models.upsample import Upsampler

RGB_MEAN = (0.4488, 0.4371, 0.4040)  # DIV2K's mean, subtracted at the input and added back at the output


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
    mean = jnp.asarray(RGB_MEAN, jnp.float32)
    head = nn.Conv(self.features, (3, 3), dtype=self.dtype, name="head")(x - mean)
    y = head
    for i in range(self.blocks):
      y = ResBlock(self.features, self.res_scale, self.dtype, name=f"block{i}")(y)
    y = nn.Conv(self.features, (3, 3), dtype=self.dtype, name="body_end")(y) + head
    y = Upsampler(self.features, self.scale, self.dtype, name="upsample")(y)
    return nn.Conv(3, (3, 3), dtype=self.dtype, name="tail")(y).astype(jnp.float32) + mean
