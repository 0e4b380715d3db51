"""The ViT's train step with its attention through `jax.nn.dot_product_attention` (since 2026-12-04; cuDNN's
fused kernel on NVIDIA GPUs) beside the same step with Flax's einsum-softmax attention (before), on the same
devices in one process, rounds alternating (a VM's speed drifts).

  python benchmarks/bench_attention.py [--rounds 3] [--steps 5]

Rows: the runlocal ViT (vit_cpu, 32 px), ViT-S/16 at 32 px with 2 images (the Lion Cub wire harness's
step) and ViT-Ti/16 at 224 px with batch 32 (bench_train's), fp32, the configs' AdamW, on random data. Rates
are the median over rounds of a round's median step time; the ratio of the medians and each round's ratio
say whether timings measured before the change still describe the code.
"""
import statistics
import sys
from unittest import mock

import jax

from bench_train import random_batch_step, timed_steps
from fractalpre import util
from fractalpre.models import vit
from fractalpre.training import config_files
from fractalpre.studies.machine import describe_jax

VARIANTS = {"einsum (before)": vit.einsum_attention, "dot_product_attention": vit.attention}


def rows():
  """(name, config) of each timed model."""
  local = config_files.load_config("configs/pretrain_1pfrac_vit.py:runlocal")
  small = config_files.load_config("configs/pretrain_1pfrac_vit.py:runlocal")
  small.model.name, small.batch_size = "vit_s16", 2
  full = config_files.load_config("configs/pretrain_1pfrac_vit.py")
  full.batch_size = 32
  return [("vit_cpu (runlocal)", local), ("ViT-S/16", small), ("ViT-Ti/16", full)]


def compare(config, rounds, steps):
  """Per variant, each round's median step seconds, the variants alternating."""
  runs = {}
  for name, attention in VARIANTS.items():
    with mock.patch.object(vit, "attention", attention):  # traced and compiled with this attention
      step, state, batch = random_batch_step(config, num_classes=1000)
      _, state = timed_steps(step, state, batch, 1)
    runs[name] = [step, state, batch]
  seconds = {name: [] for name in VARIANTS}
  for _ in range(rounds):
    for name, run in runs.items():
      median, run[1] = timed_steps(*run, steps)
      seconds[name].append(median)
  return seconds


def main():
  parser = util.ArgumentParser(description=__doc__)
  parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per model")
  parser.add_argument("--steps", type=int, default=5, help="timed steps per round")
  args = parser.parse_args()
  if args.rounds < 1 or args.steps < 1:
    parser.error(f"--rounds and --steps must be at least 1, got {args.rounds} and {args.steps}")
  print(f"# bench_attention on {describe_jax()}, {jax.device_count()} device(s)")
  before, after = VARIANTS
  print(f"| model | image | batch | {before} img/s | {after} img/s | time after / before | per round |")
  print("|---|---:|---:|---:|---:|---:|---|")
  for name, config in rows():
    s = compare(config, args.rounds, args.steps)
    m = {k: statistics.median(v) for k, v in s.items()}
    per_round = ", ".join(f"{a / b:.3f}" for a, b in zip(s[after], s[before]))
    print(f"| {name} | {config.image_size} | {config.batch_size} | {config.batch_size / m[before]:.1f} | "
          f"{config.batch_size / m[after]:.1f} | {m[after] / m[before]:.3f} | {per_round} |", flush=True)


if __name__ == "__main__":
  with util.one_line_exits("bench_attention.py"):
    sys.exit(main())
