"""The experiments of "Scaling Backwards: Minimal Synthetic Pre-training?" (Nakamura et al., ECCV 2024) at CPU
scale, as one resumable script: pretraining rows at an equal budget (scratch, FractalDB, 1p-frac, 1p-img
gray and Canny edges), then 1p-frac sweeps over Delta, sigma and L; every cell pretrained with several seeds,
each fine-tuned with several seeds and linear-probed on scikit-learn's digits.

  python scripts/scaling_backwards.py --workdir runs/scaling_backwards [--pretrain-seeds 3] [--finetune-seeds 2]
  python scripts/scaling_backwards.py --workdir /tmp/sb --quick      # a smoke run: the scratch and 1p-frac rows

Model: the runlocal vit_cpu (32 px), batch 64; 1p-frac at its runlocal settings (64 px renders, L = 16,
Delta = 0.3, sigma = 3.5) unless a sweep changes one of them. A pretraining seed draws the pretraining data
(the fractal, its perturbations, FractalDB's systems) and the model's init, order and augmentation; a
fine-tuning seed the head, order, augmentation and dropout. Writes table.md (mean ± standard deviation over
every pretraining and fine-tuning seed, the two spreads apart, beside the paper's CIFAR-100 fine-tuning top-1
for ViT-Tiny), results.json (every run's numbers by pretraining and fine-tuning seed) and sweeps.png (top-1
against Delta and against L). A stopped run continues where it stopped: every finished training run is reused.
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
from fractalpre.studies import transfer  # noqa: E402
from fractalpre.training import STOPS  # noqa: E402
from fractalpre.util import cpu_allocator  # noqa: E402

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
# --quick: scratch and 1p-frac; the sweeps' rows are the 1p-frac row's runs
QUICK_ROWS, QUICK_SWEEPS = ("scratch", "1p-frac"), {"delta": (0.3,), "sigma": (3.5,), "L": (16,)}
# The default budget, cut from 1000 pretraining and 150 fine-tuning steps so that 3 pretraining seeds of
# every cell fit in under an hour on 2 CPU cores
PRETRAIN_STEPS, FINETUNE_STEPS = 300, 100


def cells(rows, sweeps: dict) -> list[tuple[str, object, str]]:
  """(group, value, pretraining key) of every table row; rows with the same pretraining share its runs."""
  out = [("rows", name, ROWS[name]) for name in rows]
  for group, values in sweeps.items():
    name = {"delta": "delta", "sigma": "sigma", "L": "classes"}[group]
    out += [(group, v, onepfrac_key(**{**BASE, name: v})) for v in values]
  return out


def pretrain_config(key: str, steps: int, seed: int):
  """The runlocal config of a pretraining key and seed (data and training), for `steps` steps (warm-up a
  tenth)."""
  if key == "fractaldb":
    config = pretrain_fractaldb_vit.get_config("runlocal")
  elif key.startswith("1pimg_"):
    config = pretrain_1pimg_vit.get_config(f"runlocal,rendering={key.split('_')[1]}")
  else:
    _, classes, delta, sigma = key.split("_")
    config = pretrain_1pfrac_vit.get_config(f"runlocal,classes={classes[1:]},delta={delta[5:]},sigma={sigma[5:]}")
  config.seed = config.data.seed = seed
  config.total_steps = steps
  config.checkpoint_every = max(steps // 2, 1)
  config.optim.warmup_steps = max(steps // 10, 1)
  return config


def transfer_runs(root: Path, key: str, args, overrides, tally: transfer.Tally) -> dict:
  """{'finetune' | 'probe': {pretraining seed: {fine-tuning seed: metrics}}} of one pretraining key: every
  pretraining seed fine-tuned with every fine-tuning seed and probed once (the probe's only randomness besides
  the features is its cross-validation split, held fixed). Without pretraining (key ''), one group: as many
  fine-tuning seeds as the pretrained cells have runs, and a probe of each pretraining seed's random init."""
  tune = dict(dataset="digits", steps=args.finetune_steps, labels=args.labels, overrides=overrides,
              restart=args.restart, tally=tally)
  if not key:
    runs = args.pretrain_seeds * args.finetune_seeds
    return {"finetune": {"none": transfer.over_seeds(root / "finetune" / "scratch", init="", seeds=range(runs),
                                                     label="finetune scratch", **tune)},
            "probe": {"none": transfer.over_seeds(root / "probe" / "scratch", init="", probe=True,
                                                  seeds=range(args.pretrain_seeds), label="probe scratch", **tune)}}
  out = {"finetune": {}, "probe": {}}
  for p in range(args.pretrain_seeds):
    init = root / "pretrain" / key / f"seed{p}"
    transfer.run(pretrain_config(key, args.pretrain_steps, p), init, f"pretrain {key} seed {p}", overrides,
                 restart=args.restart, tally=tally)
    for mode, seeds in (("finetune", range(args.finetune_seeds)), ("probe", [0])):
      out[mode][p] = transfer.over_seeds(root / mode / key / f"pretrain_seed{p}", init=str(init), seeds=seeds,
                                         probe=mode == "probe", label=f"{mode} {key} pretrain seed {p}", **tune)
  return out


