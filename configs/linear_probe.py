"""Linear probe: a new head on frozen pretrained features (only the head is trained).

  python -m fractalpre.train --config "configs/linear_probe.py:dataset=digits,init_from=runs/local" --workdir runs/probe

Arguments as configs/finetune.py.
"""
from fractalpre.configs import finetune


def get_config(arg=None):
  arg = f"linear_probe=true,lr=1e-2,{arg}" if arg else "linear_probe=true,lr=1e-2"
  return finetune.get_config(arg)
