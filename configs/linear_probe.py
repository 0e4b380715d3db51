"""Linear probe of pretrained features, the protocol of CLIP (Radford et al., 2021): the frozen model's
pre-head features, standardised, an L2-regularised logistic regression (L-BFGS) whose strength is chosen by
5-fold cross-validation on the training labels only, refit on all of them, then top-1 / NLL / ECE on the test
split (fractalpre.training.linear_probe). Nothing is trained by gradient steps.

  python -m fractalpre.train --config "configs/linear_probe.py:dataset=digits,labels_per_class=10,init_from=runs/local" --workdir runs/probe

Arguments as configs/finetune.py (dataset, init_from, model, image_size, labels_per_class, ...); the
optimizer's settings are unused. An empty init_from probes a randomly initialised network (the baseline).
"""
from fractalpre.configs import finetune


def get_config(arg=None):
  return finetune.get_config(f"linear_probe=true,{arg}" if arg else "linear_probe=true")
