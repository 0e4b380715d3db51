"""SR fidelity the way the literature reports it: PSNR and SSIM on the Y channel of YCbCr (ITU-R BT.601,
MATLAB's rgb2ycbcr: Y in [16, 235]) of 8-bit images, with `scale` pixels cropped from every border."""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from superres.sr import data


def y_channel(image: np.ndarray) -> np.ndarray:
  """BT.601 luma of an RGB uint8 image as float64 in [16, 235]."""
  rgb = np.asarray(image, np.float64) / 255.0
  return 16.0 + rgb @ np.array([65.481, 128.553, 24.966])


def _prepare(sr: np.ndarray, hr: np.ndarray, border: int):
  if sr.shape != hr.shape:
    raise ValueError(f"SR and HR shapes differ: {sr.shape} vs {hr.shape}")
  y_sr, y_hr = y_channel(sr), y_channel(hr)
  if border:
    y_sr, y_hr = y_sr[border:-border, border:-border], y_hr[border:-border, border:-border]
  return y_sr, y_hr


def psnr(sr: np.ndarray, hr: np.ndarray, border: int = 0) -> float:
  """PSNR in dB of the Y channels (peak 255), after cropping `border` pixels; inf for identical images."""
  y_sr, y_hr = _prepare(sr, hr, border)
  mse = np.mean((y_sr - y_hr) ** 2)
  return float("inf") if mse == 0 else float(10 * np.log10(255.0 ** 2 / mse))


def ssim(sr: np.ndarray, hr: np.ndarray, border: int = 0) -> float:
  """SSIM (Wang et al. 2004) of the Y channels: 11x11 Gaussian window with sigma 1.5, K1 0.01, K2 0.03,
  peak 255, averaged over the positions where the window fits inside the (cropped) image."""
  x, y = _prepare(sr, hr, border)
  c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
  taps = np.exp(-0.5 * (np.arange(-5, 6) / 1.5) ** 2)
  taps /= taps.sum()

  def window_mean(a):
    a = ndimage.correlate1d(ndimage.correlate1d(a, taps, axis=0, mode="constant"), taps, axis=1, mode="constant")
    return a[5:-5, 5:-5]  # only where the window fits

  mx, my = window_mean(x), window_mean(y)
  vx, vy, cxy = window_mean(x * x) - mx ** 2, window_mean(y * y) - my ** 2, window_mean(x * y) - mx * my
  s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))
  return float(s.mean())


def evaluate_images(upscale_fn, images, scale: int) -> dict:
  """Mean PSNR / SSIM of `upscale_fn(lr uint8) -> sr uint8` over HR images (mod-cropped to the scale,
  bicubic-downsampled), and of plain bicubic upsampling as the baseline to beat."""
  scores = {"psnr": [], "ssim": [], "bicubic_psnr": [], "bicubic_ssim": []}
  for image in images:
    hr = data.mod_crop(np.asarray(image), scale)
    lr = data.downsample(hr, scale)
    sr = upscale_fn(lr)
    up = data.bicubic(lr, hr.shape[1], hr.shape[0])
    scores["psnr"].append(psnr(sr, hr, scale))
    scores["ssim"].append(ssim(sr, hr, scale))
    scores["bicubic_psnr"].append(psnr(up, hr, scale))
    scores["bicubic_ssim"].append(ssim(up, hr, scale))
  return {k: float(np.mean(v)) for k, v in scores.items()}
