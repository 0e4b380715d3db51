"""The 1p-frac augmentation recipe as pure JAX, compiled into the train step.

uint8 images of any channel count go in; normalised float32 RGB at the model's size comes out. Per-image
ops (RandomResizedCrop with bilinear resampling, flips) are vmapped over the batch; the batch-level
targets (label smoothing, then mixup or cutmix, one per batch, as timm's Mixup) follow. Every random
choice comes from `example_key(key, step, i)` for the i-th example of the global batch, or from the
step's key for the batch-level choices, so a global batch is the same bits on any device count and
after a resume. The host path's counterpart is `host_pipeline.Augment` / `MixBatch`; both take their
settings and defaults from `preprocessing.AugmentSettings`.
"""
from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from fractalpre.data.preprocessing import MEAN, STD, AugmentSettings

_TRIES = 10  # RandomResizedCrop's attempts before its fallback
BATCH_INDEX = 2**31 - 1  # the batch-level choices take the key of this (never an example's) index


def example_key(key: jax.Array, step, index) -> jax.Array:
  return jax.random.fold_in(jax.random.fold_in(key, step), index)


def crop_box(key: jax.Array, height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float]):
  """(top, left, crop height, crop width) as float32, by torchvision's RandomResizedCrop sampler: up to
  10 draws of an area fraction U(scale) and a log-uniform aspect ratio in `ratio`, the first that fits
  taken; else the whole image clamped to the ratio range, centred."""
  k_area, k_ratio, k_top, k_left = jax.random.split(key, 4)
  area = height * width * jax.random.uniform(k_area, (_TRIES,), minval=scale[0], maxval=scale[1])
  aspect = jnp.exp(jax.random.uniform(k_ratio, (_TRIES,), minval=math.log(ratio[0]), maxval=math.log(ratio[1])))
  w = jnp.round(jnp.sqrt(area * aspect))
  h = jnp.round(jnp.sqrt(area / aspect))
  fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
  first = jnp.argmax(fits)
  in_ratio = jnp.clip(width / height, ratio[0], ratio[1])
  fallback_w = jnp.where(width / height > ratio[1], jnp.round(height * in_ratio), width)
  fallback_h = jnp.where(width / height < ratio[0], jnp.round(width / in_ratio), height)
  ok = fits.any()
  ch = jnp.where(ok, h[first], fallback_h).astype(jnp.float32)
  cw = jnp.where(ok, w[first], fallback_w).astype(jnp.float32)
  top = jnp.where(ok, jnp.floor(jax.random.uniform(k_top) * (height - ch + 1)), jnp.floor((height - ch) / 2))
  left = jnp.where(ok, jnp.floor(jax.random.uniform(k_left) * (width - cw + 1)), jnp.floor((width - cw) / 2))
  return top, left, ch, cw


def _axis_weights(start, length, size: int, extent: int, taps: int):
  """(first input index (size,), weights (size, taps)) of the triangle (bilinear) filter that maps
  input[start : start + length] onto `size` outputs, widened when shrinking (antialiasing) and
  renormalised over taps inside the image, as `jax.image.scale_and_translate` does."""
  scale = size / length
  radius = jnp.maximum(1.0, 1.0 / scale)  # kernel half-width in input pixels
  centre = start + (jnp.arange(size, dtype=jnp.float32) + 0.5) / scale  # in input pixel coordinates
  first = jnp.floor(centre - radius + 0.5).astype(jnp.int32)
  index = first[:, None] + jnp.arange(taps)[None, :]
  weights = jnp.maximum(0.0, 1.0 - jnp.abs(index + 0.5 - centre[:, None]) / radius)
  weights = jnp.where((index >= 0) & (index < extent), weights, 0.0)
  return index, weights / jnp.sum(weights, axis=1, keepdims=True)


def _resample_axis(image: jax.Array, start, length, size: int, axis: int, taps: int) -> jax.Array:
  index, weights = _axis_weights(start, length, size, image.shape[axis], taps)
  clipped = jnp.clip(index, 0, image.shape[axis] - 1)
  out = 0.0
  for j in range(taps):  # a fixed sum of rounded products: the same bits on any device count (a dot is not)
    tap = jnp.take(image, clipped[:, j], axis=axis)
    shape = [1] * image.ndim
    shape[axis] = size
    out = out + _rounded(tap * weights[:, j].reshape(shape), weights[0, 0])
  return out


def resized_crop(image: jax.Array, box, size: int) -> jax.Array:
  """The box (top, left, height, width) of an (H, W, C) image resampled to (size, size, C) float32 by
  bilinear interpolation, antialiased when shrinking (like PIL's resize with a box)."""
  top, left, ch, cw = box
  height, width = image.shape[:2]
  taps = lambda extent: 2 * math.ceil(max(1.0, extent / size)) + 2  # enough for the whole image shrunk
  x = _resample_axis(image.astype(jnp.float32), top, ch, size, 0, taps(height))
  return _resample_axis(x, left, cw, size, 1, taps(width))


