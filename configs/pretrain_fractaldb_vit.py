"""FractalDB-1k pretraining of ViT-Ti/16, rendered on the fly (Kataoka et al., ACCV 2020).

  python -m fractalpre.train --config configs/pretrain_fractaldb_vit.py --workdir runs/fdb_vit
  python -m fractalpre.train --config configs/pretrain_fractaldb_vit.py:runlocal --workdir runs/fdb_local

Arguments: classes, instances (per class), runlocal.
"""
from fractalpre.configs import common


def get_config(arg=None):
  a = common.parse_arg(arg, runlocal=False, classes=1000, instances=1000)
  epoch = a.classes * a.instances // 256
  c = common.pretrain(dict(kind="fractaldb", num_classes=a.classes, instances_per_class=a.instances, render_size=362,
                           points=200_000), a.runlocal, total_steps=300 * epoch, warmup_steps=5 * epoch)
  if a.runlocal:
    c.data.update(num_classes=min(a.classes, 20), instances_per_class=min(a.instances, 50), render_size=32,
                  points=5_000)
  return c
