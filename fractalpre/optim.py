"""Optimizers as optax transformations, built from a config: adamw, lion, sgd with warm-up + cosine."""
from __future__ import annotations

import jax
import ml_collections
import optax

OPTIMIZERS = ("adamw", "lion", "sgd")


def schedule(cfg: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
  """Linear warm-up from 0 to `lr` over `warmup_steps`, then cosine decay to lr * `min_lr_ratio`."""
  warmup = min(cfg.get("warmup_steps", 0), max(total_steps - 1, 0))
  return optax.warmup_cosine_decay_schedule(0.0, cfg.lr, warmup, max(total_steps, warmup + 1),
                                            end_value=cfg.lr * cfg.get("min_lr_ratio", 0.0))


def _decay_mask(params):
  """Weight decay on matrices and kernels only, not on biases, norms, or embeddings of shape (1, n, d)."""
  return jax.tree.map(lambda p: p.ndim >= 2 and p.shape[0] != 1, params)


def make(cfg: ml_collections.ConfigDict, total_steps: int, trainable=None) -> optax.GradientTransformation:
  """The optimizer that `cfg.optimizer` names. `trainable(path) -> bool` freezes the other parameters
  (linear probing)."""
  name = cfg.optimizer
  if name not in OPTIMIZERS:
    raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")
  lr = schedule(cfg, total_steps)
  wd = cfg.get("weight_decay", 0.0)
  if name == "adamw":
    opt = optax.adamw(lr, b1=cfg.get("b1", 0.9), b2=cfg.get("b2", 0.999), weight_decay=wd, mask=_decay_mask)
  elif name == "lion":
    opt = optax.lion(lr, b1=cfg.get("b1", 0.9), b2=cfg.get("b2", 0.99), weight_decay=wd, mask=_decay_mask)
  else:
    opt = optax.chain(optax.add_decayed_weights(wd, mask=_decay_mask),
                      optax.sgd(lr, momentum=cfg.get("momentum", 0.9)))
  if cfg.get("grad_clip_norm"):
    opt = optax.chain(optax.clip_by_global_norm(cfg.grad_clip_norm), opt)
  if trainable is not None:
    labels = lambda params: jax.tree_util.tree_map_with_path(
        lambda path, _: "train" if trainable(jax.tree_util.keystr(path)) else "freeze", params)
    opt = optax.multi_transform({"train": opt, "freeze": optax.set_to_zero()}, labels)
  return opt
