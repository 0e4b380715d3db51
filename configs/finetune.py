"""Fine-tuning a pretrained checkpoint on a labelled dataset: `digits` (scikit-learn's), `lfw` (scikit-image's
lfw_subset: faces / non-faces), a TFDS name (+ data_dir), or a folder
(a TFDS dataset folder, or ImageFolder class folders with train/ and test/ sub-folders).

  python -m fractalpre.train --config "configs/finetune.py:dataset=digits,init_from=runs/local" --workdir runs/ft
  python -m fractalpre.train --config "configs/finetune.py:dataset=cifar100,data_dir=~/tensorflow_datasets,init_from=runs/1pfrac_vit,model=vit_ti16" --workdir runs/ft_c100

  python -m fractalpre.train --config "configs/finetune.py:dataset=digits,init_from=runs/local,optimizer=ivon" --workdir runs/ft_ivon

An empty init_from trains from scratch (the baseline). The head is new; position embeddings are
resampled when the resolution changes. Evaluation reports top-1, NLL and ECE on the test split; with
optimizer=ivon also at the Bayesian model average of `bma` weight samples (eval_bma_*).
Arguments: dataset, data_dir, init_from, model, image_size, labels_per_class (digits, lfw; default all), steps,
batch, lr (default 1e-3 for adamw, 0.2 for ivon), optimizer (adamw|ivon), ess (ivon's effective sample size,
default 1e5; `ess=none`: the training set size), bma, linear_probe (configs/linear_probe.py: no training, a
logistic-regression probe of init_from's features).
"""
import ml_collections
from ml_collections import config_dict

from fractalpre.configs import common


def get_config(arg=None):
  a = common.parse_arg(arg, dataset="digits", data_dir="", init_from="", model="vit_cpu", image_size=32,
                       labels_per_class=int, steps=300, batch=64, lr=float, linear_probe=False, optimizer="adamw",
                       ess=1e5, bma=8)
  c = ml_collections.ConfigDict()
  c.seed = 0
  if a.dataset in ("digits", "lfw"):  # real images bundled with scikit-learn / scikit-image
    c.data = ml_collections.ConfigDict(dict(kind=a.dataset, labels_per_class=a.labels_per_class, seed=0))
  elif "/" in a.dataset or a.dataset.startswith("."):
    c.data = ml_collections.ConfigDict(common.disk_data(a.dataset)[0])
  else:
    c.data = ml_collections.ConfigDict(dict(kind="tfds", name=a.dataset, data_dir=a.data_dir or None,
                                            train_split="train", test_split="test"))
  c.data.workers = 2
  c.data.prefetch = 4
  # 'device': the source on the accelerator, the recipe compiled into the step; 'host': grain workers.
  # TFDS and folder images need not share one size, so they take the host path.
  c.data.augment_on = "device" if a.dataset in ("digits", "lfw") else "host"
  c.data.resident_budget_mb = 2048  # sources up to this size live on every device
  c.data.augment = ml_collections.ConfigDict(dict(crop_scale=(0.5, 1.0), crop_ratio=(3 / 4, 4 / 3), hflip=0.0,
                                                  vflip=0.0, label_smoothing=0.1, mixup=0.0, cutmix=0.0))
  if a.linear_probe:  # the probe reads whole images, unaugmented (fractalpre.training.linear_probe)
    c.data.augment = common.augment(recipe=False)
  c.init_from = a.init_from
  c.linear_probe = a.linear_probe
  c.image_size = a.image_size
  c.model = ml_collections.ConfigDict(dict(name=a.model))
  c.precision = "fp32"
  c.batch_size = a.batch
  c.total_steps = a.steps
  if a.optimizer == "ivon":
    # Short few-label fine-tunes (measured on digits, 100 labels, 150 steps): the paper's long-run settings
    # (hess_init 0.1, b2 0.99999, clip radius 1e-3, ess = N) did not learn -- the curvature never left
    # hess_init, the steps were clipped to nothing and sigma ~ 0.3 drowned the weights. hess_init 1, b2 0.999,
    # no clipping and ess 1e5 learn. ess=none uses the training set size.
    ess = config_dict.placeholder(float) if a.ess is None else a.ess  # not set: the training set size
    c.optim = ml_collections.ConfigDict(dict(optimizer="ivon", lr=0.2 if a.lr is None else a.lr, ess=ess, hess_init=1.0,
                                             b1=0.9, b2=0.999, weight_decay=1e-4, clip_radius=float("inf"),
                                             warmup_steps=max(a.steps // 10, 1)))
  else:
    c.optim = ml_collections.ConfigDict(dict(optimizer=a.optimizer, lr=1e-3 if a.lr is None else a.lr, weight_decay=0.05,
                                             warmup_steps=max(a.steps // 10, 1)))
  c.eval_bma_samples = a.bma
  c.mup = ml_collections.ConfigDict(dict(base_width=0))  # > 0: muP relative to this width (ViTs; fractalpre.optim.mup)
  c.log_every = 10
  c.checkpoint_every = max(a.steps // 3, 1)
  c.keep_checkpoints = 2
  c.eval_every = a.steps
  c.tensorboard = True
  c.wandb = common.wandb()
  return c
