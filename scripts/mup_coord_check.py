"""muP coordinate check: how much the logits move after a few AdamW steps, as the ViT gets wider, under
the standard parametrisation (SP) and under muP (base width 64). Under muP the curve stays flat.

  python scripts/mup_coord_check.py [--widths 64,128,256,512,1024] [--steps 3] [--out mup_coord_check.png]
"""

import matplotlib
import sys

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402

from fractalpre import optim, util  # noqa: E402
from fractalpre.models import vit  # noqa: E402
from fractalpre.optim import mup
from fractalpre.studies import mup_coords


def main():
  parser = util.ArgumentParser(description=__doc__)
  parser.add_argument("--widths", default="64,128,256,512,1024", help="comma-separated ViT widths")
  parser.add_argument("--base", type=int, default=64, help="muP base width")
  parser.add_argument("--steps", type=int, default=3, help="training steps per width")
  parser.add_argument("--lr", type=float, default=1e-3, help="learning rate")
  parser.add_argument("--out", default="mup_coord_check.png", help="output plot")
  args = parser.parse_args()
  widths = [int(w) for w in args.widths.split(",")]
  rng = np.random.default_rng(0)
  images, labels = rng.normal(size=(32, 16, 16, 3)).astype(np.float32), rng.integers(0, 10, 32)
  cfg = ml_collections.ConfigDict(dict(optimizer="adamw", lr=args.lr, weight_decay=0.0, warmup_steps=0))
  make = lambda w, on: vit.ViT(num_classes=10, patch=4, width=w, depth=2, mlp_dim=4 * w, heads=4, pool="gap",
                               mup_base_width=args.base if on else 0)
  params = {w: mup.init_params(make(w, False), images) for w in widths}
  spread = {}
  for name, on in (("SP", False), ("muP", True)):
    tx_for = lambda w, p, on=on: optim.make(cfg, 10, update_scales=mup.scales_for(make(w, True), args.base,
                                                                                   (1, 16, 16, 3)) if on else None)
    spread[name] = mup_coords.logit_update_spread(lambda w, on=on: make(w, on), widths, (images, labels), tx_for,
                                           steps=args.steps, params_for=params.get)
  print(f"std of the change in logits after {args.steps} AdamW steps (lr {args.lr}), ViT depth 2, base width {args.base}")
  print("| width | " + " | ".join(spread) + " |\n|---:|" + "---:|" * len(spread))
  for w in widths:
    print(f"| {w} | " + " | ".join(f"{spread[n][w]:.4f}" for n in spread) + " |")
  for n, s in spread.items():
    print(f"{n}: max / min over widths = {max(s.values()) / min(s.values()):.2f}")
  plt.figure(figsize=(5, 3.5))
  for n, s in spread.items():
    plt.plot(widths, [s[w] for w in widths], "o-", label=n)
  plt.xscale("log", base=2)
  plt.yscale("log")
  plt.xlabel("width")
  plt.ylabel("std of logit change")
  plt.legend()
  plt.tight_layout()
  plt.savefig(args.out, dpi=120)
  print(f"wrote {args.out}")


if __name__ == "__main__":
  with util.one_line_exits("mup_coord_check.py"):
    sys.exit(main())
