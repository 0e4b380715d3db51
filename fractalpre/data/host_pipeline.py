"""Input pipeline on grain: source -> shuffle -> augment -> per-host slice -> batch -> mix -> prefetch.

Sources (fractalpre.data.sources) are random access (`len`, `src[i] -> (uint8 image, int label)`): the fractal
and single-image sources render on the fly in grain's worker threads (Numba releases the GIL), so pretraining needs no
dataset on disk. Every random choice is seeded by grain from (seed, element index), so the batch at a
given step is a pure function of the config, and the iterator's state (`get_state`, checkpointed with the
model) puts a resumed run on exactly the batches it would have seen.
"""
from __future__ import annotations

import dataclasses
import math

import grain
import jax
import ml_collections
import numpy as np
from PIL import Image

from fractalpre.data.preprocessing import MEAN, STD, AugmentSettings

MIN_SHUFFLE = 1024  # shuffle at least this many elements per epoch (tiny sources are repeated)


# ----------------------------------------------------------------------------------------- augmentation
@dataclasses.dataclass(frozen=True)
class Augment:
  """Per-image ops of the 1p-frac recipe; each switchable. Output: float32 (size, size, 3), normalised."""
  image_size: int
  crop_scale: tuple[float, float] | None = AugmentSettings.crop_scale
  crop_ratio: tuple[float, float] = AugmentSettings.crop_ratio
  hflip: float = AugmentSettings.hflip
  vflip: float = AugmentSettings.vflip

  def __call__(self, example, rng: np.random.Generator):
    image, label = example
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] == 1:
      image = image[..., 0]
    h, w = image.shape[:2]
    box = (0, 0, w, h)
    if self.crop_scale is not None:
      box = self._crop_box(h, w, rng)
    pil = Image.fromarray(image).convert("RGB")
    out = np.asarray(pil.resize((self.image_size, self.image_size), Image.Resampling.BILINEAR, box=box))
    if rng.random() < self.hflip:
      out = out[:, ::-1]
    if rng.random() < self.vflip:
      out = out[::-1]
    return normalise(out), label

  def _crop_box(self, h, w, rng):
    """RandomResizedCrop's sampler: area fraction in crop_scale, log-uniform aspect in crop_ratio."""
    area = h * w
    log_ratio = np.log(self.crop_ratio)
    for _ in range(10):
      target = area * rng.uniform(*self.crop_scale)
      ratio = np.exp(rng.uniform(*log_ratio))
      cw, ch = int(round(np.sqrt(target * ratio))), int(round(np.sqrt(target / ratio)))
      if 0 < cw <= w and 0 < ch <= h:
        top, left = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
        return (left, top, left + cw, top + ch)
    side = min(h, w)
    return ((w - side) // 2, (h - side) // 2, (w + side) // 2, (h + side) // 2)


def normalise(image: np.ndarray) -> np.ndarray:
  return ((image.astype(np.float32) / 255.0) - MEAN) / STD


def resized_rgb(image, image_size: int) -> np.ndarray:
  """A whole uint8 image (gray or RGB) as uint8 RGB (image_size, image_size, 3), bilinear."""
  image = np.asarray(image)
  if image.ndim == 3 and image.shape[-1] == 1:
    image = image[..., 0]
  pil = Image.fromarray(image).convert("RGB").resize((image_size, image_size), Image.Resampling.BILINEAR)
  return np.asarray(pil)


def evaluation_view(example, image_size: int):
  image, label = example
  return normalise(resized_rgb(image, image_size)), label


def sample_grid(source, image_size: int, count: int = 16) -> np.ndarray:
  """`count` images spread over a source, at the model's input size, tiled (for TensorBoard / W&B)."""
  from fractalpre import util
  step = max(1, len(source) // count)
  return util.image_grid([resized_rgb(source[i][0], image_size) for i in range(0, len(source), step)[:count]],
                           border=1)


@dataclasses.dataclass(frozen=True)
class MixBatch:
  """Batch-level targets: one-hot with label smoothing, then mixup or cutmix (one per batch, picked
  with probability `switch`), as in the 1p-frac recipe (timm's Mixup)."""
  num_classes: int
  label_smoothing: float = AugmentSettings.label_smoothing
  mixup: float = AugmentSettings.mixup
  cutmix: float = AugmentSettings.cutmix
  switch: float = AugmentSettings.switch

  def __call__(self, batch, rng: np.random.Generator):
    images, labels = batch
    targets = np.full((len(labels), self.num_classes), self.label_smoothing / self.num_classes, np.float32)
    targets[np.arange(len(labels)), labels] += 1.0 - self.label_smoothing
    use_cutmix = self.cutmix > 0 and (self.mixup == 0 or rng.random() < self.switch)
    if use_cutmix:
      lam = rng.beta(self.cutmix, self.cutmix)
      h, w = images.shape[1:3]
      ch, cw = int(h * np.sqrt(1 - lam)), int(w * np.sqrt(1 - lam))
      cy, cx = rng.integers(0, h), rng.integers(0, w)
      y0, y1 = np.clip([cy - ch // 2, cy + ch // 2], 0, h)
      x0, x1 = np.clip([cx - cw // 2, cx + cw // 2], 0, w)
      images = images.copy()
      images[:, y0:y1, x0:x1] = images[::-1, y0:y1, x0:x1]
      lam = 1 - (y1 - y0) * (x1 - x0) / (h * w)
    elif self.mixup > 0:
      lam = rng.beta(self.mixup, self.mixup)
      images = lam * images + (1 - lam) * images[::-1]
    else:
      return {"image": images, "label": targets}
    return {"image": images.astype(np.float32), "label": (lam * targets + (1 - lam) * targets[::-1])}


def stack_examples(examples):
  return np.stack([e[0] for e in examples]), np.array([e[1] for e in examples], np.int64)


# ----------------------------------------------------------------------------------------- iterators
def train_iterator(source, cfg: ml_collections.ConfigDict, global_batch: int, seed: int):
  """An infinite grain iterator of this host's share of each global batch:
  {"image": float32 (b, s, s, 3), "label": float32 (b, classes) soft targets}."""
  aug = AugmentSettings.from_config(cfg.augment)
  augment = Augment(cfg.image_size, aug.crop_scale, aug.crop_ratio, aug.hflip, aug.vflip)
  mix = MixBatch(source.num_classes, aug.label_smoothing, aug.mixup, aug.cutmix, aug.switch)
  return shuffled_batches(source, seed, global_batch, augment, stack_examples, mix, cfg.get("workers", 4), cfg.get("prefetch", 4))


def shuffled_batches(source, seed: int, global_batch: int, example_fn, batch_fn, batch_map=None, workers: int = 4,
                     prefetch: int = 4):
  """source -> shuffle (every epoch) -> `example_fn(example, rng)` -> this host's slice -> `batch_fn(list)`
  -> `batch_map(batch, rng)`, as an infinite, checkpointable grain iterator of per-host batches."""
  hosts, host = jax.process_count(), jax.process_index()
  if global_batch % hosts:
    raise ValueError(f"batch_size must be divisible by the {hosts} hosts, got {global_batch}")
  ds = grain.MapDataset.source(source).seed(seed)
  if len(source) < MIN_SHUFFLE:  # grain's index shuffle costs ~3 ms per element on tiny datasets
    ds = ds.repeat(math.ceil(MIN_SHUFFLE / len(source)))
  ds = (ds.shuffle().repeat()
        .random_map(example_fn)
        .slice(slice(host, None, hosts))
        .batch(global_batch // hosts, batch_fn=batch_fn))
  if batch_map is not None:
    ds = ds.random_map(batch_map)
  return iter(ds.to_iter_dataset(grain.ReadOptions(num_threads=workers, prefetch_buffer_size=prefetch)))


def eval_batches(source, image_size: int, global_batch: int):
  """Every example once, in order, in global batches padded to full size; `mask` marks real ones.
  (Evaluation runs the same sharded program on every host, so each host builds the whole batch.)"""
  for first in range(0, len(source), global_batch):
    ids = range(first, min(first + global_batch, len(source)))
    images, labels = stack_examples([evaluation_view(source[i], image_size) for i in ids])
    pad = global_batch - len(ids)
    mask = np.concatenate([np.ones(len(ids), bool), np.zeros(pad, bool)])
    images = np.concatenate([images, np.zeros((pad,) + images.shape[1:], images.dtype)])
    labels = np.concatenate([labels, np.zeros(pad, labels.dtype)])
    yield {"image": images, "label": labels, "mask": mask}
