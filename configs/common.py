"""Shared config helpers: big_vision's `:key=value,flag` argument strings, and the recipes several configs
share. Installed as `fractalpre.configs.common`; configs import it by that name."""
from __future__ import annotations

import ml_collections
from ml_collections import config_dict


# outer.workers=W > 0: DiLoCo-style training (fractalpre.optim.outer): W workers of consecutive devices each
# take `every` inner steps alone, then average their pseudo-gradients, sent as `comm` (fp32, bf16, int8,
# 4bit, 1bit), for an outer Nesterov step (lr, momentum: DiLoCo's 0.7 and 0.9; every: INTELLECT-1's 100);
# fragments=F > 1: Streaming DiLoCo, the parameters in F fragments synced at staggered steps.
OUTER = dict(workers=0, every=100, lr=0.7, momentum=0.9, comm="fp32", fragments=1)


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
  """'runlocal,delta=0.05' -> {runlocal: True, delta: 0.05, ...}, typed like the defaults. A default given
  as a type (`classes=int`) means "not set": None unless the argument gives a value, which is parsed as that
  type; `key=none` sets None (not set) for any key."""
  kinds = {k: v if isinstance(v, type) else type(v) for k, v in defaults.items()}
  out = ml_collections.ConfigDict({k: None if isinstance(v, type) else v for k, v in defaults.items()})
  for item in filter(None, (arg or "").split(",")):
    key, eq, value = item.partition("=")
    if key not in defaults:
      raise ValueError(f"unknown config argument {key!r}; allowed: {sorted(defaults)}")
    if not eq:
      out[key] = True
    elif value.lower() == "none":
      out[key] = None
    elif kinds[key] is bool:
      out[key] = value.lower() in ("1", "true", "yes")
    else:
      try:
        out[key] = kinds[key](value)
      except ValueError:
        raise ValueError(f"config argument {key}={value!r} is not a {kinds[key].__name__}") from None
  return out


def wandb() -> ml_collections.ConfigDict:
  """Weights & Biases logging, off while `project` is empty (needs `pip install 'fractalpre[wandb]'`)."""
  return ml_collections.ConfigDict(dict(project="", mode="online", name=""))


def disk_data(path: str) -> tuple[dict, bool]:
  """(data config, whether it has a test split) of a dataset folder: TFDS when it holds dataset_info.json,
  otherwise image class folders (OUT/<class>/ or OUT/train/<class>/ and OUT/test/<class>/)."""
  import json
  from pathlib import Path
  root = Path(path).expanduser()
  if not root.is_dir():
    raise ValueError(f"path {path!r} is not a folder")
  info = root / "dataset_info.json"
  if info.is_file():
    splits = {s["name"] for s in json.loads(info.read_text()).get("splits", [])}
    return dict(kind="tfds", name=str(root), train_split="train", test_split="test"), "test" in splits
  # skip_bad_images: leave out files that cannot be read as images (refused by default); max_pixels: the
  # largest image read (not set: about 89 MP, Pillow's own threshold)
  return dict(kind="folder", path=str(root), test_fraction=0.0, skip_bad_images=False,
              max_pixels=config_dict.placeholder(int)), (root / "test").is_dir()


def augment(recipe: bool = True) -> ml_collections.ConfigDict:
  """The 1p-frac augmentation recipe (Scaling Backwards, ECCV 2024), or none (evaluation-like training)."""
  if not recipe:
    return ml_collections.ConfigDict(dict(crop_scale=None, hflip=0.0, vflip=0.0, label_smoothing=0.0,
                                          mixup=0.0, cutmix=0.0))
  return ml_collections.ConfigDict(dict(crop_scale=(0.08, 1.0), crop_ratio=(3 / 4, 4 / 3), hflip=0.5, vflip=0.5,
                                        label_smoothing=0.1, mixup=0.8, cutmix=1.0))


