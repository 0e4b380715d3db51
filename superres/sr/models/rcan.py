"""RCAN (Zhang et al. 2018), light: residual groups of residual channel-attention blocks (RCAB).
Channel attention reweights each feature map by a gate computed from its global average, the attention
that lets a small model spend capacity on high-frequency channels. Full RCAN is 10 groups x 20 blocks x 64
features; the light default here is 4 x 4 x 32."""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from superres.sr.models.edsr import residual_sr


class ChannelAttention(nn.Module):
  features: int
  reduction: int = 8
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    gate = jnp.mean(x, axis=(1, 2), keepdims=True)
    gate = nn.relu(nn.Conv(max(self.features // self.reduction, 1), (1, 1), dtype=self.dtype)(gate))
    gate = nn.sigmoid(nn.Conv(self.features, (1, 1), dtype=self.dtype)(gate))
    return x * gate


class RCAB(nn.Module):
  features: int
  reduction: int = 8
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    y = nn.relu(nn.Conv(self.features, (3, 3), dtype=self.dtype)(x))
    y = nn.Conv(self.features, (3, 3), dtype=self.dtype)(y)
    return x + ChannelAttention(self.features, self.reduction, self.dtype)(y)


class ResidualGroup(nn.Module):
  features: int
  blocks: int
  reduction: int = 8
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    y = x
    for i in range(self.blocks):
      y = RCAB(self.features, self.reduction, self.dtype, name=f"rcab{i}")(y)
    return x + nn.Conv(self.features, (3, 3), dtype=self.dtype)(y)


class RCAN(nn.Module):
  scale: int = 4
  features: int = 32
  groups: int = 4
  blocks: int = 4
  reduction: int = 8
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train

    def body(y):
      for i in range(self.groups):
        y = ResidualGroup(self.features, self.blocks, self.reduction, self.dtype, name=f"group{i}")(y)
      return y

    return residual_sr(x, body, self.features, self.scale, self.dtype)
