"""Lion Cub costs: bytes per step from the compiled program (via the ledger), the compute overhead of
packing and voting on this CPU, and the cost model's predicted end-to-end speed-up at 10 Gb/s.

  python benchmarks/bench_lion.py [--steps 3] [--batch 32]

The overhead is the ViT-Ti/16 step time of each comm mode on one CPU device (where collectives are free,
so the difference is the quantise / pack / unpack / vote work) relative to plain Lion (`allreduce`).
"""
import json
import subprocess
import sys
from pathlib import Path

from fractalpre import util
from fractalpre.training import config_files


def step_time(comm, batch, steps):
  from bench_train import median_step_seconds
  config = config_files.load_config("configs/pretrain_1pfrac_vit.py")
  config.update(batch_size=batch, image_size=224)
  config.optim.optimizer = "lion"
  config.lion.comm = comm
  return median_step_seconds(config, steps, num_classes=1000)


def main():
  parser = util.ArgumentParser(description=__doc__)
  parser.add_argument("--steps", type=int, default=3, help="timed steps")
  parser.add_argument("--batch", type=int, default=32, help="global batch")
  args = parser.parse_args()
  from fractalpre.studies.machine import describe_jax
  print(f"# bench_lion on {describe_jax()}")
  ledger = json.loads(subprocess.run([sys.executable, str(Path(__file__).parents[1] / "scripts" / "lion_ledger.py"), "--model", "vit_ti16",
                                      "--devices", "8", "--json"], capture_output=True, text=True, check=True).stdout)
  from fractalpre.optim.lion import COMMS
  base_bytes = ledger["rows"]["allreduce"]["sent_bytes"]
  pred = {c: {(p["devices"], p["link"]): p["step_ms"] for p in ps} for c, ps in ledger["predictions"].items()}
  base_time = step_time("allreduce", args.batch, args.steps)
  print("| comm | MB sent / device / step (n=8) | fewer bytes than fp32 | CPU step overhead | "
        "predicted speed-up, n=64, 10 Gb/s |\n|---|---:|---:|---:|---:|")
  for comm in COMMS:
    t = base_time if comm == "allreduce" else step_time(comm, args.batch, args.steps)
    sent = ledger["rows"][comm]["sent_bytes"]
    key = (64, "10 Gb/s Ethernet")
    speedup = f"{pred['allreduce'][key] / pred[comm][key]:.2f}x" if key in pred.get(comm, {}) else "n/a"
    print(f"| {comm} | {sent / 1e6:.2f} | {base_bytes / sent:.1f}x | {100 * (t / base_time - 1):+.1f}% | "
          f"{speedup} |", flush=True)
  print(f"\n(ViT-Ti/16, batch {args.batch} at 224 px on one CPU device: plain Lion step {base_time:.2f} s)")


if __name__ == "__main__":
  with util.one_line_exits("bench_lion.py"):
    sys.exit(main())