def row_label(group, value) -> str:
  return value if group == "rows" else f"1p-frac, {'Delta' if group == 'delta' else group} = {value}"


def spreads(stats: dict) -> str:
  """'**1.2** / 0.8': the pretraining and fine-tuning spreads in points, the larger in bold."""
  p, f = (100 * stats[k] for k in ("pretrain_std", "finetune_std"))
  if p != p or f != f:  # NaN: no pretraining (scratch)
    return f"— / {f:.1f}"
  return f"**{p:.1f}** / {f:.1f}" if p > f else f"{p:.1f} / **{f:.1f}**"


def table(results: dict, rows, args) -> str:
  lines = ["| experiment | fine-tune top-1 (%) | its spread from pretraining / fine-tuning seeds (points) | "
           "linear probe top-1 (%) | paper, CIFAR-100 fine-tune top-1 (%) |", "|---|---:|---:|---:|---:|"]
  larger = {}  # pretraining key -> is the pretraining spread the larger
  for group, value, key in rows:
    r = results[f"{group}={value}"]
    ft, probe = (transfer.components(r[mode]) for mode in ("finetune", "probe"))
    if key:
      larger[key] = ft["pretrain_std"] > ft["finetune_std"]
    paper = PAPER.get((group, value))
    lines.append(f"| {row_label(group, value)} | {transfer.cell((ft['mean'], ft['std']), 'top1')} | {spreads(ft)} "
                 f"| {transfer.cell((probe['mean'], probe['std']), 'top1')} | {'—' if paper is None else paper} |")
  n_p, n_f = args.pretrain_seeds, args.finetune_seeds
  return "\n".join(lines) + (
      f"\n\nFine-tuning: mean ± standard deviation over {n_p} pretraining seeds x {n_f} fine-tuning seeds "
      f"({n_p * n_f} runs; scratch: {n_p * n_f} fine-tuning seeds), its spread split into the pretraining "
      f"seeds' part (one-way random-effects estimate) and the pooled spread within a pretraining seed; the "
      f"pretraining spread is the larger in {sum(larger.values())} of the {len(larger)} pretrainings. Linear "
      f"probe: mean ± standard deviation over the {n_p} pretraining seeds (scratch: {n_p} random inits). "
      f"digits, {args.labels} labels per class, {args.finetune_steps} fine-tuning steps; pretraining "
      f"{args.pretrain_steps} steps of 64 images")


