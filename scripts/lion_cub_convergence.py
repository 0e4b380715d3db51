"""How much each comm mode costs in convergence, on 8 CPU devices.

  python scripts/lion_cub_convergence.py [--steps 200] [--lr 1e-3]                     # MLP on the digits
  python scripts/lion_cub_convergence.py --vit --workdir runs/cub_vit [--steps 1000] [--seeds 3]  # 1p-frac ViT

Default: a one-hidden-layer MLP on scikit-learn's digits (`fractalpre.studies.lion_convergence`), batch 8 x 32,
every mode with and without momentum sync; the final loss is measured on all 1797 digits.
`--vit`: the trainer's runlocal 1p-frac ViT pretraining (configs/pretrain_1pfrac_vit.py:runlocal, batch 64
over 8 devices, Lion at `--vit-lr`) with allreduce, mavo_1bit with and without momentum sync (exp:4),
mavo_4bit and l1_int8 with exp:4, each with `--seeds` seeds (init, data order, augmentation); a table of
the final train loss and accuracy (mean of the last 10% of logged steps) as mean ± std over seeds and as
the difference from the first of `--modes` (allreduce) at the same seed, a loss-curve plot and results.json in the workdir.
Finished runs in the workdir are reused, killed ones resume. Prints Markdown tables.
"""
import os
import sys
from pathlib import Path

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

from fractalpre import util  # noqa: E402
from fractalpre.optim.lion import COMMS  # noqa: E402
from fractalpre.studies import lion_convergence  # noqa: E402
from fractalpre.training import STOPS  # noqa: E402
from fractalpre.util import cpu_allocator

VIT_MODES = (("allreduce", ""), ("mavo_1bit", ""), ("mavo_1bit", "exp:4"), ("mavo_4bit", "exp:4"),
             ("l1_int8", "exp:4"))


def mlp_table(steps, lr):
  syncs = (None, "every:10", "exp:4")
  base = lion_convergence.train_digits("allreduce", steps=steps, lr=lr)["final"]
  print("| comm | " + " | ".join(f"sync {s or 'none'}" for s in syncs) + " |")
  print("|---|" + "---:|" * len(syncs))
  for comm in COMMS:
    cells = []
    for sync in syncs:
      if comm == "allreduce" and sync:  # the momenta are equal: nothing to sync
        cells.append("")
        continue
      final = lion_convergence.train_digits(comm, sync, steps=steps, lr=lr)["final"]
      cells.append(f"{final:.4f} ({100 * (final / base - 1):+.1f}%)")
    print(f"| {comm} | " + " | ".join(cells) + " |", flush=True)


