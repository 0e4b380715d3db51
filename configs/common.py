"""Shared config helpers: big_vision's `:key=value,flag` argument strings."""
from __future__ import annotations

import ml_collections


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
  """'runlocal,delta=0.05' -> {runlocal: True, delta: 0.05, ...}, typed like the defaults."""
  out = ml_collections.ConfigDict(defaults)
  for item in filter(None, (arg or "").split(",")):
    key, eq, value = item.partition("=")
    if key not in defaults:
      raise ValueError(f"unknown config argument {key!r}; allowed: {sorted(defaults)}")
    if not eq:
      out[key] = True
    else:
      kind = type(defaults[key])
      out[key] = value.lower() in ("1", "true", "yes") if kind is bool else kind(value)
  return out


def augment(recipe: bool = True) -> ml_collections.ConfigDict:
  """The 1p-frac augmentation recipe (REFERENCE A3), or none (evaluation-like training)."""
  if not recipe:
    return ml_collections.ConfigDict(dict(crop_scale=None, hflip=0.0, vflip=0.0, label_smoothing=0.0,
                                          mixup=0.0, cutmix=0.0))
  return ml_collections.ConfigDict(dict(crop_scale=(0.08, 1.0), crop_ratio=(3 / 4, 4 / 3), hflip=0.5, vflip=0.5,
                                        label_smoothing=0.1, mixup=0.8, cutmix=1.0))


def pretrain(data: dict, runlocal: bool, total_steps: int, warmup_steps: int) -> ml_collections.ConfigDict:
  """The shared pretraining recipe (REFERENCE A3) around a data config; `runlocal` swaps in a tiny ViT
  at 32 px, batch 64, 300 steps, which trains in minutes on 2 CPU cores."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.data = ml_collections.ConfigDict({**data, "seed": 0, "workers": 8, "prefetch": 4})
  c.data.augment = augment()
  c.image_size = 224
  c.model = ml_collections.ConfigDict(dict(name="vit_ti16", drop_path=0.1))
  c.precision = "fp32"
  c.batch_size = 256
  c.total_steps = total_steps
  c.optim = ml_collections.ConfigDict(dict(optimizer="adamw", lr=1e-3 * c.batch_size / 512, weight_decay=0.05,
                                           warmup_steps=warmup_steps, min_lr_ratio=0.0))
  # optim.optimizer=lion with lion.comm in fractalpre.parallel.COMMS: sign-compressed data parallelism.
  c.lion = ml_collections.ConfigDict(dict(comm="", momentum_sync="", sync_pattern=""))
  c.log_every = 100
  c.checkpoint_every = 2000
  c.keep_checkpoints = 3
  c.eval_every = 0
  c.tensorboard = True
  if runlocal:
    c.data.workers = 2
    c.image_size = 32
    c.model = ml_collections.ConfigDict(dict(name="vit_cpu", drop_path=0.0))
    c.batch_size = 64
    c.total_steps = 300
    c.optim.update(lr=1e-3, warmup_steps=30)
    c.log_every = 10
    c.checkpoint_every = 100
  return c
