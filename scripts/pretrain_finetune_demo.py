"""The whole story offline on a CPU, with error bars: 1p-frac pretraining of the runlocal ViT, then
fine-tuning from it and from scratch with several seeds each, on two real few-label datasets that ship
with the dependencies: scikit-learn's digits (10 classes) and scikit-image's lfw_subset (faces / non-faces).

  python scripts/pretrain_finetune_demo.py --workdir demo_out/story [--seeds 5] [--pretrain-steps 2000]

Prints and writes story.md: mean ± standard deviation over seeds of top-1, NLL and ECE on each test split,
and the paired difference (same seed, pretrained minus scratch) with its spread; results.json holds every
seed's numbers, loss_curves.png the curves. Re-running reuses finished runs and resumes interrupted ones.
"""
import json
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from fractalpre import util  # noqa: E402
from fractalpre.configs import pretrain_1pfrac_vit  # noqa: E402
from fractalpre.data import registry  # noqa: E402
from fractalpre.studies import transfer  # noqa: E402
from fractalpre.training import STOPS, metric_writer  # noqa: E402
from fractalpre.util import cpu_allocator

DATASETS = {"digits": "digits", "lfw": "lfw (faces / non-faces)"}


def pretrain_config(steps: int, classes: int, delta: float):
  config = pretrain_1pfrac_vit.get_config(f"runlocal,classes={classes},delta={delta}")
  config.total_steps = steps
  config.checkpoint_every = max(steps // 4, 1)
  config.optim.warmup_steps = max(steps // 10, 1)
  return config


def minutes(seconds: float | None) -> str:
  return "an unrecorded time" if seconds is None else f"{seconds / 60:.1f} min"


def table(results: dict, labels: int, seeds: int) -> str:
  lines = ["| dataset | init | top-1 (%) | NLL | ECE | pretrained better (top-1) |", "|---|---|---:|---:|---:|---:|"]
  for name, runs in results.items():
    pre, scratch = runs["pretrained"], runs["scratch"]
    wins = sum(pre[s]["top1"] > scratch[s]["top1"] for s in pre)
    for init, per_seed in (("1p-frac pretrained", pre), ("from scratch", scratch)):
      stats = transfer.summary(per_seed)
      lines.append(f"| {DATASETS[name]}, {labels} labels/class | {init} | "
                   + " | ".join(transfer.cell(stats[k], k) for k in transfer.METRICS) + " | |")
    diff = transfer.paired(pre, scratch)
    lines.append("| | paired difference | "
                 + " | ".join(transfer.cell(diff[k], k, signed=True) for k in transfer.METRICS)
                 + f" | {wins} of {len(pre)} seeds |")
  return "\n".join(lines) + f"\n\nmean ± standard deviation over {seeds} fine-tuning seeds"


def plot(root: Path, results: dict) -> None:
  fig, axes = plt.subplots(1, 1 + len(results), figsize=(5 * (1 + len(results)), 3.5))
  recs = [r for r in metric_writer.read(root / "pretrain") if "loss" in r]
  axes[0].plot([r["step"] for r in recs], [r["loss"] for r in recs])
  axes[0].set_title("1p-frac pretraining loss")
  for ax, name in zip(axes[1:], results):
    for init, color in (("pretrained", "C0"), ("scratch", "C1")):
      for k, seed in enumerate(results[name][init]):
        recs = [r for r in metric_writer.read(root / name / init / f"seed{seed}") if "loss" in r]
        ax.plot([r["step"] for r in recs], [r["loss"] for r in recs], color=color, alpha=0.6,
                label=init if k == 0 else None)
    ax.set_title(f"fine-tuning loss ({name}), every seed")
    ax.legend()
  for ax in axes:
    ax.set_xlabel("step")
  fig.tight_layout()
  fig.savefig(root / "loss_curves.png", dpi=100)
  plt.close(fig)


def main():
  parser = util.ArgumentParser(description=__doc__)
  parser.add_argument("--workdir", default="demo_out/story", help="training workdirs and the story table")
  parser.add_argument("--pretrain-steps", type=int, default=2000, help="1p-frac pretraining steps (batch 64)")
  parser.add_argument("--classes", type=int, default=16, help="1p-frac categories L")
  parser.add_argument("--delta", type=float, default=0.3, help="1p-frac perturbation Delta")
  parser.add_argument("--finetune-steps", type=int, default=150, help="fine-tuning steps (batch 64)")
  parser.add_argument("--labels", type=int, default=10, help="training images per class")
  parser.add_argument("--seeds", type=int, default=5, help="fine-tuning seeds per init and dataset")
  parser.add_argument("--datasets", default="digits,lfw", help=f"comma-separated, of {sorted(DATASETS)}")
  parser.add_argument("--quick", action="store_true", help="a smoke run: 4 pretraining, 3 fine-tuning steps, 2 seeds")
  parser.add_argument("--restart", action="store_true",
                      help="runs in --workdir made from other settings, inputs or package version: move them aside "
                           "and train again")
  args = parser.parse_args()
  datasets = [d for d in args.datasets.split(",") if d]
  for d in datasets:
    if d not in DATASETS:
      parser.error(f"--datasets: {d!r} is not one of {sorted(DATASETS)}")
  util.require_positive(parser, args, "pretrain_steps", "classes", "finetune_steps", "labels", "seeds")
  if args.seeds < 2:
    parser.error(f"--seeds must be at least 2 (a spread needs two runs), got {args.seeds}")
  overrides = None
  if args.quick:
    args.pretrain_steps, args.finetune_steps, args.seeds, overrides = 4, 3, 2, transfer.QUICK
  root = Path(args.workdir)
  util.check_folder(root, "--workdir")
  pretraining = pretrain_config(args.pretrain_steps, args.classes, args.delta)
  with util.usage_errors("--classes/--delta: "):  # the pretraining data's settings, before any work
    registry.get_source(pretraining.data)
  hint = cpu_allocator.preload()
  transfer.use_compilation_cache(root / "jax_cache")

  start = time.time()
  print(f"pretraining on 1p-frac (L={args.classes}, Delta={args.delta}) for {args.pretrain_steps} steps",
        file=sys.stderr)
  pretrain, tally = transfer.Tally(), transfer.Tally()
  transfer.run(pretraining, root / "pretrain", "pretrain", overrides, progress=True, restart=args.restart,
               tally=pretrain)
  results = {}
  for name in datasets:
    results[name] = {
        init: transfer.over_seeds(root / name / init, name, path, range(args.seeds), args.finetune_steps,
                                  args.labels, label=f"{name} {init}", overrides=overrides, restart=args.restart,
                                  tally=tally)
        for init, path in (("pretrained", str(root / "pretrain")), ("scratch", ""))}
  tally.runs += pretrain.runs
  text = (f"Fine-tuning vit_cpu for {args.finetune_steps} steps; 1p-frac pretraining (L={args.classes}, "
          f"Delta={args.delta}) for {args.pretrain_steps} steps took {minutes(pretrain.seconds)}, all the runs "
          f"{minutes(tally.seconds)}.\n\n" + table(results, args.labels, args.seeds)
          + "\n\nMeasured: " + "; ".join(tally.made_on))
  print("\n" + text)
  util.write_atomic(root / "story.md", (text + "\n").encode())
  util.write_atomic(root / "results.json", json.dumps(
      {"settings": vars(args), "pretrain_seconds": pretrain.seconds, "seconds": tally.seconds,
       "made_on": tally.made_on, "results": results}, indent=1).encode())
  plot(root, results)
  print(f"wrote {root / 'story.md'}, results.json and loss_curves.png ({time.time() - start:.0f} s)")
  if hint:
    print(hint, file=sys.stderr)


if __name__ == "__main__":
  with util.one_line_exits("pretrain_finetune_demo.py", STOPS, resumes=True):
    main()
