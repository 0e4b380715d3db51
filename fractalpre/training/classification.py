"""Image classification on the generic trainer: the model from a config, the loss, the input paths
(device-side augmentation by default, grain on the host as an option) and evaluation (top-1, NLL, ECE;
Bayesian model averaging over IVON's weight samples)."""
from __future__ import annotations

import dataclasses
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from fractalpre import models, optim, util
from fractalpre.data import augment, device_pipeline, host_pipeline, registry
from fractalpre.data.preprocessing import AugmentSettings
from fractalpre.models import get_model, vit
from fractalpre.training import classification_scores, linear_probe, trainer


def model_from_config(config, num_classes: int):
  """The config's model; a ViT whose patch size does not divide image_size is refused (its patch embedding
  would silently drop the last rows and columns)."""
  kwargs = {k: v for k, v in config.model.items() if k != "name"}
  if config.model.name in models.VIT and config.get("image_size"):
    patch = kwargs.get("patch", vit.VARIANTS[models.VIT[config.model.name]]["patch"])
    if config.image_size % patch:
      raise ValueError(f"image_size {config.image_size} is not a multiple of {config.model.name}'s patch size "
                       f"{patch} (the last {config.image_size % patch} pixel rows and columns would never be seen); "
                       f"use {config.image_size - config.image_size % patch} or "
                       f"{config.image_size - config.image_size % patch + patch}")
  if trainer.mup_base_width(config):
    kwargs["mup_base_width"] = trainer.mup_base_width(config)
  return get_model(config.model.name, num_classes, config.get("precision", "fp32"), **kwargs)


def soft_cross_entropy(logits: jnp.ndarray, targets: jnp.ndarray) -> jnp.ndarray:
  """Mean cross-entropy of logits (B, L) against probability targets (B, L). 1p-frac's LPCE (locally
  perturbed cross-entropy) is this, as in its released training code: the L-way cross-entropy over the
  perturbation classes with soft (smoothed, mixed) targets."""
  return optax.softmax_cross_entropy(logits.astype(jnp.float32), targets).mean()


def classification_loss(logits, batch):
  """Soft-target cross-entropy, plus the batch's top-1 accuracy as a metric."""
  accuracy = jnp.mean(jnp.argmax(logits, -1) == jnp.argmax(batch["label"], -1))
  return soft_cross_entropy(logits, batch["label"]), {"train_accuracy": accuracy}


def make_eval_fn(model):
  def logits_fn(state, images):
    return model.apply(trainer.model_variables(state), images, train=False)
  return logits_fn


def evaluate_source(logits_fn, states, source, image_size, global_batch, batch_sharding) -> dict:
  """top-1 / NLL / ECE of one train state, or of the average of several states' predicted probabilities
  (Bayesian model averaging over weight samples) when `states` is a list."""
  states = states if isinstance(states, list) else [states]
  all_logits, all_labels = [], []
  for batch in host_pipeline.eval_batches(source, image_size, global_batch):
    images = jax.device_put(batch["image"], batch_sharding)  # every host built the same whole batch
    log_probs = [jax.nn.log_softmax(logits_fn(s, images)) for s in states]
    logits = np.asarray(jax.device_get(jax.nn.logsumexp(jnp.stack(log_probs), axis=0) - np.log(len(states))))
    all_logits.append(logits[batch["mask"]])
    all_labels.append(batch["label"][batch["mask"]])
  return classification_scores.classification_metrics(np.concatenate(all_logits), np.concatenate(all_labels))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | os.PathLike, progress: bool = True,
                       restart: bool = False) -> dict:
  """Trains a classifier (resuming from the workdir's newest good checkpoint); returns the final metrics.
  With `linear_probe`, probes the features of `init_from` instead (fractalpre.training.linear_probe)."""
  if config.get("linear_probe"):
    return linear_probe.probe_and_evaluate(config, workdir, restart)
  mesh = trainer.make_mesh()
  batch_sharding = NamedSharding(mesh, P("data"))
  trainer.check_config(config)

  with util.usage_errors():  # reading the config: a ValueError here is a bad setting
    source = registry.get_source(config.data, "train")
    if config.optim.optimizer == "ivon" and config.optim.get("ess") is None:  # not set: the training set size
      config = ml_collections.ConfigDict(config.to_dict())
      config.optim.ess = float(len(source))
    eval_source = registry.get_source(config.data, "test") if config.get("eval_every") else None
    model = model_from_config(config, source.num_classes)
    on = augment_on(config.data)
    settings = AugmentSettings.from_config(config.data.augment)
  trainer.check_model(config, model, (1, config.image_size, config.image_size, 3))
  done = trainer.finished_result(config, workdir, restart)
  if done is not None:
    return done
  if on == "device":
    data = device_pipeline.make(source, mesh, config.batch_size, config.seed, config.data)
    augment_batch = augment.DeviceAugment(config.image_size, source.num_classes, **dataclasses.asdict(settings))
    key = augment_key(config.seed)

    def input_fn(key, step, inputs):
      images, labels = data.batch(key, step, inputs)
      return augment_batch(key, step, images, labels, whole=NamedSharding(mesh, P()))
  else:
    data_cfg = ml_collections.ConfigDict({**config.data.to_dict(), "image_size": config.image_size})
    data = device_pipeline.HostBatches(
        host_pipeline.train_iterator(source, data_cfg, config.batch_size, config.seed), mesh)
    input_fn = None
  state, shardings, train_step = trainer.build(config, mesh, model, (1, config.image_size, config.image_size, 3),
                                               classification_loss)
  if input_fn is not None:
    train_step = trainer.DeviceInputStep(train_step, input_fn, batch_sharding, key)
  logits_fn = jax.jit(make_eval_fn(model), in_shardings=(shardings, batch_sharding),
                      out_shardings=NamedSharding(mesh, P()))

  def evaluate_state(state):
    scores = evaluate_source(logits_fn, state, eval_source, config.image_size, config.batch_size, batch_sharding)
    sample, n = optim.sampler(config.optim), config.get("eval_bma_samples", 0)
    if sample is not None and n:
      keys = jax.random.split(jax.random.fold_in(jax.random.key(config.seed), 2**31 - 1), n)
      samples = [{**state, "params": sample(k, state["params"], state["opt_state"])[0]} for k in keys]
      bma = evaluate_source(logits_fn, samples, eval_source, config.image_size, config.batch_size, batch_sharding)
      scores.update({f"bma_{k}": v for k, v in bma.items()})
    return scores

  return trainer.fit(config, workdir, state, train_step, data, evaluate_state if eval_source is not None else None, progress,
                     restart, samples=lambda: host_pipeline.sample_grid(source, config.image_size))


AUGMENT_ON = ("device", "host")


def augment_on(data_cfg) -> str:
  """Where a data config's augmentation runs: `data.augment_on`, by default on the device, except for
  TFDS and image-folder sources, whose images need not share one size (their host path resizes them)."""
  on = data_cfg.get("augment_on") or ("host" if data_cfg.kind in ("tfds", "folder") else "device")
  if on not in AUGMENT_ON:
    raise ValueError(f"data.augment_on must be one of {AUGMENT_ON}, got {on!r}")
  return on


def augment_key(seed: int) -> jax.Array:
  """The device pipeline's key: apart from the model's init and dropout keys of the same seed."""
  return jax.random.fold_in(jax.random.key(seed), 0x6175)
