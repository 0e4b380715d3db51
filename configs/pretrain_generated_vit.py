"""Pretraining on a dataset on disk: what `fractalpre generate` writes (PNG class folders or a TFDS folder),
or any torchvision-style ImageFolder, with the 1p-frac recipe.
  python -m fractalpre generate --dataset 1p-frac --classes 1000 --test-instances 2 --out data/1pfrac
  python -m fractalpre.train --config configs/pretrain_generated_vit.py:path=data/1pfrac --workdir runs/disk

The format is found from the folder (dataset_info.json: TFDS; otherwise class folders). When the folder
has a test split (OUT/test/, or a TFDS `test` split) it is evaluated every `eval_every` steps.
Arguments: path (required), runlocal (the tiny 32 px ViT; see pretrain_1pfrac_vit.py), steps.
"""
from fractalpre.configs import common


def get_config(arg=None):
  a = common.parse_arg(arg, path="", runlocal=False, steps=int)
  if not a.path:
    raise ValueError("configs/pretrain_generated_vit.py needs :path=FOLDER (a dataset written by "
                     "`fractalpre generate`, or an ImageFolder)")
  data, has_test = common.disk_data(a.path)
  c = common.pretrain(data, a.runlocal, total_steps=240_000 if a.steps is None else a.steps, warmup_steps=5_000)
  if a.runlocal:
    c.data.augment.update(crop_scale=(0.35, 1.0), mixup=0.0, cutmix=0.0)
    c.total_steps = c.total_steps if a.steps is None else a.steps
    c.optim.warmup_steps = min(c.optim.warmup_steps, max(c.total_steps // 10, 1))
  c.eval_every = c.total_steps if has_test else 0
  return c