def pretrain(data: dict, runlocal: bool, total_steps: int, warmup_steps: int) -> ml_collections.ConfigDict:
  """The shared pretraining recipe (Scaling Backwards, ECCV 2024) around a data config; `runlocal` swaps in a tiny ViT
  at 32 px, batch 64, 300 steps, which trains in minutes on 2 CPU cores."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  # augment_on 'device': a source that fits resident_budget_mb lives on every device as uint8 and the
  # recipe runs inside the step (others stream uint8 from grain); 'host': grain workers augment.
  c.data = ml_collections.ConfigDict({**data, "seed": 0, "workers": 8, "prefetch": 4, "augment_on": "device",
                                      "resident_budget_mb": 2048})
  c.data.augment = augment()
  c.image_size = 224
  c.model = ml_collections.ConfigDict(dict(name="vit_ti16", drop_path=0.1))
  c.precision = "fp32"
  c.batch_size = 256
  c.total_steps = total_steps
  c.optim = ml_collections.ConfigDict(dict(optimizer="adamw", lr=1e-3 * c.batch_size / 512, weight_decay=0.05,
                                           warmup_steps=warmup_steps, min_lr_ratio=0.0))
  # optim.optimizer=lion with lion.comm in fractalpre.optim.lion.COMMS: sign-compressed data parallelism.
  # lion.hierarchy=node: gradients averaged exactly within nodes of lion.local_devices devices, the vote across them.
  c.lion = ml_collections.ConfigDict(dict(comm="", momentum_sync="", sync_pattern="", hierarchy="flat",
                                          local_devices=0))
  c.outer = ml_collections.ConfigDict(OUTER)
  c.mup = ml_collections.ConfigDict(dict(base_width=0))  # > 0: muP relative to this width (ViTs; fractalpre.optim.mup)
  c.log_every = 100
  c.checkpoint_every = 2000
  c.keep_checkpoints = 3
  c.eval_every = 0
  c.tensorboard = True
  c.wandb = wandb()
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


# Bundled scikit-image photos: the SR configs train on TRAIN_PHOTOS and evaluate on EVAL_PHOTOS.
EVAL_PHOTOS = "astronaut,coffee,camera"
TRAIN_PHOTOS = ("rocket,coins,immunohistochemistry,hubble_deep_field,retina,brick,grass,gravel,moon,"
                "clock,text,page,chelsea")


def sr(arg: str | None, model: str) -> ml_collections.ConfigDict:
  """The shared SR recipe (EDSR's: 48 px LR patches, batch 16, L1, Adam at 1e-4 halved every 200k steps;
  here warm-up + cosine by default). `runlocal` shrinks the model to 32 features x 4 blocks, x2, 24 px
  patches and 300 steps, which trains in minutes on 2 CPU cores."""
  a = parse_arg(arg, scale=4, model=model, kind="photos", path="", names=TRAIN_PHOTOS, steps=int, batch=16,
                patch=48, lr=float, runlocal=False)
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.scale = a.scale
  c.lr_patch = a.patch
  c.data = ml_collections.ConfigDict(dict(kind=a.kind, path=a.path, names=a.names, split="train", data_dir="",
                                          workers=4, prefetch=4, augment=True, cache=256))
  # (low, high) ranges; (0, 0) = off. blur: sigma in HR px; noise: std in 8-bit levels; jpeg: quality.
  c.data.degrade = ml_collections.ConfigDict(dict(blur=(0.0, 0.0), noise=(0.0, 0.0), jpeg=(0, 0)))
  c.eval = ml_collections.ConfigDict(dict(kind="photos", names=EVAL_PHOTOS, path="", tile=128, overlap=16))
  c.model = ml_collections.ConfigDict(dict(name=a.model))
  c.precision = "fp32"
  c.batch_size = a.batch
  c.total_steps = 300_000 if a.steps is None else a.steps
  c.optim = ml_collections.ConfigDict(dict(optimizer="adamw", lr=2e-4 if a.lr is None else a.lr, b1=0.9, b2=0.999, weight_decay=0.0,
                                           warmup_steps=min(1000, c.total_steps // 20), schedule="cosine",
                                           decay_every=200_000, decay_factor=0.5, min_lr_ratio=0.01))
  c.log_every = 100
  c.eval_every = 5000
  c.checkpoint_every = 5000
  c.keep_checkpoints = 3
  c.tensorboard = True
  c.wandb = wandb()
  c.progress_unit = "patch"
  if a.runlocal:
    c.scale = 2 if a.scale == 4 else a.scale
    c.lr_patch = 24
    c.data.workers = 2
    c.model.update(dict(features=32, blocks=4) if a.model.startswith("edsr") else dict(features=16, groups=2, blocks=2))
    c.total_steps = 300 if a.steps is None else a.steps
    c.optim.update(lr=2e-3 if a.lr is None else a.lr, warmup_steps=20)
    c.log_every = 20
    c.eval_every = c.checkpoint_every = c.total_steps
  return c
