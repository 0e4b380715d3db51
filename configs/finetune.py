"""Fine-tuning a pretrained checkpoint on a labelled dataset: a TFDS name (+ data_dir) or `digits`.

  python -m fractalpre.train --config "configs/finetune.py:dataset=digits,init_from=runs/local" --workdir runs/ft
  python -m fractalpre.train --config "configs/finetune.py:dataset=cifar100,data_dir=~/tensorflow_datasets,init_from=runs/1pfrac_vit,model=vit_ti16" --workdir runs/ft_c100

An empty init_from trains from scratch (the baseline). The head is new; position embeddings are
resampled when the resolution changes. Evaluation reports top-1, NLL and ECE on the test split.
Arguments: dataset, data_dir, init_from, model, image_size, labels_per_class (digits), steps, batch, lr.
"""
import ml_collections

from configs import common


def get_config(arg=None):
  a = common.parse_arg(arg, dataset="digits", data_dir="", init_from="", model="vit_cpu", image_size=32,
                       labels_per_class=0, steps=300, batch=64, lr=1e-3, linear_probe=False)
  c = ml_collections.ConfigDict()
  c.seed = 0
  if a.dataset == "digits":
    c.data = ml_collections.ConfigDict(dict(kind="digits", labels_per_class=a.labels_per_class or None, seed=0))
  else:
    c.data = ml_collections.ConfigDict(dict(kind="tfds", name=a.dataset, data_dir=a.data_dir or None,
                                            train_split="train", test_split="test"))
  c.data.workers = 2
  c.data.prefetch = 4
  c.data.augment = ml_collections.ConfigDict(dict(crop_scale=(0.5, 1.0), crop_ratio=(3 / 4, 4 / 3), hflip=0.0,
                                                  vflip=0.0, label_smoothing=0.1, mixup=0.0, cutmix=0.0))
  if a.linear_probe:
    c.data.augment = common.augment(recipe=False)
  c.init_from = a.init_from
  c.linear_probe = a.linear_probe
  c.image_size = a.image_size
  c.model = ml_collections.ConfigDict(dict(name=a.model))
  c.precision = "fp32"
  c.batch_size = a.batch
  c.total_steps = a.steps
  c.optim = ml_collections.ConfigDict(dict(optimizer="adamw", lr=a.lr, weight_decay=0.05,
                                           warmup_steps=max(a.steps // 10, 1)))
  c.log_every = 10
  c.checkpoint_every = max(a.steps // 3, 1)
  c.keep_checkpoints = 2
  c.eval_every = a.steps
  c.tensorboard = True
  return c
