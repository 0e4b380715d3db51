"""The whole story offline on a CPU: 1p-frac pretraining (runlocal), then fine-tuning on scikit-learn's
digits with few labels per class, against the same fine-tuning from scratch.

  python scripts/pretrain_finetune_demo.py --workdir demo_out/story [--pretrain-steps 300] [--labels 10]

Prints a Markdown table (top-1, NLL, ECE on the 899 held-out digits) and writes loss_curves.png.
Re-running resumes or reuses the finished runs in the workdir.
"""
import json
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from configs import finetune, pretrain_1pfrac_vit  # noqa: E402
from fractalpre import classification, fileio, metric_logging  # noqa: E402


def main():
  parser = fileio.ArgumentParser(description=__doc__)
  parser.add_argument("--workdir", default="demo_out/story", help="training workdirs and the story table")
  parser.add_argument("--pretrain-steps", type=int, default=300, help="1p-frac pretraining steps")
  parser.add_argument("--finetune-steps", type=int, default=150, help="fine-tuning steps on digits")
  parser.add_argument("--labels", type=int, default=10, help="training digits per class")
  args = parser.parse_args()
  root = Path(args.workdir)

  start = time.time()
  pre = pretrain_1pfrac_vit.get_config("runlocal")
  pre.total_steps = args.pretrain_steps
  pre.checkpoint_every = args.pretrain_steps
  classification.train_and_evaluate(pre, root / "pretrain")
  pretrain_s = time.time() - start

  results = {}
  for name, init in (("1p-frac pretrained", str(root / "pretrain")), ("from scratch", "")):
    cfg = finetune.get_config(f"dataset=digits,labels_per_class={args.labels},steps={args.finetune_steps},"
                              f"init_from={init}")
    t0 = time.time()
    metrics = classification.train_and_evaluate(cfg, root / name.replace(" ", "_").replace("-", ""))
    results[name] = {k[5:]: v for k, v in metrics.items() if k.startswith("eval_")}
    results[name]["seconds"] = time.time() - t0

  print(f"\nFine-tuning ViT-cpu on digits, {args.labels} labels per class, {args.finetune_steps} steps; "
        f"pretraining {args.pretrain_steps} steps of 1p-frac took {pretrain_s:.0f} s")
  print("| init | top-1 | NLL | ECE |\n|---|---:|---:|---:|")
  for name, r in results.items():
    print(f"| {name} | {100 * r['top1']:.1f}% | {r['nll']:.3f} | {r['ece']:.3f} |")
  (root / "results.json").write_text(json.dumps(results, indent=1))

  fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
  for ax, runs, title in ((axes[0], {"1p-frac pretraining": root / "pretrain"}, "pretraining loss"),
                          (axes[1], {n: root / n.replace(" ", "_").replace("-", "") for n in results},
                           "fine-tuning loss (digits)")):
    for label, workdir in runs.items():
      recs = [r for r in metric_logging.read(workdir) if "loss" in r]
      ax.plot([r["step"] for r in recs], [r["loss"] for r in recs], label=label)
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.legend()
  fig.tight_layout()
  fig.savefig(root / "loss_curves.png", dpi=100)
  print(f"wrote {root / 'loss_curves.png'} and {root / 'results.json'} in {time.time() - start:.0f} s")


if __name__ == "__main__":
  main()