@dataclasses.dataclass(frozen=True)
class DeviceAugment:
  """The recipe's switches (a config's `data.augment`) for one output size and class count."""
  image_size: int
  num_classes: int
  crop_scale: tuple[float, float] | None = AugmentSettings.crop_scale
  crop_ratio: tuple[float, float] = AugmentSettings.crop_ratio
  hflip: float = AugmentSettings.hflip
  vflip: float = AugmentSettings.vflip
  label_smoothing: float = AugmentSettings.label_smoothing
  mixup: float = AugmentSettings.mixup
  cutmix: float = AugmentSettings.cutmix
  switch: float = AugmentSettings.switch

  @classmethod
  def from_config(cls, aug, image_size: int, num_classes: int) -> DeviceAugment:
    return cls(image_size, num_classes, **dataclasses.asdict(AugmentSettings.from_config(aug)))

  def image(self, key: jax.Array, image: jax.Array) -> jax.Array:
    """One uint8 (H, W, C) image -> cropped, resized, flipped float32 (size, size, C) in [0, 255]."""
    k_crop, k_h, k_v = jax.random.split(key, 3)
    height, width = image.shape[:2]
    if self.crop_scale is None:
      box = (jnp.float32(0), jnp.float32(0), jnp.float32(height), jnp.float32(width))
    else:
      box = crop_box(k_crop, height, width, self.crop_scale, self.crop_ratio)
    out = resized_crop(image, box, self.image_size)
    out = jnp.where(jax.random.uniform(k_h) < self.hflip, out[:, ::-1], out)
    return jnp.where(jax.random.uniform(k_v) < self.vflip, out[::-1], out)

  def __call__(self, key: jax.Array, step, images: jax.Array, labels: jax.Array, whole=None) -> dict:
    """A global batch of uint8 images and int labels -> {"image": normalised float32 RGB, "label": soft
    targets}. `key` is the run's augmentation key, `step` the global step; `whole`, a replicated
    sharding, runs the batch-level ops on the whole batch on every device, so that they compile to the
    same code (and bits) on any device count."""
    keys = jax.vmap(lambda i: example_key(key, step, i))(jnp.arange(images.shape[0]))
    x = jax.vmap(self.image)(keys, images)
    if whole is not None:
      x, labels = jax.lax.with_sharding_constraint((x, labels), whole)
    x, targets = self.mix(example_key(key, step, BATCH_INDEX), x, labels)
    return {"image": to_model_input(x), "label": targets}

  def mix(self, key: jax.Array, images: jax.Array, labels: jax.Array):
    """Label-smoothed targets, then mixup or cutmix of the batch with itself reversed (one of them per
    batch, cutmix with probability `switch` when both are on), the targets mixed by lambda or by the
    pasted area. Each target is one of four values chosen by selects (exact, unlike a blend)."""
    smooth = self.label_smoothing / self.num_classes
    on = jax.nn.one_hot(labels, self.num_classes, dtype=bool)
    if not self.mixup and not self.cutmix:
      return images, jnp.where(on, 1 - self.label_smoothing + smooth, smooth)
    k_pick, k_lam, k_cy, k_cx = jax.random.split(key, 4)
    use_cutmix = self.cutmix > 0 and (not self.mixup or jax.random.uniform(k_pick) < self.switch)
    alpha = jnp.where(use_cutmix, self.cutmix or 1.0, self.mixup or 1.0)
    lam = jax.random.beta(k_lam, alpha, alpha)
    h, w = images.shape[1:3]
    cut_h, cut_w = jnp.floor(h * jnp.sqrt(1 - lam)), jnp.floor(w * jnp.sqrt(1 - lam))
    cy, cx = jax.random.randint(k_cy, (), 0, h), jax.random.randint(k_cx, (), 0, w)
    y0, y1 = jnp.clip(cy - cut_h // 2, 0, h), jnp.clip(cy + cut_h // 2, 0, h)
    x0, x1 = jnp.clip(cx - cut_w // 2, 0, w), jnp.clip(cx + cut_w // 2, 0, w)
    rows, cols = jnp.arange(h)[:, None], jnp.arange(w)[None, :]
    inside = ((rows >= y0) & (rows < y1) & (cols >= x0) & (cols < x1))[None, :, :, None]
    cut_lam = 1 - (y1 - y0) * (x1 - x0) / (h * w)
    other = images[::-1]
    blend = _rounded(lam * images, lam) + _rounded((1 - lam) * other, lam)
    mixed = jnp.where(use_cutmix, jnp.where(inside, other, images), blend)
    lam = jnp.where(use_cutmix, cut_lam, lam)
    partner = on[::-1]
    keep = 1 - self.label_smoothing
    targets = jnp.where(on & partner, keep + smooth,
                        jnp.where(on, keep * lam + smooth, jnp.where(partner, keep * (1 - lam) + smooth, smooth)))
    return mixed, targets


def _rounded(x: jax.Array, nonnegative: jax.Array) -> jax.Array:
  """x as it is, kept from being fused into a later sum: XLA:CPU contracts a product and a sum into one
  multiply-add (one rounding, not two) for some shapes of a fusion and not for others, so the batch's
  split over devices would move the last bit. XOR-ing the bits with a zero the compiler cannot fold (the
  sign bit of a runtime value known to be >= 0) stops the contraction."""
  zero = jax.lax.shift_right_logical(jax.lax.bitcast_convert_type(nonnegative, jnp.int32), 31)
  return jax.lax.bitcast_convert_type(jax.lax.bitcast_convert_type(x, jnp.int32) ^ zero, jnp.float32)


def to_model_input(images: jax.Array) -> jax.Array:
  """[0, 255] float images with any channel count -> normalised float32 RGB (gray repeated)."""
  x = (images / 255.0 - MEAN) / STD
  return jnp.repeat(x, 3, axis=-1) if x.shape[-1] == 1 else x


def evaluation_view(images: jax.Array, size: int) -> jax.Array:
  """uint8 (B, H, W, C) -> the whole image resized to (size, size), normalised float32 RGB."""
  full = (jnp.float32(0), jnp.float32(0), jnp.float32(images.shape[1]), jnp.float32(images.shape[2]))
  return to_model_input(jax.vmap(lambda im: resized_crop(im, full, size))(images))
