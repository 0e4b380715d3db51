"""Relative train-step time of the precision policies fp32 / bf16 / fp8 (same model, same batch).

  python benchmarks/bench_precision.py [--steps 5]

On a CPU, XLA has no fp8 matmuls: the fp8 policy is emulated (quantise-dequantise around bf16 dots), so
its CPU time says nothing about fp8 hardware. On a GPU with fp8 support (H100), this measures the real thing;
add `--model vit_b16 --batch 128` there.
"""


import sys

from bench_train import median_step_seconds
from fractalpre import util
from fractalpre.training import config_files
from fractalpre.studies.machine import describe_jax


def main():
  parser = util.ArgumentParser(description=__doc__)
  parser.add_argument("--steps", type=int, default=5, help="timed steps")
  parser.add_argument("--model", default=None, help="default: the runlocal ViT and ViT-Ti/16 at batch 8")
  parser.add_argument("--batch", type=int, default=8, help="global batch")
  args = parser.parse_args()
  print(f"# bench_precision on {describe_jax()}")
  print("| model | image | batch | fp32 img/s | bf16 img/s | fp8 img/s | bf16 / fp32 time | fp8 / fp32 time |")
  print("|---|---:|---:|---:|---:|---:|---:|---:|")
  local = config_files.load_config("configs/pretrain_1pfrac_vit.py:runlocal")
  full = config_files.load_config("configs/pretrain_1pfrac_vit.py")
  full.batch_size = args.batch
  runs = [("vit_cpu (runlocal)", local), ("ViT-Ti/16", full)]
  if args.model:
    full.model.name = args.model
    runs = [(args.model, full)]
  for name, config in runs:
    seconds = {}
    for precision in ("fp32", "bf16", "fp8"):
      config.precision = precision
      seconds[precision] = median_step_seconds(config, args.steps, num_classes=1000)
    b = config.batch_size
    print(f"| {name} | {config.image_size} | {b} | {b / seconds['fp32']:.1f} | {b / seconds['bf16']:.1f} | "
          f"{b / seconds['fp8']:.1f} | {seconds['bf16'] / seconds['fp32']:.2f} | {seconds['fp8'] / seconds['fp32']:.2f} |",
          flush=True)


if __name__ == "__main__":
  with util.one_line_exits("bench_precision.py"):
    sys.exit(main())
