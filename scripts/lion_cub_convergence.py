"""How much each comm mode costs in convergence, on 8 CPU devices.

  python scripts/lion_cub_convergence.py [--steps 200] [--lr 1e-3]                     # MLP on the digits
  python scripts/lion_cub_convergence.py --vit --workdir runs/cub_vit [--steps 1000]   # 1p-frac ViT pretraining

Default: a one-hidden-layer MLP on scikit-learn's digits (`fractalpre.parallel.convergence`), batch 8 x 32,
every mode with and without momentum sync; the final loss is measured on all 1797 digits.
`--vit`: the trainer's runlocal 1p-frac ViT pretraining (configs/pretrain_1pfrac_vit.py:runlocal, batch 64
over 8 devices, Lion at `--vit-lr`) with allreduce, mavo_1bit with and without momentum sync (exp:4),
mavo_4bit and l1_int8 with exp:4; a table of the final train loss and accuracy (mean of the last 10% of
logged steps) and a loss-curve plot in the workdir. Finished runs in the workdir are reused, killed ones
resume. Prints Markdown tables.
"""
import os
from pathlib import Path

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

from fractalpre import fileio  # noqa: E402
from fractalpre.parallel import COMMS, convergence  # noqa: E402

VIT_MODES = (("allreduce", ""), ("mavo_1bit", ""), ("mavo_1bit", "exp:4"), ("mavo_4bit", "exp:4"),
             ("l1_int8", "exp:4"))


def mlp_table(steps, lr):
  syncs = (None, "every:10", "exp:4")
  base = convergence.train_digits("allreduce", steps=steps, lr=lr)["final"]
  print("| comm | " + " | ".join(f"sync {s or 'none'}" for s in syncs) + " |")
  print("|---|" + "---:|" * len(syncs))
  for comm in COMMS:
    cells = []
    for sync in syncs:
      if comm == "allreduce" and sync:  # the momenta are equal: nothing to sync
        cells.append("")
        continue
      final = convergence.train_digits(comm, sync, steps=steps, lr=lr)["final"]
      cells.append(f"{final:.4f} ({100 * (final / base - 1):+.1f}%)")
    print(f"| {comm} | " + " | ".join(cells) + " |", flush=True)


def vit_table(root: Path, steps: int, lr: float):
  import time

  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  import numpy as np

  from configs import pretrain_1pfrac_vit
  from fractalpre import classification, metric_logging
  curves = {}
  print("| comm | momentum sync | final train loss | final train top-1 | minutes |\n|---|---|---:|---:|---:|")
  for comm, sync in VIT_MODES:
    config = pretrain_1pfrac_vit.get_config("runlocal")
    config.update(total_steps=steps, checkpoint_every=max(steps // 4, 1), log_every=10, eval_every=0)
    config.optim.update(optimizer="lion", lr=lr, weight_decay=0.1)
    config.lion.update(comm=comm, momentum_sync=sync)
    workdir = root / f"{comm}_{sync.replace(':', '') or 'nosync'}"
    t0 = time.time()
    classification.train_and_evaluate(config, workdir, progress=False)
    records = [r for r in metric_logging.read(workdir) if "loss" in r]
    tail = records[-max(len(records) // 10, 1):]
    curves[f"{comm}, sync {sync or 'none'}"] = records
    print(f"| {comm} | {sync or 'none'} | {np.mean([r['loss'] for r in tail]):.3f} | "
          f"{100 * np.mean([r['train_accuracy'] for r in tail]):.1f}% | {(time.time() - t0) / 60:.1f} |", flush=True)
  fig, ax = plt.subplots(figsize=(7, 4))
  for label, records in curves.items():
    ax.plot([r["step"] for r in records], [r["loss"] for r in records], label=label, lw=1)
  ax.set_xlabel("step")
  ax.set_ylabel("train loss")
  ax.set_title(f"1p-frac runlocal ViT, Lion lr {lr}, 8 devices x 8 images")
  ax.legend()
  fig.tight_layout()
  fig.savefig(root / "lion_cub_loss.png", dpi=100)
  print(f"wrote {root / 'lion_cub_loss.png'}")


def main():
  parser = fileio.ArgumentParser(description=__doc__)
  parser.add_argument("--steps", type=int, default=None, help="steps per run (default: 200 MLP, 1000 ViT)")
  parser.add_argument("--lr", type=float, default=1e-3, help="MLP learning rate (default: %(default)s)")
  parser.add_argument("--vit", action="store_true", help="the 1p-frac ViT pretraining instead of the MLP")
  parser.add_argument("--vit-lr", type=float, default=3e-4, help="ViT Lion learning rate (default: %(default)s)")
  parser.add_argument("--workdir", default="runs/lion_cub_vit", help="ViT runs and plot (default: %(default)s)")
  args = parser.parse_args()
  if args.vit:
    vit_table(Path(args.workdir), args.steps or 1000, args.vit_lr)
  else:
    mlp_table(args.steps or 200, args.lr)


if __name__ == "__main__":
  main()
