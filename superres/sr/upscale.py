"""Applying a trained SR model to images of any size: overlapping tiles of a fixed size, so memory and
compiled shapes do not grow with the image, and each output pixel taken from the tile where it lies at
least `overlap` LR pixels from any cut (tiles at the image's own edges see that edge, as the whole image
would). With an overlap of about the model's receptive field, tiled equals untiled."""
from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np


def _spans(n: int, tile: int, overlap: int) -> list[tuple[int, int, int]]:
  """(tile start, first kept, end kept) along one axis of length n; tile <= n."""
  if tile >= n:
    return [(0, 0, n)]
  starts = list(range(0, n - tile, tile - 2 * overlap)) + [n - tile]
  spans, lo = [], 0
  for k, a in enumerate(starts):
    hi = n if k == len(starts) - 1 else a + tile - overlap
    spans.append((a, lo, hi))
    lo = hi
  return spans


class Upscaler:
  """`Upscaler(model, params, scale)(lr uint8 (h, w, 3)) -> sr uint8 (h s, w s, 3)`."""

  def __init__(self, model, params, scale: int, tile: int = 128, overlap: int = 16, batch: int = 8):
    if tile < 8 or not 0 <= 2 * overlap < tile:
      raise ValueError(f"tile must be >= 8 and overlap in [0, tile / 2), got tile {tile}, overlap {overlap}")
    if batch < 1:
      raise ValueError(f"batch must be >= 1, got {batch}")
    self.params, self.scale, self.tile, self.overlap, self.batch = params, scale, tile, overlap, batch
    self.checkpoint = None  # the checkpoint's fingerprint, when loaded from one
    self._apply = jax.jit(lambda p, x: jnp.clip(jnp.round(model.apply({"params": p}, x) * 255), 0, 255).astype(jnp.uint8))

  def __call__(self, lr: np.ndarray) -> np.ndarray:
    lr = np.asarray(lr)
    if lr.ndim != 3 or lr.shape[-1] != 3 or lr.dtype != np.uint8:
      raise ValueError(f"expected an RGB uint8 image (h, w, 3), got {lr.dtype} {lr.shape}")
    h, w, _ = lr.shape
    th, tw = min(self.tile, h), min(self.tile, w)
    rows, cols = _spans(h, th, self.overlap), _spans(w, tw, self.overlap)
    jobs = [(r, c) for r in rows for c in cols]
    s = self.scale
    out = np.empty((h * s, w * s, 3), np.uint8)
    for first in range(0, len(jobs), self.batch):
      chunk = jobs[first:first + self.batch]
      tiles = np.zeros((self.batch, th, tw, 3), np.float32)  # fixed batch: one compiled shape
      for i, ((a, _, _), (b, _, _)) in enumerate(chunk):
        tiles[i] = lr[a:a + th, b:b + tw] / 255.0
      sr = np.asarray(self._apply(self.params, tiles))
      for i, ((a, r0, r1), (b, c0, c1)) in enumerate(chunk):
        out[r0 * s:r1 * s, c0 * s:c1 * s] = sr[i, (r0 - a) * s:(r1 - a) * s, (c0 - b) * s:(c1 - b) * s]
    return out


def load(checkpoint: str | Path, **kwargs) -> Upscaler:
  """An Upscaler for a `superres.sr.trainer` workdir (its config.json and newest loadable checkpoint)."""
  import ml_collections

  from fractalpre.training import checkpoints
  from superres.sr import models
  workdir = Path(checkpoint)
  if workdir.name == "checkpoints":
    workdir = workdir.parent
  if not (workdir / "config.json").is_file():
    raise ValueError(f"--checkpoint {str(checkpoint)!r} is not a superres.train workdir (no config.json)")
  try:
    config = ml_collections.ConfigDict(json.loads((workdir / "config.json").read_text()))
  except ValueError as e:
    raise ValueError(f"--checkpoint {str(checkpoint)!r}: config.json cannot be read ({str(e)[:80]})") from None
  if "scale" not in config:
    raise ValueError(f"--checkpoint {str(checkpoint)!r} was not written by superres.train (no scale in its config)")
  model = models.from_config(config)
  step, state = checkpoints.newest_state(workdir, "--checkpoint")
  upscaler = Upscaler(model, state["params"], config.scale, **kwargs)
  upscaler.checkpoint = checkpoints.fingerprint(step, state)  # what its outputs record (util.provenance)
  return upscaler
