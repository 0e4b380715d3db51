"""The training step with the device-side input pipeline against the same step on a constant batch,
and the host CPU time each training image costs on the device path and on the host (grain) path.

  python benchmarks/bench_train.py [--steps 5] [--vit-batch 32]

Rows: ViT-Ti/16 at 224 px (1p-frac renders at 224 px, 100k points, the full recipe) and the runlocal
model (vit_cpu at 32 px). Step times are medians over `--steps` steps after compilation, on the default
JAX devices. `augment share` is 1 - constant-batch time / device-path time. Host CPU per image is the
process CPU time spent producing the step's inputs (the device path hands the step the resident arrays;
the host path renders, crops, flips and mixes in grain's worker threads). `ahead` counts the steps of 8 that
the loop had dispatched while the first was still running (8: the host never waited).
"""
import statistics
import sys
import time

import jax
import ml_collections
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from fractalpre import util
from fractalpre.data import augment, device_pipeline, host_pipeline
from fractalpre.data import registry
from fractalpre.training import classification, trainer
from fractalpre.training import config_files
from fractalpre.studies.machine import describe_jax


def random_batch_step(config, num_classes=None):
  """The trainer's step for `config`, its first state and a random batch on the devices."""
  mesh = trainer.make_mesh()
  n = num_classes or config.data.num_classes
  state, _, step = trainer.build(config, mesh, classification.model_from_config(config, n),
                                 (1, config.image_size, config.image_size, 3), classification.classification_loss)
  b, s = config.batch_size, config.image_size
  batch = {"image": np.random.default_rng(0).normal(size=(b, s, s, 3)).astype(np.float32),
           "label": np.full((b, n), 1.0 / n, np.float32)}
  sharding = NamedSharding(mesh, P("data"))
  return step, state, {k: jax.device_put(v, sharding) for k, v in batch.items()}


def median_step_seconds(config, steps, num_classes=None):
  """Median wall time of the trainer's step on random data, after compilation."""
  return timed_steps(*random_batch_step(config, num_classes), steps)[0]


def timed_steps(step, state, batch, steps):
  """The median wall time of `steps` calls of `state, metrics = step(state, batch)` after a first one, and
  the last state (the step donates the state it is given, so a caller that times again needs it)."""
  state, m = step(state, batch)
  jax.block_until_ready(m)
  times = []
  for _ in range(steps):
    t = time.perf_counter()
    state, m = step(state, batch)
    jax.block_until_ready(m)
    times.append(time.perf_counter() - t)
  return statistics.median(times), state


def step_times(config, steps):
  """Median seconds of the step on a constant batch and of the step on the device path, timed in
  alternation (this VM's speed drifts), the device path's host CPU seconds per image, and the steps the
  loop had dispatched when the first of 8 finished."""
  mesh = trainer.make_mesh()
  source = registry.get_source(config.data)
  model = classification.model_from_config(config, source.num_classes)
  shape = (1, config.image_size, config.image_size, 3)
  const_state, _, const_step = trainer.build(config, mesh, model, shape, classification.classification_loss)
  b, s, n = config.batch_size, config.image_size, source.num_classes
  batch = {"image": np.random.default_rng(0).normal(size=(b, s, s, 3)).astype(np.float32),
           "label": np.full((b, n), 1.0 / n, np.float32)}
  batch = {k: jax.device_put(v, NamedSharding(mesh, P("data"))) for k, v in batch.items()}
  data = device_pipeline.make(source, mesh, config.batch_size, config.seed, config.data)
  aug = augment.DeviceAugment.from_config(config.data.augment, config.image_size, n)
  key, whole = classification.augment_key(config.seed), NamedSharding(mesh, P())
  input_fn = lambda key, step, inputs: aug(key, step, *data.batch(key, step, inputs), whole=whole)
  state, _, step_fn = trainer.build(config, mesh, model, shape, classification.classification_loss)
  step_fn = trainer.DeviceInputStep(step_fn, input_fn, NamedSharding(mesh, P("data")), key)
  const_state, m = const_step(const_state, batch)
  state, m = step_fn(state, data.host_batch())
  jax.block_until_ready(m)
  constant, device, cpu = [], [], 0.0
  for _ in range(steps):
    t = time.perf_counter()
    const_state, m = const_step(const_state, batch)
    jax.block_until_ready(m)
    constant.append(time.perf_counter() - t)
    t, c = time.perf_counter(), time.process_time()
    inputs = data.host_batch()
    cpu += time.process_time() - c
    state, m = step_fn(state, inputs)
    jax.block_until_ready(m)
    device.append(time.perf_counter() - t)
  first, ahead = None, 0
  for _ in range(8):
    state, m = step_fn(state, data.host_batch())
    first = m["loss"] if first is None else first
    ahead += not first.is_ready()
  jax.block_until_ready(m)
  return statistics.median(constant), statistics.median(device), cpu / (steps * config.batch_size), ahead


def host_cpu_per_image(config, batches):
  """Process CPU seconds per image of the host path's grain pipeline (rendering + augmentation)."""
  source = registry.get_source(config.data)
  data = ml_collections.ConfigDict({**config.data.to_dict(), "image_size": config.image_size})
  it = host_pipeline.train_iterator(source, data, config.batch_size, 0)
  next(it)
  c = time.process_time()
  for _ in range(batches):
    next(it)
  return (time.process_time() - c) / (batches * config.batch_size)


def main():
  parser = util.ArgumentParser(description=__doc__)
  parser.add_argument("--steps", type=int, default=5, help="timed steps")
  parser.add_argument("--vit-batch", type=int, default=32, help="batch of the ViT-Ti/16 rows")
  args = parser.parse_args()
  print(f"# bench_train on {describe_jax()}")
  print("| model | image | batch | constant-batch img/s | device-path img/s | augment share | host CPU us/img "
        "device path | host CPU us/img host path | host / device | ahead |")
  print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
  full = config_files.load_config("configs/pretrain_1pfrac_vit.py")
  full.batch_size = args.vit_batch
  full.data.workers = jax.local_devices()[0].platform == "cpu" and 2 or full.data.workers
  local = config_files.load_config("configs/pretrain_1pfrac_vit.py:runlocal")
  for name, config in (("ViT-Ti/16", full), ("vit_cpu (runlocal)", local)):
    constant, device, device_cpu, ahead = step_times(config, args.steps)
    host_cpu = host_cpu_per_image(config, max(2, 256 // config.batch_size))
    print(f"| {name} | {config.image_size} | {config.batch_size} | {config.batch_size / constant:.1f} | "
          f"{config.batch_size / device:.1f} | {1 - constant / device:.1%} | {1e6 * device_cpu:.2f} | "
          f"{1e6 * host_cpu:.0f} | {host_cpu / max(device_cpu, 1e-9):.0f}x | {ahead} |", flush=True)


if __name__ == "__main__":
  with util.one_line_exits("bench_train.py"):
    sys.exit(main())
