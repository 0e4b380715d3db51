"""Checks an exported checkpoint against timm itself: our Flax logits vs timm's on the same images.

  python scripts/check_timm_export.py --checkpoint WORKDIR [--out /tmp/weights.safetensors]

Needs torch and timm (`pip install torch timm`; neither is a dependency of fractalpre). Exports the
checkpoint with `fractalpre export`, builds `timm.create_model(architecture, num_classes=K, **model_args)`
from the written JSON (for a stock class-token ViT, model_args is empty: the model a timm user names),
loads the safetensors file with strict key checking and compares logits on random images.
Exit status 1 when they differ by more than --tolerance (relative to the largest logit, at least 1).
"""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import ml_collections
import numpy as np

from fractalpre import export, util
from fractalpre.training import checkpoints, workdir_claim
from fractalpre.training.classification import model_from_config


def main(argv=None) -> int:
  parser = util.ArgumentParser(description=__doc__)
  parser.add_argument("--checkpoint", required=True, help="a training workdir")
  parser.add_argument("--out", default=None, help="where to write the export (default: a temporary folder)")
  parser.add_argument("--images", type=int, default=4, help="random test images")
  parser.add_argument("--tolerance", type=float, default=1e-4, help="largest allowed relative logit difference")
  args = parser.parse_args(argv)
  try:
    import timm
    import torch
    from safetensors.torch import load_file
  except ImportError as e:
    return util.fail(f"check_timm_export: error: needs torch and timm ({e}); pip install torch timm")
  out = Path(args.out or Path(tempfile.mkdtemp()) / "weights.safetensors")
  try:
    weights, meta = export.export(args.checkpoint, out)
  except util.UsageError as e:
    return util.fail(f"check_timm_export: error: {e}")
  hub = json.loads(meta.read_text())
  net = timm.create_model(hub["architecture"], pretrained=False, num_classes=hub["num_classes"], **hub["model_args"])
  net.load_state_dict(load_file(weights), strict=True)
  net.eval()

  config = ml_collections.ConfigDict(json.loads((Path(args.checkpoint) / workdir_claim.CONFIG).read_text()))
  state = checkpoints.load_state(args.checkpoint)
  model = model_from_config(config, hub["num_classes"])
  variables = {"params": state["params"], **({"batch_stats": state["batch_stats"]} if state["batch_stats"] else {})}
  size = config.image_size
  images = np.random.default_rng(0).uniform(-1, 1, (args.images, size, size, 3)).astype(np.float32)
  ours = np.asarray(model.apply(variables, images, train=False))
  # timm's own folder layout, loaded the way a timm user loads a local model
  folder = out.parent / "timm_local_dir"
  export.export(args.checkpoint, folder)
  local = timm.create_model(f"local-dir:{folder}", pretrained=True)
  local.eval()
  worst = 0.0
  for label, candidate in ((f"create_model({hub['architecture']!r}, num_classes={hub['num_classes']}"
                            f"{', **' + json.dumps(hub['model_args']) if hub['model_args'] else ''})", net),
                           ("create_model('local-dir:FOLDER', pretrained=True)", local)):
    with torch.no_grad():
      theirs = candidate(torch.from_numpy(images.transpose(0, 3, 1, 2).copy())).numpy()
    error = float(np.max(np.abs(ours - theirs)) / max(1.0, float(np.max(np.abs(theirs)))))
    worst = max(worst, error)
    print(f"timm {timm.__version__} {label} ({sum(p.numel() for p in candidate.parameters())} parameters): "
          f"largest logit difference {error:.2e} of max(1, |logit|) (tolerance {args.tolerance:g})")
  return 0 if worst <= args.tolerance else 1


if __name__ == "__main__":
  with util.one_line_exits("check_timm_export.py"):
    sys.exit(main())
