"""ResNet-18 / ResNet-50 (He et al.) in Flax Linen.

Paddings are PyTorch's (k // 2 on every side; XLA's SAME pads a stride-2 convolution on one side only), so
the weights export to timm's resnet18 / resnet50 exactly. BatchNorm statistics are computed over the whole
global batch: under `jax.jit` with the batch sharded over the mesh, the mean over the batch axis is a
cross-device mean, so no explicit `pmean` is needed.
"""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from fractalpre.models.vit import DropPath

VARIANTS = {"18": dict(stages=(2, 2, 2, 2), bottleneck=False), "50": dict(stages=(3, 4, 6, 3), bottleneck=True)}


def _pad(kernel: int) -> tuple:
  return ((kernel // 2, kernel // 2),) * 2


class Block(nn.Module):
  filters: int
  strides: int
  bottleneck: bool
  dtype: jnp.dtype = jnp.float32
  drop_path: float = 0.0

  @nn.compact
  def __call__(self, x, train: bool):
    conv = lambda f, k, s=1: nn.Conv(f, (k, k), strides=s, padding=_pad(k), use_bias=False, dtype=self.dtype)
    norm = lambda **kw: nn.BatchNorm(use_running_average=not train, momentum=0.9, dtype=jnp.float32, **kw)
    out_filters = self.filters * (4 if self.bottleneck else 1)
    if self.bottleneck:
      y = nn.relu(norm()(conv(self.filters, 1)(x)))
      y = nn.relu(norm()(conv(self.filters, 3, self.strides)(y)))
      y = norm(scale_init=nn.initializers.zeros)(conv(out_filters, 1)(y))
    else:
      y = nn.relu(norm()(conv(self.filters, 3, self.strides)(x)))
      y = norm(scale_init=nn.initializers.zeros)(conv(out_filters, 3)(y))
    if x.shape[-1] != out_filters or self.strides != 1:
      x = norm()(conv(out_filters, 1, self.strides)(x))
    return nn.relu(x + DropPath(self.drop_path)(y, train))


class ResNet(nn.Module):
  num_classes: int
  stages: tuple = (2, 2, 2, 2)
  bottleneck: bool = False
  dtype: jnp.dtype = jnp.float32
  drop_path: float = 0.0  # stochastic depth, rising linearly over the blocks to this rate (timm's ResNet)

  @nn.compact
  def __call__(self, images, train: bool = False):
    small = images.shape[1] <= 64  # CIFAR-style stem for small inputs
    k = 3 if small else 7
    x = nn.Conv(64, (k, k), strides=1 if small else 2, padding=_pad(k), use_bias=False, dtype=self.dtype,
                name="stem")(images)
    x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9, dtype=jnp.float32)(x))
    if not small:
      x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=_pad(3))
    total, index = sum(self.stages), 0
    for i, blocks in enumerate(self.stages):
      for j in range(blocks):
        rate = self.drop_path * index / max(total - 1, 1)
        x = Block(64 * 2**i, 2 if (j == 0 and i > 0) else 1, self.bottleneck, self.dtype, rate)(x, train)
        index += 1
    x = x.mean(axis=(1, 2))
    return nn.Dense(self.num_classes, kernel_init=nn.initializers.zeros, dtype=jnp.float32, name="head")(x)
