"""Vision Transformer (Dosovitskiy et al.) in Flax Linen, big_vision style.

Variants by name: `Ti/16`, `S/16`, `B/16` and the CPU-sized `cpu` (patch 4, width 96, depth 4), which
trains at 32 px in minutes on two cores. Pooling `tok` (class token) or `gap` (mean of tokens); the
head is zero-initialised so a fresh head starts at uniform predictions. The layout is timm's VisionTransformer
(exact GELU, LayerNorm eps 1e-6; position embeddings on the patches only, which export as timm's stock layout
with a zero position for the class token), so weights export exactly. Attention runs through
`jax.nn.dot_product_attention` (cuDNN's fused kernel on NVIDIA GPUs). `mup_base_width` > 0 switches on muP's
forward-pass changes (fractalpre.optim.mup): readout times base / width, attention logits over d_head.
"""
from __future__ import annotations

import functools
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

VARIANTS = {
    "cpu": dict(patch=4, width=96, depth=4, mlp_dim=384, heads=3),
    "Ti/16": dict(patch=16, width=192, depth=12, mlp_dim=768, heads=3),
    "S/16": dict(patch=16, width=384, depth=12, mlp_dim=1536, heads=6),
    "B/16": dict(patch=16, width=768, depth=12, mlp_dim=3072, heads=12),
}


class DropPath(nn.Module):
  """Stochastic depth: drops a residual branch for whole examples."""
  rate: float

  @nn.compact
  def __call__(self, x, train: bool):
    if not train or self.rate == 0:
      return x
    keep = 1.0 - self.rate
    mask = jax.random.bernoulli(self.make_rng("dropout"), keep, (x.shape[0],) + (1,) * (x.ndim - 1))
    return jnp.where(mask, x / keep, 0).astype(x.dtype)


class MlpBlock(nn.Module):
  mlp_dim: int
  dtype: jnp.dtype = jnp.float32
  dot_general_cls: Callable | None = None

  @nn.compact
  def __call__(self, x):
    dense = lambda n: nn.Dense(n, dtype=self.dtype, dot_general_cls=self.dot_general_cls,
                               kernel_init=nn.initializers.xavier_uniform(),
                               bias_init=nn.initializers.normal(1e-6))
    return dense(x.shape[-1])(nn.gelu(dense(self.mlp_dim)(x), approximate=False))  # exact, as timm / PyTorch


def attention(query, key, value, bias=None, mask=None, *, mup: bool = False, dropout_rate: float = 0.0,
              deterministic: bool = True, **unused):
  """Flax's `attention_fn` through `jax.nn.dot_product_attention`, which picks cuDNN's fused attention on
  NVIDIA GPUs (bf16/fp16) and XLA's elsewhere. Logits are q.k / sqrt(d_head), or q.k / d_head under muP
  (its `scale`). This ViT uses no attention dropout."""
  del unused  # Flax passes its dropout RNG, dtype, precision and module; none apply here
  if dropout_rate and not deterministic:
    raise ValueError("attention dropout is not supported by this ViT")
  scale = 1.0 / query.shape[-1] if mup else None
  return jax.nn.dot_product_attention(query, key, value, bias=bias, mask=mask, scale=scale)


def einsum_attention(query, key, value, bias=None, mask=None, *, mup: bool = False, **unused):
  """Flax's einsum-softmax attention, which this ViT used before `attention`: the reference its logits are
  tested against and its speed is compared with (benchmarks/bench_attention.py)."""
  if mup:
    query = query / jnp.sqrt(query.shape[-1]).astype(query.dtype)
  return nn.dot_product_attention(query, key, value, bias=bias, mask=mask)


class EncoderBlock(nn.Module):
  mlp_dim: int
  heads: int
  drop_path: float = 0.0
  dtype: jnp.dtype = jnp.float32
  dot_general_cls: Callable | None = None
  mup: bool = False

  @nn.compact
  def __call__(self, x, train: bool):
    y = nn.LayerNorm(dtype=jnp.float32)(x)
    y = nn.MultiHeadDotProductAttention(num_heads=self.heads, dtype=self.dtype,
                                        kernel_init=nn.initializers.xavier_uniform(),
                                        qkv_dot_general_cls=self.dot_general_cls,
                                        out_dot_general_cls=self.dot_general_cls,
                                        attention_fn=functools.partial(attention, mup=self.mup))(y, y)
    x = x + DropPath(self.drop_path)(y, train)
    y = nn.LayerNorm(dtype=jnp.float32)(x)
    y = MlpBlock(self.mlp_dim, self.dtype, self.dot_general_cls)(y)
    return x + DropPath(self.drop_path)(y, train)


class ViT(nn.Module):
  num_classes: int
  patch: int = 16
  width: int = 192
  depth: int = 12
  mlp_dim: int = 768
  heads: int = 3
  pool: str = "tok"
  drop_path: float = 0.0
  dtype: jnp.dtype = jnp.float32
  dot_general_cls: Callable | None = None
  mup_base_width: int = 0

  @nn.compact
  def __call__(self, images, train: bool = False):
    x = nn.Conv(self.width, (self.patch, self.patch), strides=self.patch, padding="VALID",
                dtype=self.dtype, name="embedding")(images)
    n, h, w, c = x.shape
    x = x.reshape(n, h * w, c)
    x = x + self.param("pos_embedding", nn.initializers.normal(0.02), (1, h * w, c)).astype(x.dtype)
    if self.pool == "tok":
      cls = self.param("cls", nn.initializers.zeros, (1, 1, c)).astype(x.dtype)
      x = jnp.concatenate([jnp.tile(cls, (n, 1, 1)), x], axis=1)
    for i in range(self.depth):
      rate = self.drop_path * i / max(self.depth - 1, 1)  # linearly increasing, as in DeiT
      x = EncoderBlock(self.mlp_dim, self.heads, rate, self.dtype, self.dot_general_cls, self.mup_base_width > 0,
                       name=f"block{i}")(x, train)
    x = nn.LayerNorm(dtype=jnp.float32, name="encoder_norm")(x)
    x = x[:, 0] if self.pool == "tok" else x.mean(axis=1)
    logits = nn.Dense(self.num_classes, kernel_init=nn.initializers.zeros, dtype=jnp.float32, name="head")(x)
    return logits * (self.mup_base_width / self.width) if self.mup_base_width else logits


def resample_posemb(posemb: np.ndarray, new_tokens: int) -> np.ndarray:
  """Bilinearly resizes a (1, g*g, d) grid of position embeddings to (1, new_tokens, d)."""
  old, new = int(round(np.sqrt(posemb.shape[1]))), int(round(np.sqrt(new_tokens)))
  if old * old != posemb.shape[1] or new * new != new_tokens:
    raise ValueError(f"position embeddings must form square grids, got {posemb.shape[1]} -> {new_tokens} tokens")
  grid = jnp.asarray(posemb).reshape(1, old, old, -1)
  return np.asarray(jax.image.resize(grid, (1, new, new, grid.shape[-1]), "bilinear")).reshape(1, new_tokens, -1)
