"""timm's ViT and ResNet forward passes in NumPy (float64, NCHW), written from timm's module layout and
PyTorch's conventions (Linear: x @ W.T + b; Conv2d: OIHW weights, symmetric padding), not from our Flax
code, so an export that matches them matches timm."""
from __future__ import annotations

import numpy as np
from scipy.special import erf


def linear(x, sd, name):
  return x @ sd[f"{name}.weight"].T + sd[f"{name}.bias"]


def layer_norm(x, sd, name, eps=1e-6):
  mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
  return (x - mu) / np.sqrt(var + eps) * sd[f"{name}.weight"] + sd[f"{name}.bias"]


def vit(images_nchw, sd, num_heads, global_pool="token"):
  """timm VisionTransformer (stock layout: the class token, when there is one, has a position too;
  fc_norm=False) in eval mode."""
  w = sd["patch_embed.proj.weight"]
  d, c, p, _ = w.shape
  b, _, hh, ww = images_nchw.shape
  patches = images_nchw.reshape(b, c, hh // p, p, ww // p, p)
  x = np.einsum("bchpwq,dcpq->bhwd", patches, w).reshape(b, -1, d) + sd["patch_embed.proj.bias"]
  if "cls_token" in sd:
    x = np.concatenate([np.broadcast_to(sd["cls_token"], (b, 1, d)), x], axis=1)
  x = x + sd["pos_embed"]
  n, hd = x.shape[1], d // num_heads
  i = 0
  while f"blocks.{i}.norm1.weight" in sd:
    pre = f"blocks.{i}."
    qkv = linear(layer_norm(x, sd, pre + "norm1"), sd, pre + "attn.qkv").reshape(b, n, 3, num_heads, hd)
    q, k, v = qkv.transpose(2, 0, 3, 1, 4)
    logits = q @ k.transpose(0, 1, 3, 2) * hd**-0.5
    attn = np.exp(logits - logits.max(-1, keepdims=True))
    attn /= attn.sum(-1, keepdims=True)
    x = x + linear((attn @ v).transpose(0, 2, 1, 3).reshape(b, n, d), sd, pre + "attn.proj")
    y = linear(layer_norm(x, sd, pre + "norm2"), sd, pre + "mlp.fc1")
    x = x + linear(0.5 * y * (1 + erf(y / np.sqrt(2))), sd, pre + "mlp.fc2")
    i += 1
  x = layer_norm(x, sd, "norm")
  x = x[:, 0] if global_pool == "token" else x.mean(1)
  return linear(x, sd, "head")


def conv2d(x, weight, stride=1):
  """PyTorch Conv2d with padding k // 2, no bias."""
  o, c, k, _ = weight.shape
  x = np.pad(x, ((0, 0), (0, 0), (k // 2, k // 2), (k // 2, k // 2)))
  windows = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(2, 3))[:, :, ::stride, ::stride]
  return np.einsum("bchwij,ocij->bohw", windows, weight, optimize=True)


def batch_norm(x, sd, name, eps=1e-5):
  scale = sd[f"{name}.weight"] / np.sqrt(sd[f"{name}.running_var"] + eps)
  return (x - sd[f"{name}.running_mean"][:, None, None]) * scale[:, None, None] + sd[f"{name}.bias"][:, None, None]


def max_pool_3x3_s2(x):
  x = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
  return np.lib.stride_tricks.sliding_window_view(x, (3, 3), axis=(2, 3))[:, :, ::2, ::2].max(axis=(-1, -2))


def resnet(images_nchw, sd, layers, bottleneck):
  """timm ResNet (resnet18: BasicBlock, resnet50: Bottleneck with the stride on the 3x3) in eval mode."""
  relu = lambda t: np.maximum(t, 0)
  x = max_pool_3x3_s2(relu(batch_norm(conv2d(images_nchw, sd["conv1.weight"], 2), sd, "bn1")))
  convs = 3 if bottleneck else 2
  for s, blocks in enumerate(layers):
    for j in range(blocks):
      pre, stride = f"layer{s + 1}.{j}.", 2 if (j == 0 and s > 0) else 1
      y = x
      for k in range(1, convs + 1):
        kernel_stride = stride if (k == 2 if bottleneck else k == 1) else 1
        y = batch_norm(conv2d(y, sd[f"{pre}conv{k}.weight"], kernel_stride), sd, f"{pre}bn{k}")
        y = relu(y) if k < convs else y
      shortcut = x
      if f"{pre}downsample.0.weight" in sd:
        shortcut = batch_norm(conv2d(x, sd[f"{pre}downsample.0.weight"], stride), sd, f"{pre}downsample.1")
      x = relu(y + shortcut)
  return linear(x.mean(axis=(2, 3)), sd, "fc")
