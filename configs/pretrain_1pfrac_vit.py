"""1p-frac pretraining of ViT-Ti/16 (the reference recipe, REFERENCE A3).

  python -m fractalpre.train --config configs/pretrain_1pfrac_vit.py --workdir runs/1pfrac_vit
  python -m fractalpre.train --config configs/pretrain_1pfrac_vit.py:runlocal --workdir runs/local

`runlocal`: a tiny ViT (patch 4, 32 px crops of 64 px renders, 5k points), L = 16, delta = 0.3,
no mixup/cutmix, 300 steps of 64: about 3 minutes on 2 CPU cores. At that budget the full recipe
(L = 1000, delta = 0.1, mixup + cutmix) does not leave chance level, so runlocal trades it for a task the
tiny model can learn in minutes.
Arguments: delta, sigma, classes (L); a negative value means the default (1000 / 0.1, runlocal 16 / 0.3).
"""
import ml_collections

from configs import common


def get_config(arg=None):
  a = common.parse_arg(arg, runlocal=False, delta=-1.0, sigma=3.5, classes=-1)
  if a.classes < 0:
    a.classes = 16 if a.runlocal else 1000
  if a.delta < 0:
    a.delta = 0.3 if a.runlocal else 0.1
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.data = ml_collections.ConfigDict(dict(kind="1p-frac", num_classes=a.classes, delta=a.delta, sigma=a.sigma,
                                          render_size=224, points=100_000, seed=0, workers=8, prefetch=4))
  c.data.augment = common.augment()
  c.image_size = 224
  c.model = ml_collections.ConfigDict(dict(name="vit_ti16", drop_path=0.1))
  c.precision = "fp32"
  c.batch_size = 256
  c.total_steps = 240_000  # 80,000 epochs of the 1k images at batch 256 (REFERENCE A3)
  c.optim = ml_collections.ConfigDict(dict(optimizer="adamw", lr=1e-3 * c.batch_size / 512, weight_decay=0.05,
                                           warmup_steps=5_000, min_lr_ratio=0.0))
  # optim.optimizer=lion with lion.comm in fractalpre.parallel.COMMS: sign-compressed data parallelism.
  c.lion = ml_collections.ConfigDict(dict(comm="", momentum_sync="", sync_pattern=""))
  c.log_every = 100
  c.checkpoint_every = 2000
  c.keep_checkpoints = 3
  c.eval_every = 0
  c.tensorboard = True
  if a.runlocal:
    c.data.update(render_size=64, points=5_000, workers=2)
    c.data.augment.update(crop_scale=(0.35, 1.0), mixup=0.0, cutmix=0.0)
    c.image_size = 32
    c.model = ml_collections.ConfigDict(dict(name="vit_cpu", drop_path=0.0))
    c.batch_size = 64
    c.total_steps = 300
    c.optim.update(lr=1e-3, warmup_steps=30)
    c.log_every = 10
    c.checkpoint_every = 100
  return c