def plot(path: Path, results: dict, sweeps: dict) -> None:
  fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
  for ax, group, xlabel in ((axes[0], "delta", "Delta"), (axes[1], "L", "L (categories)")):
    values = list(sweeps[group])
    for mode, label, color in (("finetune", "fine-tune", "C0"), ("probe", "linear probe", "C1")):
      stats = [transfer.components(results[f"{group}={v}"][mode]) for v in values]
      ax.errorbar(values, [100 * s["mean"] for s in stats], yerr=[100 * s["std"] for s in stats], marker="o",
                  capsize=3, label=label, color=color)
      if "rows=scratch" in results:
        ax.axhline(100 * transfer.components(results["rows=scratch"][mode])["mean"], color=color, ls="--",
                   lw=1, label=f"{label}, scratch")
    ax.set_xscale("log")
    ax.set_xticks(values, [str(v) for v in values])
    ax.minorticks_off()
    ax.set_xlabel(xlabel)
    ax.set_ylabel("digits top-1 (%)")
    ax.legend(fontsize=7)
  fig.suptitle("1p-frac sweeps at CPU scale (mean ± std over pretraining and fine-tuning seeds)")
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def main():
  parser = util.ArgumentParser(description=__doc__)
  parser.add_argument("--workdir", default="runs/scaling_backwards", help="every run, table.md, results.json")
  parser.add_argument("--pretrain-steps", type=int, default=PRETRAIN_STEPS,
                      help="pretraining steps of every row (batch 64)")
  parser.add_argument("--finetune-steps", type=int, default=FINETUNE_STEPS, help="fine-tuning steps (batch 64)")
  parser.add_argument("--labels", type=int, default=10, help="digits per class for fine-tuning and probing")
  parser.add_argument("--pretrain-seeds", type=int, default=3, help="pretraining seeds per cell")
  parser.add_argument("--finetune-seeds", type=int, default=2, help="fine-tuning seeds per pretraining seed")
  parser.add_argument("--quick", action="store_true", help="a smoke run: the scratch and 1p-frac rows (the sweeps "
                      "at its settings only), 3 pretraining and 2 fine-tuning steps, 2 seeds of each kind")
  parser.add_argument("--restart", action="store_true",
                      help="runs in --workdir made from other settings, inputs or package version: move them aside "
                           "and train again")
  args = parser.parse_args()
  util.require_positive(parser, args, "pretrain_steps", "finetune_steps", "labels")
  for name in ("pretrain_seeds", "finetune_seeds"):
    if getattr(args, name) < 2:
      parser.error(f"--{name.replace('_', '-')} must be at least 2 (the table splits the spread between both kinds "
                   f"of seed), got {getattr(args, name)}")
  rows, sweeps, overrides = tuple(ROWS), SWEEPS, None
  if args.quick:
    args.pretrain_steps, args.finetune_steps, args.pretrain_seeds, args.finetune_seeds = 3, 2, 2, 2
    rows, sweeps, overrides = QUICK_ROWS, QUICK_SWEEPS, transfer.QUICK
  root = Path(args.workdir)
  util.check_folder(root, "--workdir")
  hint = cpu_allocator.preload()
  transfer.use_compilation_cache(root / "jax_cache")
  start = time.time()
  rows = cells(rows, sweeps)
  tally = transfer.Tally()
  keys = list(dict.fromkeys(key for _, _, key in rows))
  by_key = {}
  for n, key in enumerate(keys):
    names = ", ".join(row_label(g, v) for g, v, k in rows if k == key)
    print(f"[{n + 1}/{len(keys)}] {names} ({time.time() - start:.0f} s so far)", file=sys.stderr, flush=True)
    by_key[key] = transfer_runs(root, key, args, overrides, tally)
  results = {f"{group}={value}": by_key[key] for group, value, key in rows}
  took = "an unrecorded time" if tally.seconds is None else f"{tally.seconds / 60:.1f} min"
  text = table(results, rows, args) + f"; the runs took {took} of training.\n\nMeasured: " + "; ".join(tally.made_on)
  print("\n" + text)
  util.write_atomic(root / "table.md", text + "\n")
  util.write_atomic(root / "results.json", json.dumps({"settings": vars(args), "seconds": tally.seconds,
                                                         "made_on": tally.made_on, "results": results}, indent=1))
  plot(root / "sweeps.png", results, sweeps)
  print(f"wrote {root / 'table.md'}, results.json and sweeps.png")
  if hint:
    print(hint, file=sys.stderr)


if __name__ == "__main__":
  with util.one_line_exits("scaling_backwards.py", STOPS, resumes=True):
    main()
