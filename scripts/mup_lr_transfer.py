"""muP learning-rate transfer: a small AdamW learning-rate sweep at two ViT widths, under the standard
parametrisation (SP) and under muP (base width = the smaller width), training from scratch on the digits.
Under muP the best learning rate should not move with width; under SP it shifts down as width grows.

  python scripts/mup_lr_transfer.py [--widths 64,256] [--lrs 3e-4,1e-3,3e-3,1e-2] [--steps 100] [--workdir mup_lr_out]

Prints the final training loss (mean of the last 3 logged steps) and test top-1 of every run as a table.
Re-running reuses finished runs in the workdir.
"""
import json
import sys
from pathlib import Path

import numpy as np

from fractalpre import util
from fractalpre.training import STOPS, classification, metric_writer
from fractalpre.training import config_files


def main():
  parser = util.ArgumentParser(description=__doc__)
  parser.add_argument("--widths", default="64,256", help="comma-separated ViT widths")
  parser.add_argument("--lrs", default="3e-4,1e-3,3e-3,1e-2", help="comma-separated learning rates")
  parser.add_argument("--steps", type=int, default=100, help="training steps per run")
  parser.add_argument("--workdir", default="mup_lr_out", help="one training workdir per run, and the table")
  args = parser.parse_args()
  widths, lrs = [int(w) for w in args.widths.split(",")], [float(x) for x in args.lrs.split(",")]
  root = Path(args.workdir)
  results = {}
  for param in ("SP", "muP"):
    for width in widths:
      for lr in lrs:
        config = config_files.load_config(f"configs/finetune.py:dataset=digits,steps={args.steps},lr={lr}")
        config.model.update(dict(width=width, mlp_dim=4 * width, depth=2, heads=4))
        config.optim.weight_decay = 0.0
        config.mup = {"base_width": widths[0] if param == "muP" else 0}
        config.tensorboard = False
        workdir = root / f"{param}_w{width}_lr{lr:g}"
        final = classification.train_and_evaluate(config, workdir, progress=False)
        losses = [r["loss"] for r in metric_writer.read(workdir)][-3:]
        results[f"{param} {width} {lr:g}"] = {"loss": float(np.mean(losses)), "top1": final.get("eval_top1")}
        print(param, width, lr, results[f"{param} {width} {lr:g}"], flush=True)
  (root / "results.json").write_text(json.dumps(results, indent=1))
  print(f"\nfinal training loss (test top-1), ViT depth 2 on digits, {args.steps} AdamW steps from scratch")
  print("| parametrisation | width | " + " | ".join(f"lr {lr:g}" for lr in lrs) + " | best lr |")
  print("|---|---:|" + "---:|" * len(lrs) + "---:|")
  for param in ("SP", "muP"):
    for width in widths:
      row = [results[f"{param} {width} {lr:g}"] for lr in lrs]
      best = lrs[int(np.argmin([r["loss"] for r in row]))]
      print(f"| {param} | {width} | " + " | ".join(f"{r['loss']:.3f} ({100 * r['top1']:.0f}%)" for r in row)
            + f" | {best:g} |")


if __name__ == "__main__":
  with util.one_line_exits("mup_lr_transfer.py", STOPS):
    sys.exit(main())
