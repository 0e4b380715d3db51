"""`fractalpre generate` writes a fractal dataset to disk; `fractalpre preview` writes a PNG grid.

Bad usage prints one line naming the argument and what is allowed, and exits with status 2.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

DATASETS = ("1p-frac", "fractaldb")


class _Parser(argparse.ArgumentParser):
  """argparse that reports errors on one line, without the usage block."""

  def error(self, message):
    raise SystemExit(_fail(f"{self.prog}: error: {message}"))


# Library parameter names -> the flags that set them, so errors name what the user typed.
_FLAGS = {"num_classes": "--classes", "instances_per_class": "--instances", "size": "--size",
          "points": "--points", "delta": "--delta", "sigma": "--sigma", "seed": "--seed", "background": "--background"}


def _fail(message: str) -> int:
  print(message, file=sys.stderr)
  return 2


def _usage_error(command: str, error: Exception) -> int:
  first, _, rest = str(error).partition(" ")
  return _fail(f"fractalpre {command}: error: {_FLAGS.get(first, first)} {rest}")


def _add_source_args(p: argparse.ArgumentParser) -> None:
  p.add_argument("--dataset", choices=DATASETS, default="1p-frac")
  p.add_argument("--classes", type=int, default=None, help="number of categories (default 1000)")
  p.add_argument("--instances", type=int, default=None,
                 help="images per category (default: 1 for 1p-frac, 1000 for fractaldb)")
  p.add_argument("--size", type=int, default=None, help="image side in pixels (default 224 / 362)")
  p.add_argument("--points", type=int, default=None, help="chaos-game points (default 100k / 200k)")
  p.add_argument("--delta", type=float, default=0.1, help="1p-frac perturbation strength")
  p.add_argument("--sigma", type=float, default=3.5, help="1p-frac base sigma-factor, in (0, 3N)")
  p.add_argument("--perturbation", choices=("multiplicative", "additive"), default="multiplicative")
  p.add_argument("--mode", choices=("patch", "mask", "binary", "density"), default="patch")
  p.add_argument("--color", action="store_true", help="colourise (REFERENCE A5)")
  p.add_argument("--background", action="store_true", help="plasma background (needs --color)")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--workers", type=int, default=None, help="threads (default: all cores)")


def _source(args):
  from fractalpre import datasets
  common = {k: v for k, v in dict(size=args.size, points=args.points).items() if v is not None}
  common.update(seed=args.seed, mode=args.mode, color=args.color, background=args.background)
  if args.dataset == "1p-frac":
    return datasets.OnePFrac(num_classes=1000 if args.classes is None else args.classes,
                             instances_per_class=args.instances or 1, delta=args.delta, sigma=args.sigma,
                             perturbation=args.perturbation, **common)
  return datasets.FractalDB(num_classes=1000 if args.classes is None else args.classes,
                            instances_per_class=1000 if args.instances is None else args.instances, **common)


def _set_workers(workers: int | None) -> int:
  import numba
  if workers is None:
    return numba.get_num_threads()
  if not 1 <= workers <= numba.config.NUMBA_NUM_THREADS:
    raise ValueError(f"--workers must be in [1, {numba.config.NUMBA_NUM_THREADS}], got {workers}")
  numba.set_num_threads(workers)
  return workers


def _generate(args) -> int:
  from fractalpre import export
  try:
    shard = export.parse_shard(args.shard)
    workers = _set_workers(args.workers)
    ds = _source(args)
    export.export(ds, args.out, args.format, shard, workers, progress=not args.quiet)
  except (ValueError, RuntimeError) as e:
    return _usage_error("generate", e)
  except OSError as e:
    return _fail(f"fractalpre generate: error: cannot write --out {args.out}: {e.strerror or e}")
  return 0


def _preview(args) -> int:
  from fractalpre import export
  try:
    _set_workers(args.workers)
    if args.count <= 0:
      raise ValueError(f"--count must be > 0, got {args.count}")
    ds = _source(args)
    out = Path(args.out)
    if out.suffix.lower() != ".png":
      raise ValueError(f"--out must be a .png file, got {args.out}")
    count = min(args.count, len(ds))
    step = max(1, len(ds) // count)
    images, _ = ds.batch([i * step for i in range(count)])
  except (ValueError, RuntimeError) as e:
    return _usage_error("preview", e)
  cols = int(np.ceil(np.sqrt(count)))
  rows = int(np.ceil(count / cols))
  s = images.shape[1]
  grid = np.full((rows * (s + 2), cols * (s + 2)) + images.shape[3:], 255, np.uint8)
  for j, image in enumerate(images):
    r, c = divmod(j, cols)
    grid[r * (s + 2) + 1:r * (s + 2) + 1 + s, c * (s + 2) + 1:c * (s + 2) + 1 + s] = image
  out.parent.mkdir(parents=True, exist_ok=True)
  export.write_atomic(out, export.png_bytes(grid))
  print(f"{out}: {count} {ds.name} samples")
  return 0


def main(argv=None) -> int:
  parser = _Parser(prog="fractalpre", description=__doc__)
  sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
  gen = sub.add_parser("generate", help="write a dataset (ImageFolder PNGs or TFDS)")
  _add_source_args(gen)
  gen.add_argument("--out", required=True, help="output folder")
  gen.add_argument("--format", choices=("png", "tfds"), default="png")
  gen.add_argument("--shard", default="0/1", help="i/n: write shard i of n (default 0/1: everything)")
  gen.add_argument("--quiet", action="store_true", help="no progress bar")
  gen.set_defaults(run=_generate)
  pre = sub.add_parser("preview", help="write a PNG grid of samples")
  _add_source_args(pre)
  pre.add_argument("--out", required=True, help="output .png")
  pre.add_argument("--count", type=int, default=16)
  pre.set_defaults(run=_preview)
  args = parser.parse_args(argv)
  return args.run(args)


if __name__ == "__main__":
  sys.exit(main())
