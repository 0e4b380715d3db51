"""Pretraining from one real image (the 1p-img extension of 1p-frac, Scaling Backwards, ECCV 2024).

  python -m fractalpre.train --config configs/pretrain_1pimg_vit.py --workdir runs/1pimg
  python -m fractalpre.train --config "configs/pretrain_1pimg_vit.py:image=camera,rendering=edges" --workdir runs/1pimg_edges
  python -m fractalpre.train --config configs/pretrain_1pimg_vit.py:runlocal --workdir runs/1pimg_local

Arguments: image (a path or a scikit-image photo name), rendering (gray | edges), delta, classes, runlocal.
"""
from fractalpre.configs import common


def get_config(arg=None):
  a = common.parse_arg(arg, runlocal=False, image="astronaut", rendering="edges", delta=0.1, classes=1000)
  c = common.pretrain(dict(kind="1p-img", image=a.image, rendering=a.rendering, delta=a.delta, num_classes=a.classes,
                           render_size=224), a.runlocal, total_steps=240_000, warmup_steps=5_000)
  if a.runlocal:
    c.data.update(num_classes=min(a.classes, 100), render_size=32)
  return c
