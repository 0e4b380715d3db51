"""Does curation pay off? The same SR model, the same budget, trained on (a) a random subset of a pool of
training tiles, (b) the subset `superres` keeps, of the same size, and (c) the whole pool; evaluated by
PSNR/SSIM (Y channel) on held-out photos.

  python scripts/sr_curation_experiment.py --out sr_curation_out [--steps 1200] [--seeds 1]

The pool: the bundled scikit-image training photos (fractalpre.configs.common.TRAIN_PHOTOS) cut into tiles; a fraction
of the tiles is JPEG re-encoded at low quality and every tile is stored as PNG, so compression has to be
found from the pixels (blockiness), as in DiverSeg. Curation drops tiles whose blockiness is over the
threshold or undefined (flat), then keeps the ones with at least the pool's median segment count
(within-image diversity). Writes results.json and results.md in --out; re-running reuses finished parts.
"""
import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from fractalpre import util
from fractalpre.configs import common
from fractalpre.training import STOPS, config_files
from superres.curation import curate, metrics, scoring
from superres.sr import data
from superres.sr import trainer as sr_trainer


def make_pool(out: Path, tile: int, compressed_fraction: float, quality: tuple[int, int], seed: int) -> dict:
  """Tiles of the training photos as PNGs; returns {path: JPEG quality applied or 0}."""
  out.mkdir(parents=True, exist_ok=True)
  rng = np.random.default_rng(seed)
  truth = {}
  photos = data.Photos(common.TRAIN_PHOTOS.split(","))
  for name, image in zip(photos.names, photos.images):
    h, w = image.shape[:2]
    for r in range(h // tile):
      for c in range(w // tile):
        crop = image[r * tile:(r + 1) * tile, c * tile:(c + 1) * tile]
        q = int(rng.integers(quality[0], quality[1] + 1)) if rng.random() < compressed_fraction else 0
        if q:
          crop = metrics.decode(metrics.encode_jpeg(crop, q))
        path = out / f"{name}_{r:02d}_{c:02d}.png"
        if not path.exists():
          Image.fromarray(crop).save(path)
        truth[str(path.resolve())] = q
  return truth


def subsets(rows: list[dict], max_blockiness: float, seed: int) -> dict[str, list[str]]:
  """'curated' (superres's decision), 'random' (same size, uniform from the pool) and 'pool' (all)."""
  segments = np.array([float(r["segments"]) for r in rows if r.get("segments") not in (None, "")])
  decisions = curate.decide(rows, min_segments=float(np.median(segments)), max_blockiness=max_blockiness)
  curated = [d["path"] for d in decisions if d["keep"]]
  everything = [r["path"] for r in rows]
  random = sorted(np.random.default_rng(seed).choice(everything, size=len(curated), replace=False).tolist())
  return {"random": random, "curated": curated, "pool": everything}


def composition(paths: list[str], truth: dict, rows_by_path: dict) -> dict:
  flat = [float(rows_by_path[p]["flat_fraction"]) for p in paths]
  return {"tiles": len(paths), "compressed": float(np.mean([truth[p] > 0 for p in paths])),
          "mean_flat_fraction": float(np.mean(flat)),
          "mean_segments": float(np.mean([float(rows_by_path[p]["segments"]) for p in paths]))}


def main():
  parser = util.ArgumentParser(description=__doc__)
  parser.add_argument("--out", default="sr_curation_out", help="pool, workdirs, table and plots")
  parser.add_argument("--tile", type=int, default=96, help="HR tile size of the pool")
  parser.add_argument("--compressed", type=float, default=0.3, help="fraction of tiles JPEG re-encoded")
  parser.add_argument("--quality", type=int, nargs=2, default=(10, 30), help="JPEG quality range of those")
  parser.add_argument("--max-blockiness", type=float, default=60.0,
                      help="between clean tiles' 95th percentile (48) and JPEG q<=30 tiles' minimum (129) here")
  parser.add_argument("--model", default="edsr_baseline", help="with the runlocal size: 32 features x 4 blocks")
  parser.add_argument("--steps", type=int, default=1200, help="SR training steps per run")
  parser.add_argument("--seeds", type=int, default=1, help="training seeds per subset (results: mean and each)")
  args = parser.parse_args()
  out = Path(args.out)
  start = time.time()

  truth = make_pool(out / "pool", args.tile, args.compressed, tuple(args.quality), seed=0)
  rows = scoring.score_folder(out / "pool", out / "scores.csv", progress=True)
  rows_by_path = {r["path"]: r for r in rows}
  sets = subsets(rows, args.max_blockiness, seed=0)
  for name, paths in sets.items():
    (out / f"{name}.json").write_text(json.dumps([{"path": p, "keep": True} for p in paths]))
  print(f"pool {len(rows)} tiles ({100 * np.mean([q > 0 for q in truth.values()]):.0f}% compressed); "
        f"curated and random subsets: {len(sets['curated'])} tiles each; scored in {time.time() - start:.0f} s")

  results = {}
  for name in sets:
    runs = []
    for seed in range(args.seeds):
      config = config_files.load_config(f"configs/sr_edsr.py:runlocal,model={args.model},kind=manifest,"
                                 f"path={out / f'{name}.json'},steps={args.steps}")
      config.seed = seed
      config.data.seed = seed
      config.checkpoint_every = config.eval_every = args.steps
      t0 = time.time()
      final = sr_trainer.train_and_evaluate(config, out / "runs" / f"{name}_seed{seed}")
      runs.append({k[5:]: v for k, v in final.items() if k.startswith("eval_")} | {"seconds": time.time() - t0})
    results[name] = {"runs": runs, **composition(sets[name], truth, rows_by_path),
                     **{k: float(np.mean([r[k] for r in runs])) for k in ("psnr", "ssim", "bicubic_psnr")}}

  summary = {"settings": vars(args), "eval_photos": common.EVAL_PHOTOS, "results": results,
             "total_seconds": time.time() - start}
  (out / "results.json").write_text(json.dumps(summary, indent=1))
  lines = [f"x2 {args.model} (runlocal size), {args.steps} steps x batch 16, {args.seeds} seed(s); "
           f"evaluated on {common.EVAL_PHOTOS} (Y channel, border 2)", "",
           "| training set | tiles | compressed | mean flat fraction | PSNR (dB) | SSIM | per seed PSNR |",
           "|---|---:|---:|---:|---:|---:|---|"]
  for name, r in results.items():
    per_seed = ", ".join(f"{x['psnr']:.3f}" for x in r["runs"])
    lines.append(f"| {name} | {r['tiles']} | {100 * r['compressed']:.0f}% | {r['mean_flat_fraction']:.2f} | "
                 f"{r['psnr']:.3f} | {r['ssim']:.4f} | {per_seed} |")
  lines.append(f"| bicubic upsampling | | | | {results['pool']['bicubic_psnr']:.3f} | | |")
  lines.append(f"\ntotal {summary['total_seconds'] / 60:.1f} min")
  (out / "results.md").write_text("\n".join(lines) + "\n")
  print("\n".join(lines))


if __name__ == "__main__":
  with util.one_line_exits("sr_curation_experiment.py", STOPS):
    sys.exit(main())
