"""One command for a GPU: training throughput of ViT-Ti/16, S/16 and B/16 in bf16 with the full 1p-frac recipe
on the device path, against the same step on a constant batch, the model FLOP utilisation, and the
renderer's rate on the host. Under 8 minutes on one GPU.

  python benchmarks/gpu_check.py [--steps 10] [--batch 256]
  python benchmarks/gpu_check.py --smoke        # CPU: the tiny runlocal ViT, 2 steps (what the tests run)

FLOPs per image are XLA's own count for the compiled train step (its cost analysis: forward, backward and
the optimizer, divided by the batch), not a formula. MFU = images/s x FLOPs per image / the device's dense
bf16 peak (from the table below; `n/a` for devices not in it). Step times are medians after compilation;
the device path's steps alternate with the constant-batch steps (bench_train.step_times).
"""
import statistics
import sys
import time

import jax
import numba
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from bench_train import step_times
from fractalpre import fractals, util
from fractalpre.training import classification, config_files, trainer
from fractalpre.studies.machine import describe_jax

# Dense bf16 peak FLOP/s by JAX device_kind (vendor datasheets, without sparsity).
PEAK_BF16 = {"NVIDIA H100 80GB HBM3": 989e12, "NVIDIA H100 PCIe": 756e12, "NVIDIA H200": 989e12,
             "NVIDIA A100-SXM4-80GB": 312e12, "NVIDIA A100-SXM4-40GB": 312e12, "NVIDIA A100 80GB PCIe": 312e12}
MODELS = (("ViT-Ti/16", "vit_ti16"), ("ViT-S/16", "vit_s16"), ("ViT-B/16", "vit_b16"))


def flops_per_image(config) -> float:
  """XLA's FLOP count of one compiled train step, per image."""
  mesh = trainer.make_mesh()
  n = config.data.num_classes
  state, _, step = trainer.build(config, mesh, classification.model_from_config(config, n),
                                 (1, config.image_size, config.image_size, 3), classification.classification_loss)
  b, s = config.batch_size, config.image_size
  batch = {"image": jax.device_put(np.zeros((b, s, s, 3), np.float32), NamedSharding(mesh, P("data"))),
           "label": jax.device_put(np.zeros((b, n), np.float32), NamedSharding(mesh, P("data")))}
  cost = step.lower(state, batch).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost.get("flops", float("nan"))) / b


def render_rate(images: int, size: int, points: int) -> float:
  """1p-frac images/s rendered on the host with all cores (median of 3)."""
  source = fractals.OnePFrac(num_classes=max(images, 2), size=size, points=points)
  source.batch(range(2))  # compile the kernels
  times = []
  for _ in range(3):
    start = time.perf_counter()
    source.batch(range(images))
    times.append(time.perf_counter() - start)
  return images / statistics.median(times)


def main(argv=None):
  parser = util.ArgumentParser(description=__doc__)
  parser.add_argument("--steps", type=int, default=10, help="timed steps per model")
  parser.add_argument("--batch", type=int, default=256, help="global batch of every model")
  parser.add_argument("--smoke", action="store_true", help="CPU smoke run: the runlocal ViT, 2 steps")
  args = parser.parse_args(argv)
  util.require_positive(parser, args, "steps", "batch")
  device = jax.devices()[0]
  print(f"# gpu_check on {describe_jax()}")
  print("| model | image | batch | precision | constant-batch img/s | device-path img/s | augment share | "
        "GFLOP/img (XLA) | MFU |")
  print("|---|---:|---:|---|---:|---:|---:|---:|---:|")
  if args.smoke:
    runs = [("vit_cpu (smoke)", config_files.load_config("pretrain_1pfrac_vit:runlocal"))]
    runs[0][1].batch_size, steps = 16, 2
  else:
    runs, steps = [], args.steps
    for label, name in MODELS:
      config = config_files.load_config("pretrain_1pfrac_vit")
      config.model.name, config.batch_size = name, args.batch
      runs.append((label, config))
  for label, config in runs:
    config.precision = "bf16"
    constant, path, _, _ = step_times(config, steps)
    flops = flops_per_image(config)
    peak = PEAK_BF16.get(device.device_kind)
    mfu = f"{config.batch_size / path * flops / peak:.1%}" if peak else "n/a"
    print(f"| {label} | {config.image_size} | {config.batch_size} | bf16 | {config.batch_size / constant:.1f} | "
          f"{config.batch_size / path:.1f} | {1 - constant / path:.1%} | {flops / 1e9:.2f} | {mfu} |", flush=True)
  size, points, images = (64, 5_000, 16) if args.smoke else (224, 100_000, 512)
  print(f"\nrenderer on the host: {render_rate(images, size, points):.0f} 1p-frac images/s at {size} px, "
        f"{points} points, {numba.get_num_threads()} threads")


if __name__ == "__main__":
  with util.one_line_exits("gpu_check.py"):
    sys.exit(main())
