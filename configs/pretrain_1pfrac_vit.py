"""1p-frac pretraining of ViT-Ti/16 (the recipe of "Scaling Backwards: Minimal Synthetic Pre-training?", ECCV 2024).

  python -m fractalpre.train --config configs/pretrain_1pfrac_vit.py --workdir runs/1pfrac_vit
  python -m fractalpre.train --config configs/pretrain_1pfrac_vit.py:runlocal --workdir runs/local

`runlocal`: a tiny ViT (patch 4, 32 px crops of 64 px renders, 5k points), L = 16, delta = 0.3,
no mixup/cutmix, 300 steps of 64: under a minute on 2 CPU cores (36 s measured, with tcmalloc). At that budget the full recipe
(L = 1000, delta = 0.1, mixup + cutmix) does not leave chance level, so runlocal trades it for a task the
tiny model can learn in minutes.
Arguments: delta, sigma, classes (L); when not given: L = 1000, delta = 0.1 (runlocal: 16, 0.3).
"""
from fractalpre.configs import common


def get_config(arg=None):
  a = common.parse_arg(arg, runlocal=False, delta=float, sigma=3.5, classes=int)
  if a.classes is None:
    a.classes = 16 if a.runlocal else 1000
  if a.delta is None:
    a.delta = 0.3 if a.runlocal else 0.1
  c = common.pretrain(dict(kind="1p-frac", num_classes=a.classes, delta=a.delta, sigma=a.sigma, render_size=224,
                           points=100_000), a.runlocal, total_steps=240_000, warmup_steps=5_000)
  if a.runlocal:  # 32 px crops of 64 px renders, no mixup/cutmix: a task the tiny model learns in minutes
    c.data.update(render_size=64, points=5_000)
    c.data.augment.update(crop_scale=(0.35, 1.0), mixup=0.0, cutmix=0.0)
  return c
