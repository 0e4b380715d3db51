"""Pretraining from one real image (the 1p-img extension of 1p-frac, REFERENCE A3 last item).

  python -m fractalpre.train --config configs/pretrain_1pimg_vit.py --workdir runs/1pimg
  python -m fractalpre.train --config "configs/pretrain_1pimg_vit.py:image=camera,rendering=edges" --workdir runs/1pimg_edges
  python -m fractalpre.train --config configs/pretrain_1pimg_vit.py:runlocal --workdir runs/1pimg_local

Arguments: image (a path or a scikit-image photo name), rendering (gray | edges), delta, classes, runlocal.
"""
import ml_collections

from configs import common


def get_config(arg=None):
  a = common.parse_arg(arg, runlocal=False, image="astronaut", rendering="edges", delta=0.1, classes=1000)
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.data = ml_collections.ConfigDict(dict(kind="1p-img", image=a.image, rendering=a.rendering, delta=a.delta,
                                          num_classes=a.classes, render_size=224, seed=0, workers=8, prefetch=4))
  c.data.augment = common.augment()
  c.image_size = 224
  c.model = ml_collections.ConfigDict(dict(name="vit_ti16", drop_path=0.1))
  c.precision = "fp32"
  c.batch_size = 256
  c.total_steps = 240_000
  c.optim = ml_collections.ConfigDict(dict(optimizer="adamw", lr=1e-3 * c.batch_size / 512, weight_decay=0.05,
                                           warmup_steps=5_000))
  # optim.optimizer=lion with lion.comm in fractalpre.parallel.COMMS: sign-compressed data parallelism.
  c.lion = ml_collections.ConfigDict(dict(comm="", momentum_sync="", sync_pattern=""))
  c.log_every = 100
  c.checkpoint_every = 2000
  c.keep_checkpoints = 3
  c.eval_every = 0
  c.tensorboard = True
  if a.runlocal:
    c.data.update(num_classes=min(a.classes, 100), render_size=32, workers=2)
    c.image_size = 32
    c.model = ml_collections.ConfigDict(dict(name="vit_cpu", drop_path=0.0))
    c.batch_size = 64
    c.total_steps = 300
    c.optim.update(lr=1e-3, warmup_steps=30)
    c.log_every = 10
    c.checkpoint_every = 100
  return c
