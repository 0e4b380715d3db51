"""Sub-pixel convolution (ESPCN's pixel shuffle) and its inverse, in PyTorch's channel order."""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp


def pixel_shuffle(x: jnp.ndarray, r: int) -> jnp.ndarray:
  """(b, h, w, c r^2) -> (b, h r, w r, c): channel k r^2 + i r + j becomes pixel (i, j) of channel k."""
  b, h, w, c = x.shape
  if c % (r * r):
    raise ValueError(f"channels {c} are not divisible by scale^2 = {r * r}")
  x = x.reshape(b, h, w, c // (r * r), r, r)
  return x.transpose(0, 1, 4, 2, 5, 3).reshape(b, h * r, w * r, c // (r * r))


def pixel_unshuffle(x: jnp.ndarray, r: int) -> jnp.ndarray:
  """The inverse of `pixel_shuffle`: (b, h r, w r, c) -> (b, h, w, c r^2)."""
  b, hr, wr, c = x.shape
  if hr % r or wr % r:
    raise ValueError(f"spatial size {hr}x{wr} is not divisible by scale {r}")
  x = x.reshape(b, hr // r, r, wr // r, r, c)
  return x.transpose(0, 1, 3, 5, 2, 4).reshape(b, hr // r, wr // r, c * r * r)


class Upsampler(nn.Module):
  """x2 / x3 in one conv + shuffle; x4 (and other powers of 2) as repeated x2 stages, as in EDSR."""
  features: int
  scale: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    if self.scale in (2, 3):
      stages = [self.scale]
    elif self.scale >= 2 and self.scale & (self.scale - 1) == 0:
      stages = [2] * (self.scale.bit_length() - 1)
    else:
      raise ValueError(f"scale must be 2, 3 or a power of 2, got {self.scale}")
    for r in stages:
      x = pixel_shuffle(nn.Conv(self.features * r * r, (3, 3), dtype=self.dtype)(x), r)
    return x
