"""The SR task on fractalpre's trainer (`python -m superres.train` is its command line): the pretraining
trainer's mesh, sharded update step, optimizer, checkpoint/resume, metrics and progress
(`fractalpre.training.trainer.build` / `fit`) with an L1 loss on LR/HR patch pairs, evaluated by PSNR/SSIM
on the Y channel of held-out images. The workdir's config.json lets `superres upscale --checkpoint DIR` rebuild
the model.
"""
from __future__ import annotations

import os

import jax.numpy as jnp
import ml_collections

from fractalpre import util
from fractalpre.data import device_pipeline
from fractalpre.training import trainer
from superres.sr import data, evaluate, models, upscale

# SR evaluation settings that change neither the train state nor the data: a resumed run may change them.
PACING = ("eval.tile", "eval.overlap")


def l1_loss(outputs, batch):
  """Mean absolute error on RGB in [0, 1] (EDSR's loss), and the batch's RGB PSNR as a metric."""
  error = outputs - batch["target"]
  mse = jnp.mean(error ** 2)
  return jnp.mean(jnp.abs(error)), {"train_psnr_rgb": -10.0 * jnp.log10(jnp.maximum(mse, 1e-10))}


def held_out_evaluation(config, model):
  """`evaluate(state) -> {psnr, ssim, bicubic_psnr, bicubic_ssim}` on the config's evaluation images."""
  images = data.get_source(config.eval)
  upscaler = upscale.Upscaler(model, None, config.scale, config.eval.get("tile", 128), config.eval.get("overlap", 16))

  def evaluate_fn(state):
    upscaler.params = state["params"]
    return evaluate.evaluate_images(upscaler, [images[i] for i in range(len(images))], config.scale)

  return evaluate_fn


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | os.PathLike, progress: bool = True,
                       restart: bool = False) -> dict:
  """Trains (resuming from the workdir's newest good checkpoint); returns the final metrics, with
  eval_psnr / eval_ssim (and the bicubic baseline's) when `eval_every` is set."""
  mesh = trainer.make_mesh()
  trainer.check_config(config)
  with util.usage_errors():  # reading the config: a missing folder or manifest, a bad kind, is one line
    source = data.get_source(config.data)
    train_iter = data.train_iterator(source, config.data, config.scale, config.lr_patch, config.batch_size,
                                     config.seed)
    model = models.from_config(config)
  trainer.check_model(config, model, (1, config.lr_patch, config.lr_patch, 3))
  state, _, train_step = trainer.build(config, mesh, model, (1, config.lr_patch, config.lr_patch, 3), l1_loss)
  evaluate_fn = held_out_evaluation(config, model) if config.get("eval_every") else None
  return trainer.fit(config, workdir, state, train_step, device_pipeline.HostBatches(train_iter, mesh), evaluate_fn,
                     progress, restart, harmless=PACING)

