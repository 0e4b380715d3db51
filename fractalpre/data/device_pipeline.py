"""Training data for device-side augmentation: a source that fits lives on the devices, others stream.

A resident source is rendered once and copied to every device as uint8 with its own channel count (a
1,000-class 1p-frac at 224 px is 50 MB); each step gathers its global batch on device from an epoch
permutation drawn on device, so the host does no per-example work at all. A source over the byte budget
streams uint8 images at their stored size from grain, and the device does the rest. Both hand the
step its inputs (`host_batch()`, already on the devices) and give `batch(key, step, inputs) -> (uint8
images, labels)` inside the jitted step.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from fractalpre import util

RENDER_CHUNK = 256


def as_uint8_hwc(image, shape: tuple | None = None) -> np.ndarray:
  """(H, W, C) uint8; with `shape`, refuses an image of another shape (batches on the device have one)."""
  image = np.asarray(image)
  if image.dtype != np.uint8:
    raise ValueError(f"device-side augmentation takes uint8 images, got {image.dtype}")
  image = image[..., None] if image.ndim == 2 else image
  if shape is not None and image.shape != shape:
    raise util.UsageError(f"device-side augmentation needs images of one shape: found {image.shape}, the first "
                            f"image is {shape}; set data.augment_on=host (the host path resizes each image)")
  return image


def source_bytes(source) -> int:
  """Bytes of the whole source as uint8, from its first image (every image of a source has one shape)."""
  return len(source) * as_uint8_hwc(source[0][0]).nbytes


def render_all(source) -> tuple[np.ndarray, np.ndarray]:
  """(uint8 (N, H, W, C) images, int32 (N,) labels) of a whole source, rendered in batches when it can."""
  images, labels, shape = [], [], as_uint8_hwc(source[0][0]).shape
  for first in range(0, len(source), RENDER_CHUNK):
    ids = list(range(first, min(first + RENDER_CHUNK, len(source))))
    if hasattr(source, "batch"):
      batch, batch_labels = source.batch(ids)
    else:
      pairs = [source[i] for i in ids]
      batch, batch_labels = [p[0] for p in pairs], [p[1] for p in pairs]
    images.append(np.stack([as_uint8_hwc(im, shape) for im in batch]))
    labels.append(np.asarray(batch_labels, np.int32))
  return np.concatenate(images), np.concatenate(labels)


class Resident:
  """The whole source on every device; `batch(key, step)` gathers step's global batch in the order of
  per-epoch permutations drawn from `key` (a batch may span epochs, as with tiny few-label sets)."""

  def __init__(self, source, mesh: jax.sharding.Mesh, global_batch: int):
    images, labels = render_all(source)
    replicated = NamedSharding(mesh, P())
    self.images, self.labels = jax.device_put(images, replicated), jax.device_put(labels, replicated)
    self.size, self.global_batch = len(labels), global_batch
    self.sharding = NamedSharding(mesh, P("data"))
    self.epochs = global_batch // self.size + 2  # epochs one batch can touch

  def indices(self, key: jax.Array, step) -> jax.Array:
    position = step * self.global_batch + jnp.arange(self.global_batch)
    epoch, offset = position // self.size, position % self.size
    first = (step * self.global_batch) // self.size
    perms = jax.vmap(lambda e: jax.random.permutation(jax.random.fold_in(key, e), self.size))(
        first + jnp.arange(self.epochs))
    return perms[epoch - first, offset]

  def batch(self, key: jax.Array, step, inputs) -> tuple[jax.Array, jax.Array]:
    idx = jax.lax.with_sharding_constraint(self.indices(key, step), self.sharding)
    return inputs["images"][idx], inputs["labels"][idx]

  def host_batch(self) -> dict:
    """The resident arrays themselves: nothing crosses from the host per step."""
    return {"images": self.images, "labels": self.labels}

  def get_state(self) -> dict:
    return {}

  def set_state(self, state: dict) -> None:
    del state


class Streamed:
  """uint8 images at their stored size from grain (shuffled every epoch, this host's slice of each
  global batch); the host only renders or decodes."""

  def __init__(self, source, mesh: jax.sharding.Mesh, global_batch: int, seed: int, workers: int = 4,
               prefetch: int = 4):
    from fractalpre.data import host_pipeline
    self.sharding = NamedSharding(mesh, P("data"))
    shape = as_uint8_hwc(source[0][0]).shape
    self.iterator = host_pipeline.shuffled_batches(
        source, seed, global_batch, lambda example, rng: (as_uint8_hwc(example[0], shape), example[1]),
        host_pipeline.stack_examples, None, workers, prefetch)

  def host_batch(self):
    images, labels = next(self.iterator)
    return {"image": jax.make_array_from_process_local_data(self.sharding, images),
            "label": jax.make_array_from_process_local_data(self.sharding, labels.astype(np.int32))}

  def batch(self, key, step, inputs):
    del key, step
    return inputs["image"], inputs["label"]

  def get_state(self) -> dict:
    return grain_position(self.iterator)

  def set_state(self, state: dict) -> None:
    set_grain_position(self.iterator, state)


def make(source, mesh, global_batch: int, seed: int, cfg) -> Resident | Streamed:
  """Resident when the source fits `cfg.resident_budget_mb` (default 2048) on each device, else streamed."""
  budget = cfg.get("resident_budget_mb", 2048) * 2**20
  if source_bytes(source) <= budget:
    return Resident(source, mesh, global_batch)
  return Streamed(source, mesh, global_batch, seed, cfg.get("workers", 4), cfg.get("prefetch", 4))


class HostBatches:
  """Batches finished on the host (a checkpointable grain iterator of this host's numpy dicts, such as
  the host-side augmentation path or the SR pairs), placed on the devices as the step's inputs."""

  def __init__(self, iterator, mesh: jax.sharding.Mesh):
    self.iterator, self.sharding = iterator, NamedSharding(mesh, P("data"))

  def host_batch(self) -> dict:
    return {k: jax.make_array_from_process_local_data(self.sharding, v) for k, v in next(self.iterator).items()}

  def get_state(self) -> dict:
    return grain_position(self.iterator)

  def set_state(self, state: dict) -> None:
    set_grain_position(self.iterator, state)


def grain_position(iterator) -> dict:
  """A grain iterator's position, with the process count that drew it: each process reads its own slice
  of every global batch, so the position means something only for the same number of processes."""
  return {"processes": jax.process_count(), "iterator": iterator.get_state()}


def set_grain_position(iterator, state: dict) -> None:
  """Puts a grain iterator at a saved position; one written by another number of processes is refused in
  one line naming both (checkpoints written before the count was recorded hold the iterator's state alone)."""
  if "iterator" not in state:
    return iterator.set_state(state)
  if state["processes"] != jax.process_count():
    raise util.UsageError(f"this checkpoint's input position was saved by {state['processes']} processes and this "
                          f"run has {jax.process_count()}: the streamed input (grain) cannot move to another "
                          f"process count; resume with {state['processes']} processes, or use --restart")
  iterator.set_state(state["iterator"])

