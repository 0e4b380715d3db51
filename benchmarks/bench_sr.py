"""SR training throughput (patches/s) and `superres upscale` inference speed (output megapixels/s).

  python benchmarks/bench_sr.py [--steps 5] [--runs 5]

Training: EDSR-baseline x4 at its paper's setting (48 px LR patches, batch 16, L1, Adam) and the runlocal
size, median step time after compilation on random data, plus the on-the-fly pair pipeline's rate alone
(bundled photos, its configured worker threads). Inference: a 256 x 256 LR image upscaled tile by tile
(128 px tiles, 16 px overlap, 8 tiles per call), median of --runs after a warm-up run.
"""
import statistics
import sys
import time

import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from bench_train import timed_steps
from fractalpre import util
from fractalpre.training import trainer
from fractalpre.studies.machine import describe_jax
from fractalpre.training import config_files
from superres.sr import data, models, upscale
from superres.sr import trainer as sr_trainer


def training_rate(config, steps):
  mesh = trainer.make_mesh()
  model = models.from_config(config)
  p, s = config.lr_patch, config.scale
  state, _, step = trainer.build(config, mesh, model, (1, p, p, 3), sr_trainer.l1_loss)
  rng = np.random.default_rng(0)
  batch = {"image": rng.random((config.batch_size, p, p, 3), np.float32),
           "target": rng.random((config.batch_size, p * s, p * s, 3), np.float32)}
  batch = {k: jax.device_put(v, NamedSharding(mesh, P("data"))) for k, v in batch.items()}
  return config.batch_size / timed_steps(step, state, batch, steps)[0]


def pipeline_rate(config, batches):
  it = data.train_iterator(data.get_source(config.data), config.data, config.scale, config.lr_patch,
                           config.batch_size, 0)
  next(it)
  t = time.perf_counter()
  for _ in range(batches):
    next(it)
  return batches * config.batch_size / (time.perf_counter() - t)


def inference_rate(config, runs):
  model = models.from_config(config)
  params = model.init(jax.random.key(0), np.zeros((1, 16, 16, 3), np.float32))["params"]
  upscaler = upscale.Upscaler(model, params, config.scale, tile=128, overlap=16, batch=8)
  lr = np.random.default_rng(0).integers(0, 256, (256, 256, 3), np.uint8)
  upscaler(lr)
  times = []
  for _ in range(runs):
    t = time.perf_counter()
    out = upscaler(lr)
    times.append(time.perf_counter() - t)
  return out.shape[0] * out.shape[1] / 1e6 / statistics.median(times)


def main():
  parser = util.ArgumentParser(description=__doc__)
  parser.add_argument("--steps", type=int, default=5, help="timed steps per run")
  parser.add_argument("--runs", type=int, default=5, help="timed runs (the median is reported)")
  args = parser.parse_args()
  print(f"# bench_sr on {describe_jax()}")
  print("| model | scale | LR patch | batch | train patches/s | pipeline patches/s (workers) | upscale MP/s |")
  print("|---|---:|---:|---:|---:|---:|---:|")
  for name, arg in (("EDSR-baseline", "scale=4"), ("EDSR runlocal (32 x 4)", "runlocal"),
                    ("RCAN-lite", "scale=4")):
    config = config_files.load_config(f"configs/{'sr_rcan_lite' if name.startswith('RCAN') else 'sr_edsr'}.py:{arg}")
    config.data.workers = 2 if jax.devices()[0].platform == "cpu" else config.data.workers
    rate = training_rate(config, args.steps)
    pipe = pipeline_rate(config, 8)
    mps = inference_rate(config, args.runs)
    print(f"| {name} | x{config.scale} | {config.lr_patch} | {config.batch_size} | {rate:.1f} | "
          f"{pipe:.0f} ({config.data.workers}) | {mps:.3f} |", flush=True)


if __name__ == "__main__":
  with util.one_line_exits("bench_sr.py"):
    sys.exit(main())
