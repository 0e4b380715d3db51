"""`fractalpre generate` writes a fractal dataset to disk; `fractalpre preview` writes a PNG grid;
`fractalpre export` writes a trained checkpoint's weights for timm / PyTorch.

Bad usage prints one line naming the argument and what is allowed, and exits with status 2.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import fractalpre
from fractalpre import util
from fractalpre.util import fail

DATASETS = ("1p-frac", "fractaldb")

# Library parameter names -> the flags that set them, so errors name what the user typed.
_FLAGS = {"num_classes": "--classes", "instances_per_class": "--instances", "size": "--size",
          "points": "--points", "delta": "--delta", "sigma": "--sigma", "seed": "--seed", "background": "--background",
          "test_instances": "--test-instances"}
_ONE_P_FRAC_ONLY = ("delta", "sigma", "perturbation")


def _usage_error(command: str, error: Exception) -> int:
  first, _, rest = str(error).partition(" ")
  return fail(f"fractalpre {command}: error: {_FLAGS.get(first, first)} {rest}")


def _add_source_args(p: argparse.ArgumentParser) -> None:
  p.add_argument("--dataset", choices=DATASETS, default="1p-frac", help="which generator")
  p.add_argument("--classes", type=int, default=None, help="number of categories (default 1000)")
  p.add_argument("--instances", type=int, default=None,
                 help="images per category (default: 1 for 1p-frac, 1000 for fractaldb)")
  p.add_argument("--size", type=int, default=None, help="image side in pixels (default 224 / 362)")
  p.add_argument("--points", type=int, default=None, help="chaos-game points (default 100k / 200k)")
  p.add_argument("--delta", type=float, default=None, help="1p-frac perturbation strength (default 0.1)")
  p.add_argument("--sigma", type=float, default=None, help="1p-frac base sigma-factor, in (0, 3N) (default 3.5)")
  p.add_argument("--perturbation", choices=("multiplicative", "additive"), default=None,
                 help="1p-frac perturbation (default multiplicative)")
  p.add_argument("--mode", choices=("patch", "mask", "binary", "density"), default="patch",
                 help="how points become pixels (FractalDB's patch rendering by default)")
  p.add_argument("--color", action="store_true", help="colourise (a random hue per image, FractalDB-style)")
  p.add_argument("--background", action="store_true", help="plasma background (needs --color)")
  p.add_argument("--seed", type=int, default=0, help="every image is a pure function of (seed, class, instance)")
  p.add_argument("--workers", type=int, default=None, help="threads (default: all cores)")


def _source(args):
  """The source the flags name; a flag left out takes the source's own default (one home for each)."""
  from fractalpre import fractals
  flags = dict(num_classes=args.classes, instances_per_class=args.instances, size=args.size, points=args.points)
  given = {k: v for k, v in flags.items() if v is not None}
  given.update(seed=args.seed, mode=args.mode, color=args.color, background=args.background)
  if args.dataset == "1p-frac":
    one_p = dict(delta=args.delta, sigma=args.sigma, perturbation=args.perturbation)
    return fractals.OnePFrac(**given, **{k: v for k, v in one_p.items() if v is not None})
  named = [f"--{name}" for name in _ONE_P_FRAC_ONLY if getattr(args, name) is not None]
  if named:
    raise ValueError(f"{', '.join(named)}: only for --dataset 1p-frac (FractalDB searches its categories; "
                     "it perturbs no base system)")
  return fractals.FractalDB(**given)


def _set_workers(workers: int | None) -> int:
  import numba
  if workers is None:
    return numba.get_num_threads()
  if not 1 <= workers <= numba.config.NUMBA_NUM_THREADS:
    raise ValueError(f"--workers must be in [1, {numba.config.NUMBA_NUM_THREADS}], got {workers}")
  numba.set_num_threads(workers)
  return workers


def _generate(args) -> int:
  from fractalpre.fractals import writers
  try:
    shard = writers.parse_shard(args.shard)
    workers = _set_workers(args.workers)
    ds = _source(args)
    if args.test_instances < 0:
      raise ValueError(f"--test-instances must be >= 0, got {args.test_instances}")
    writers.write_dataset(ds, args.out, args.format, shard, workers, progress=not args.quiet,
                  test_instances=args.test_instances)
  except (ValueError, RuntimeError) as e:
    return _usage_error("generate", e)
  except OSError as e:
    return fail(f"fractalpre generate: error: cannot write --out {args.out}: {e.strerror or e}")
  return 0


def _preview(args) -> int:
  try:
    _set_workers(args.workers)
    if args.count <= 0:
      raise ValueError(f"--count must be > 0, got {args.count}")
    ds = _source(args)
    out = Path(args.out)
    if out.suffix.lower() != ".png":
      raise ValueError(f"--out must be a .png file, got {args.out}")
    util.check_writable(out, "--out")
    count = min(args.count, len(ds))
    step = max(1, len(ds) // count)
    images, _ = ds.batch([i * step for i in range(count)])
  except (ValueError, RuntimeError) as e:
    return _usage_error("preview", e)
  out.parent.mkdir(parents=True, exist_ok=True)
  util.write_atomic(out, util.png_bytes(util.image_grid(images, border=1)))
  print(f"{out}: {count} {ds.name} samples")
  return 0


def _export(args) -> int:
  from fractalpre import export
  try:
    out, meta = export.export(args.checkpoint, args.out, args.format)
  except util.UsageError as e:
    return fail(f"fractalpre export: error: {e}")
  print(f"{out}: timm weights; {meta}: model config and preprocessing")
  return 0


def main(argv=None) -> int:
  parser = util.ArgumentParser(prog="fractalpre", description=__doc__)
  parser.add_argument("--version", action="version", version=f"fractalpre {fractalpre.__version__}")
  sub = parser.add_subparsers(dest="command", required=True, parser_class=util.ArgumentParser)
  gen = sub.add_parser("generate", help="write a dataset (ImageFolder PNGs or TFDS)")
  _add_source_args(gen)
  gen.add_argument("--out", required=True, help="output folder")
  gen.add_argument("--format", choices=("png", "tfds"), default="png",
                   help="png: OUT/<class>/<instance>.png (ImageFolder); tfds: array_record shards")
  gen.add_argument("--shard", default="0/1", help="i/n: write shard i of n (default 0/1: everything)")
  gen.add_argument("--test-instances", type=int, default=0,
                   help="also write a held-out test split of this many further instances per class (default 0)")
  gen.add_argument("--quiet", action="store_true", help="no progress bar")
  gen.set_defaults(run=_generate)
  pre = sub.add_parser("preview", help="write a PNG grid of samples")
  _add_source_args(pre)
  pre.add_argument("--out", required=True, help="output .png")
  pre.add_argument("--count", type=int, default=16, help="samples in the grid")
  pre.set_defaults(run=_preview)
  exp = sub.add_parser("export", help="write a checkpoint's weights as safetensors in timm's layout")
  exp.add_argument("--checkpoint", required=True, help="a training workdir (its newest loadable checkpoint)")
  exp.add_argument("--format", choices=("timm",), default="timm", help="timm: names and layouts of timm's models")
  exp.add_argument("--out", required=True, help="FILE.safetensors (FILE.json beside it), or a folder: "
                   "FOLDER/model.safetensors + FOLDER/config.json, timm's layout for create_model('local-dir:FOLDER')")
  exp.set_defaults(run=_export)
  args = parser.parse_args(argv)
  return args.run(args)


if __name__ == "__main__":
  sys.exit(main())
