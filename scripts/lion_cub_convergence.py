"""Final loss of every comm mode, with and without momentum synchronisation, on 8 CPU devices.

  python scripts/lion_cub_convergence.py [--steps 200] [--lr 1e-3]

A one-hidden-layer MLP on scikit-learn's digits (`fractalpre.parallel.convergence`), batch 8 x 32;
the final loss is measured on all 1797 digits. Prints a Markdown table.
"""
import argparse
import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

from fractalpre.parallel import COMMS, convergence  # noqa: E402


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--steps", type=int, default=200)
  parser.add_argument("--lr", type=float, default=1e-3)
  args = parser.parse_args()
  syncs = (None, "every:10", "exp:4")
  base = convergence.train_digits("allreduce", steps=args.steps, lr=args.lr)["final"]
  print(f"| comm | " + " | ".join(f"sync {s or 'none'}" for s in syncs) + " |")
  print("|---|" + "---:|" * len(syncs))
  for comm in COMMS:
    cells = []
    for sync in syncs:
      final = convergence.train_digits(comm, sync, steps=args.steps, lr=args.lr)["final"]
      cells.append(f"{final:.4f} ({100 * (final / base - 1):+.1f}%)")
    print(f"| {comm} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
  main()