def vit_run(root: Path, comm: str, sync: str, seed: int, steps: int, lr: float) -> dict:
  """One pretraining run (reused when finished, resumed when killed): its logged records and summary."""
  import numpy as np

  from fractalpre.configs import pretrain_1pfrac_vit
  from fractalpre.studies import transfer
  from fractalpre.training import metric_writer
  config = pretrain_1pfrac_vit.get_config("runlocal")
  config.update(total_steps=steps, checkpoint_every=max(steps // 4, 1), log_every=10, eval_every=0, seed=seed)
  config.optim.update(optimizer="lion", lr=lr, weight_decay=0.1)
  config.lion.update(comm=comm, momentum_sync=sync)
  workdir = root / f"{comm}_{sync.replace(':', '') or 'nosync'}" / f"seed{seed}"
  transfer.run(config, workdir, f"{comm} sync {sync or 'none'} seed {seed}")
  records = [r for r in metric_writer.read(workdir) if "loss" in r]
  tail = records[-max(len(records) // 10, 1):]
  return {"records": records, "loss": float(np.mean([r["loss"] for r in tail])),
          "top1": float(np.mean([r["train_accuracy"] for r in tail]))}


def vit_table(root: Path, steps: int, lr: float, seeds: int, modes=VIT_MODES):
  import json

  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  import numpy as np

  from fractalpre.studies.transfer import spread
  runs = {(comm, sync): {seed: vit_run(root, comm, sync, seed, steps, lr) for seed in range(seeds)}
          for comm, sync in modes}
  base = runs[modes[0]]
  first = f"{modes[0][0]} sync {modes[0][1] or 'none'}"
  print(f"\n{seeds} seeds, {steps} steps; mean ± std over seeds, and the difference from {first} at the same seed"
        f"\n\n| comm | momentum sync | final train loss | final train top-1 | loss - {first} | top-1 - {first} "
        f"| loss above {first} |\n|---|---|---:|---:|---:|---:|---:|")
  for (comm, sync), per_seed in runs.items():
    loss, top1 = spread(r["loss"] for r in per_seed.values()), spread(r["top1"] for r in per_seed.values())
    dloss = spread(per_seed[s]["loss"] - base[s]["loss"] for s in per_seed)
    dtop1 = spread(per_seed[s]["top1"] - base[s]["top1"] for s in per_seed)
    worse = sum(per_seed[s]["loss"] > base[s]["loss"] for s in per_seed)
    print(f"| {comm} | {sync or 'none'} | {loss[0]:.3f} ± {loss[1]:.3f} | {100 * top1[0]:.1f} ± {100 * top1[1]:.1f}% "
          f"| {dloss[0]:+.3f} ± {dloss[1]:.3f} | {100 * dtop1[0]:+.1f} ± {100 * dtop1[1]:.1f} | "
          + ("" if (comm, sync) == modes[0] else f"{worse} of {len(per_seed)}") + " |", flush=True)
  fig, ax = plt.subplots(figsize=(7, 4))
  for (comm, sync), per_seed in runs.items():
    curves = np.array([[r["loss"] for r in run["records"]] for run in per_seed.values()])
    x = [r["step"] for r in next(iter(per_seed.values()))["records"]]
    line, = ax.plot(x, curves.mean(0), label=f"{comm}, sync {sync or 'none'}", lw=1)
    ax.fill_between(x, curves.min(0), curves.max(0), color=line.get_color(), alpha=0.15, lw=0)
  ax.set_xlabel("step")
  ax.set_ylabel("train loss")
  ax.set_title(f"1p-frac runlocal ViT, Lion lr {lr}, 8 devices x 8 images: mean and range of {seeds} seeds",
               fontsize=9)
  ax.legend()
  fig.tight_layout()
  fig.savefig(root / "lion_cub_loss.png", dpi=100)
  summary = {f"{c}|{s}": {str(k): {m: v[m] for m in ("loss", "top1")} for k, v in r.items()} for (c, s), r in runs.items()}
  (root / "results.json").write_text(json.dumps(summary, indent=1))
  print(f"wrote {root / 'lion_cub_loss.png'} and {root / 'results.json'}")


def main():
  parser = util.ArgumentParser(description=__doc__)
  parser.add_argument("--steps", type=int, default=None, help="steps per run (default: 200 MLP, 1000 ViT)")
  parser.add_argument("--lr", type=float, default=1e-3, help="MLP learning rate (default: %(default)s)")
  parser.add_argument("--vit", action="store_true", help="the 1p-frac ViT pretraining instead of the MLP")
  parser.add_argument("--vit-lr", type=float, default=3e-4, help="ViT Lion learning rate (default: %(default)s)")
  parser.add_argument("--seeds", type=int, default=3, help="ViT seeds per mode (default: %(default)s)")
  parser.add_argument("--modes", default=",".join(f"{c}/{s}" if s else c for c, s in VIT_MODES),
                      help="ViT modes, COMM or COMM/SYNC, the first is the baseline (default: %(default)s)")
  parser.add_argument("--workdir", default="runs/lion_cub_vit", help="ViT runs and plot (default: %(default)s)")
  args = parser.parse_args()
  util.require_positive(parser, args, "seeds")
  if args.steps is not None:
    util.require_positive(parser, args, "steps")
  modes = tuple((m.partition("/")[0], m.partition("/")[2]) for m in args.modes.split(",") if m)
  if not modes:
    parser.error("--modes must name at least one mode")
  for comm, _ in modes:
    if comm not in COMMS:
      parser.error(f"--modes: unknown comm {comm!r}; choose from {', '.join(COMMS)}")
  if args.vit:
    hint = cpu_allocator.preload()
    vit_table(Path(args.workdir), args.steps or 1000, args.vit_lr, args.seeds, modes)
    if hint:
      print(hint, file=sys.stderr)
  else:
    mlp_table(args.steps or 200, args.lr)


if __name__ == "__main__":
  with util.one_line_exits("lion_cub_convergence.py", STOPS, resumes=True):
    sys.exit(main())
