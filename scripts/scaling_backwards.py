"""The experiments of "Scaling Backwards: Minimal Synthetic Pre-training?" (Nakamura et al., ECCV 2024) at CPU
scale, as one resumable script: pretraining rows at an equal budget (scratch, FractalDB, 1p-frac, 1p-img
gray and Canny edges), then 1p-frac sweeps over Delta, sigma and L; every cell fine-tuned and
linear-probed on scikit-learn's digits with several seeds.

  python scripts/scaling_backwards.py --workdir runs/scaling_backwards [--seeds 3] [--pretrain-steps 1000]
  python scripts/scaling_backwards.py --workdir /tmp/sb --quick      # a smoke run of every kind of row

Model: the runlocal vit_cpu (32 px), batch 64; 1p-frac at its runlocal settings (64 px renders, L = 16,
Delta = 0.3, sigma = 3.5) unless a sweep changes one of them. Seeds are fine-tuning seeds (one pretraining
per cell). Writes table.md (mean ± standard deviation over seeds, beside the paper's CIFAR-100 fine-tuning
top-1 for ViT-Tiny), results.json (every seed) and sweeps.png (top-1 against Delta and against L). A
stopped run continues where it stopped: every finished training run is reused.
"""
import json
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from fractalpre import util  # noqa: E402
from fractalpre.configs import pretrain_1pfrac_vit, pretrain_1pimg_vit, pretrain_fractaldb_vit  # noqa: E402
from fractalpre.studies import transfer
from fractalpre.util import cpu_allocator

BASE = dict(classes=16, delta=0.3, sigma=3.5)  # the runlocal 1p-frac
# The paper's CIFAR-100 fine-tuning top-1 (ViT-Tiny, 224 px, 1k categories unless the row sweeps L);
# None where the paper has no such row.
PAPER = {("rows", "scratch"): 64.2, ("rows", "FractalDB"): 81.6, ("rows", "1p-frac"): 84.2,
         ("rows", "1p-img gray"): None, ("rows", "1p-img edges"): 82.2,
         ("delta", 0.001): 1.2, ("delta", 0.01): 19.9, ("delta", 0.05): 83.0, ("delta", 0.1): 84.2,
         ("delta", 0.2): 83.4, ("delta", 1.0): 82.6,
         ("sigma", 3.5): 84.2, ("sigma", 4.0): 82.8, ("sigma", 4.5): 81.9, ("sigma", 5.0): 82.2, ("sigma", 6.0): 81.3,
         ("L", 16): 78.7, ("L", 64): 82.3, ("L", 512): 82.4, ("L", 1000): 84.2}
SWEEPS = {"delta": (0.01, 0.05, 0.1, 0.3, 1.0), "sigma": (3.5, 5.0), "L": (16, 64, 256)}
def onepfrac_key(classes, delta, sigma) -> str:
  return f"1pfrac_L{classes}_delta{delta}_sigma{sigma}"


# row name -> pretraining key ('' = none)
ROWS = {"scratch": "", "FractalDB": "fractaldb", "1p-frac": onepfrac_key(**BASE), "1p-img gray": "1pimg_gray",
        "1p-img edges": "1pimg_edges"}
# --quick: every kind of pretraining once; the sweeps' rows are the 1p-frac row's runs
QUICK_ROWS, QUICK_SWEEPS = ("scratch", "FractalDB", "1p-frac", "1p-img edges"), {"delta": (0.3,), "sigma": (3.5,),
                                                                                 "L": (16,)}


def cells(rows, sweeps: dict) -> list[tuple[str, object, str]]:
  """(group, value, pretraining key) of every table row; rows with the same pretraining share one run."""
  out = [("rows", name, ROWS[name]) for name in rows]
  for group, values in sweeps.items():
    name = {"delta": "delta", "sigma": "sigma", "L": "classes"}[group]
    out += [(group, v, onepfrac_key(**{**BASE, name: v})) for v in values]
  return out


