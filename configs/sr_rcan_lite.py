"""RCAN-lite super-resolution (residual channel-attention blocks; 4 groups x 4 blocks x 32 features).

  python -m superres.train --config configs/sr_rcan_lite.py:runlocal --workdir runs/rcan_local
  python -m superres.train --config "configs/sr_rcan_lite.py:scale=4,kind=manifest,path=curated.csv" --workdir runs/rcan_x4

Arguments as configs/sr_edsr.py (configs/common.py: sr).
"""
from fractalpre.configs import common


def get_config(arg=None):
  return common.sr(arg, model="rcan_lite")
