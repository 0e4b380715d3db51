"""EDSR-baseline super-resolution (L1, Adam, warm-up + cosine), trained on HR patches cut on the fly.

  python -m superres.train --config configs/sr_edsr.py:runlocal --workdir runs/sr_local
  python -m superres.train --config "configs/sr_edsr.py:scale=4,kind=folder,path=data/DF2K_HR" --workdir runs/edsr_x4
  superres upscale photo.png photo_x4.png --checkpoint runs/edsr_x4

Arguments (configs/common.py: sr): scale, model, kind (photos|folder|manifest|tfds), path, names, steps, batch,
patch, lr, runlocal. Evaluation: PSNR/SSIM on the Y channel of held-out bundled photos.
"""
from fractalpre.configs import common


def get_config(arg=None):
  return common.sr(arg, model="edsr_baseline")