def pretrain_config(key: str, steps: int):
  """The runlocal config of a pretraining key, for `steps` steps (warm-up a tenth)."""
  if key == "fractaldb":
    config = pretrain_fractaldb_vit.get_config("runlocal")
  elif key.startswith("1pimg_"):
    config = pretrain_1pimg_vit.get_config(f"runlocal,rendering={key.split('_')[1]}")
  else:
    _, classes, delta, sigma = key.split("_")
    config = pretrain_1pfrac_vit.get_config(f"runlocal,classes={classes[1:]},delta={delta[5:]},sigma={sigma[5:]}")
  config.total_steps = steps
  config.checkpoint_every = max(steps // 2, 1)
  config.optim.warmup_steps = max(steps // 10, 1)
  return config


def row_label(group, value) -> str:
  return value if group == "rows" else f"1p-frac, {'Delta' if group == 'delta' else group} = {value}"


def table(results: dict, rows, args) -> str:
  lines = ["| experiment | fine-tune top-1 (%) | linear probe top-1 (%) | paper, CIFAR-100 fine-tune top-1 (%) |",
           "|---|---:|---:|---:|"]
  for group, value, key in rows:
    r = results[f"{group}={value}"]
    paper = PAPER.get((group, value))
    ft, probe = (transfer.cell(transfer.summary(r[m])["top1"], "top1") for m in ("finetune", "probe"))
    lines.append(f"| {row_label(group, value)} | {ft} | {probe} | {'—' if paper is None else paper} |")
  return "\n".join(lines) + (f"\n\nmean ± standard deviation over {args.seeds} fine-tuning seeds; digits, "
                             f"{args.labels} labels per class, {args.finetune_steps} steps; pretraining "
                             f"{args.pretrain_steps} steps of 64 images")


def plot(path: Path, results: dict, sweeps: dict) -> None:
  fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
  for ax, group, xlabel in ((axes[0], "delta", "Delta"), (axes[1], "L", "L (categories)")):
    values = list(sweeps[group])
    for mode, label in (("finetune", "fine-tune"), ("probe", "linear probe")):
      stats = [transfer.summary(results[f"{group}={v}"][mode])["top1"] for v in values]
      ax.errorbar(values, [100 * m for m, _ in stats], yerr=[100 * s for _, s in stats], marker="o", capsize=3,
                  label=label)
    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("digits top-1 (%)")
    ax.legend()
  fig.suptitle("1p-frac sweeps at CPU scale (mean ± std over seeds)")
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def main():
  parser = util.ArgumentParser(description=__doc__)
  parser.add_argument("--workdir", default="runs/scaling_backwards", help="every run, table.md, results.json")
  parser.add_argument("--pretrain-steps", type=int, default=1000, help="pretraining steps of every row (batch 64)")
  parser.add_argument("--finetune-steps", type=int, default=150, help="fine-tuning and probing steps (batch 64)")
  parser.add_argument("--labels", type=int, default=10, help="digits per class for fine-tuning")
  parser.add_argument("--seeds", type=int, default=3, help="fine-tuning seeds per cell")
  parser.add_argument("--quick", action="store_true", help="a smoke run: 3 pretraining and 2 fine-tuning steps, "
                      "2 seeds, no 1p-img gray row, the sweeps at the 1p-frac row's settings only")
  args = parser.parse_args()
  util.require_positive(parser, args, "pretrain_steps", "finetune_steps", "labels", "seeds")
  rows, sweeps, overrides = tuple(ROWS), SWEEPS, None
  if args.quick:
    args.pretrain_steps, args.finetune_steps, args.seeds = 3, 2, 2
    rows, sweeps, overrides = QUICK_ROWS, QUICK_SWEEPS, transfer.QUICK
  hint = cpu_allocator.preload()
  root = Path(args.workdir)
  transfer.use_compilation_cache(root / "jax_cache")
  start = time.time()
  rows = cells(rows, sweeps)
  results = {}
  for n, (group, value, key) in enumerate(rows):
    print(f"[{n + 1}/{len(rows)}] {row_label(group, value)} ({time.time() - start:.0f} s so far)", file=sys.stderr,
          flush=True)
    init = ""
    if key:
      transfer.run(pretrain_config(key, args.pretrain_steps), root / "pretrain" / key, f"pretrain {key}",
                         overrides)
      init = str(root / "pretrain" / key)
    name = key or "scratch"
    results[f"{group}={value}"] = {
        mode: transfer.over_seeds(root / mode / name, "digits", init, range(args.seeds), args.finetune_steps,
                                        args.labels, probe=mode == "probe", label=f"{mode} {name}",
                                        overrides=overrides)
        for mode in ("finetune", "probe")}
  seconds = time.time() - start
  text = table(results, rows, args) + f"; this run took {seconds / 60:.1f} min"
  print("\n" + text)
  util.write_atomic(root / "table.md", text + "\n")
  util.write_atomic(root / "results.json", json.dumps({"settings": vars(args), "seconds": seconds,
                                                         "results": results}, indent=1))
  plot(root / "sweeps.png", results, sweeps)
  print(f"wrote {root / 'table.md'}, results.json and sweeps.png")
  if hint:
    print(hint, file=sys.stderr)


if __name__ == "__main__":
  main()
