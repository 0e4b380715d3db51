"""FractalDB-1k pretraining of ViT-Ti/16, rendered on the fly (REFERENCE A4).

  python -m fractalpre.train --config configs/pretrain_fractaldb_vit.py --workdir runs/fdb_vit
  python -m fractalpre.train --config configs/pretrain_fractaldb_vit.py:runlocal --workdir runs/fdb_local

Arguments: classes, instances (per class), runlocal.
"""
import ml_collections

from configs import common


def get_config(arg=None):
  a = common.parse_arg(arg, runlocal=False, classes=1000, instances=1000)
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.data = ml_collections.ConfigDict(dict(kind="fractaldb", num_classes=a.classes, instances_per_class=a.instances,
                                          render_size=362, points=200_000, seed=0, workers=8, prefetch=4))
  c.data.augment = common.augment()
  c.image_size = 224
  c.model = ml_collections.ConfigDict(dict(name="vit_ti16", drop_path=0.1))
  c.precision = "fp32"
  c.batch_size = 256
  c.total_steps = 300 * a.classes * a.instances // c.batch_size  # 300 epochs
  c.optim = ml_collections.ConfigDict(dict(optimizer="adamw", lr=1e-3 * c.batch_size / 512, weight_decay=0.05,
                                           warmup_steps=5 * a.classes * a.instances // c.batch_size))
  # optim.optimizer=lion with lion.comm in fractalpre.parallel.COMMS: sign-compressed data parallelism.
  c.lion = ml_collections.ConfigDict(dict(comm="", momentum_sync="", sync_pattern=""))
  c.log_every = 100
  c.checkpoint_every = 2000
  c.keep_checkpoints = 3
  c.eval_every = 0
  c.tensorboard = True
  if a.runlocal:
    c.data.update(num_classes=min(a.classes, 20), instances_per_class=min(a.instances, 50), render_size=32,
                  points=5_000, workers=2)
    c.image_size = 32
    c.model = ml_collections.ConfigDict(dict(name="vit_cpu", drop_path=0.0))
    c.batch_size = 64
    c.total_steps = 300
    c.optim.update(lr=1e-3, warmup_steps=30)
    c.log_every = 10
    c.checkpoint_every = 100
  return c
