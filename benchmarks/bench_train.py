"""Train-step throughput and on-the-fly input-pipeline rate, and their ratio (the pipeline should
deliver at least 3x what the step consumes, so generation never stalls training).

  python benchmarks/bench_train.py [--steps 5] [--vit_batch 32]

Rows: ViT-Ti/16 at 224 px (reference recipe: 1p-frac renders at 224 px, 100k points) and the runlocal
model (vit_cpu at 32 px). Step time is the median over `--steps` steps after compilation, on the
default JAX devices; the pipeline rate is measured alone with its configured worker threads.
"""
import argparse
import statistics
import time

import jax
import ml_collections
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from fractalpre import input_pipeline, train
from machine import describe_jax


def median_step_seconds(config, steps, num_classes=None):
  """Median wall time of the trainer's step on random data, after compilation."""
  mesh = train.make_mesh()
  n = num_classes or config.data.num_classes
  state, _, step = train.build(config, mesh, train.model_from_config(config, n),
                               (1, config.image_size, config.image_size, 3))
  b, s = config.batch_size, config.image_size
  batch = {"image": np.random.default_rng(0).normal(size=(b, s, s, 3)).astype(np.float32),
           "label": np.full((b, n), 1.0 / n, np.float32)}
  return median_seconds(step, state, batch, NamedSharding(mesh, P("data")), steps)


def median_seconds(step, state, batch, sharding, steps):
  """Median wall time of `state, metrics = step(state, batch)` over `steps` calls, after a first one."""
  batch = {k: jax.device_put(v, sharding) for k, v in batch.items()}
  state, m = step(state, batch)
  jax.block_until_ready(m)
  times = []
  for _ in range(steps):
    t = time.perf_counter()
    state, m = step(state, batch)
    jax.block_until_ready(m)
    times.append(time.perf_counter() - t)
  return statistics.median(times)


def pipeline_rate(config, batches):
  source = input_pipeline.get_source(config.data)
  data = ml_collections.ConfigDict({**config.data.to_dict(), "image_size": config.image_size})
  it = input_pipeline.train_iterator(source, data, config.batch_size, 0)
  next(it)
  t = time.perf_counter()
  for _ in range(batches):
    next(it)
  return batches * config.batch_size / (time.perf_counter() - t)


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--steps", type=int, default=5)
  parser.add_argument("--vit_batch", type=int, default=32)
  args = parser.parse_args()
  print(f"# bench_train on {describe_jax()}")
  print("| model | image | batch | step img/s | pipeline img/s (workers) | pipeline / step |")
  print("|---|---:|---:|---:|---:|---:|")
  full = train.load_config("configs/pretrain_1pfrac_vit.py")
  full.batch_size = args.vit_batch
  full.data.workers = jax.local_devices()[0].platform == "cpu" and 2 or full.data.workers
  local = train.load_config("configs/pretrain_1pfrac_vit.py:runlocal")
  for name, config in (("ViT-Ti/16", full), ("vit_cpu (runlocal)", local)):
    step = config.batch_size / median_step_seconds(config, args.steps)
    pipe = pipeline_rate(config, max(2, 256 // config.batch_size))
    print(f"| {name} | {config.image_size} | {config.batch_size} | {step:.1f} | {pipe:.0f} ({config.data.workers}) "
          f"| {pipe / step:.1f}x |", flush=True)


if __name__ == "__main__":
  main()
