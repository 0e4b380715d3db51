"""`superres score | curate | estimate-quality | report`: SR training-data curation from the shell.

Bad usage prints one line naming the argument and what is allowed, and exits with status 2.
"""
from __future__ import annotations

import io
import json
import math
import sys
from pathlib import Path

import numpy as np

import fractalpre
from fractalpre import util
from fractalpre.util import provenance
from superres.curation import curate, scoring, table


def _score(args) -> None:
  if args.max_pixels < 1:
    raise ValueError(f"--max-pixels must be >= 1, got {args.max_pixels}")
  scoring.score_folder(args.dir, args.out, args.workers, args.follow_symlinks, args.max_pixels,
                       progress=not args.quiet)
  rows = table.read(args.out)
  errors = sum(1 for r in rows if r.get("error"))
  print(f"{args.out}: {len(rows)} files, {errors} with errors")


def _check_thresholds(args) -> None:
  """Each curation threshold a finite number in its range: a NaN rule would keep or drop everything."""
  bounds = {"min_segments": (0, None), "max_blockiness": (0, None), "min_quality": (0, 100), "min_megapixels": (0, None)}
  for key, (low, high) in bounds.items():
    value = getattr(args, key)
    if value is None:
      continue
    allowed = f"[{low}, {high}]" if high is not None else f">= {low}"
    if not math.isfinite(value) or value < low or (high is not None and value > high):
      raise ValueError(f"--{key.replace('_', '-')} must be a finite number {allowed}, got {value:g}")


def _curate(args) -> None:
  _check_thresholds(args)
  rows = table.read(args.scores)
  if args.strata and args.strata_by not in scoring.SCORE_COLUMNS:
    raise ValueError(f"--strata-by must be one of {scoring.SCORE_COLUMNS}, got {args.strata_by!r}")
  decisions = curate.decide(rows, args.min_segments, args.max_blockiness, args.min_quality, args.min_megapixels,
                            args.dedup_threshold if args.dedup else None)
  if args.strata:
    curate.stratify(decisions, args.strata_by, args.strata)
  out = Path(args.out)
  kept = sum(d["keep"] for d in decisions)
  if out.suffix in curate.MANIFEST_SUFFIXES:
    curate.write_manifest(decisions, out, scoring.COLUMNS)
  else:
    settings = {k: getattr(args, k) for k in ("min_segments", "max_blockiness", "min_quality", "min_megapixels",
                                               "dedup", "dedup_threshold", "strata", "strata_by", "link", "format")}
    record = provenance.fingerprint(settings, {"scores": provenance.file_digest(args.scores)})
    for root in sorted({d["root"] for d in decisions if d.get("root")}):
      if out.resolve().is_relative_to(root):
        raise ValueError(f"--out {out} is inside the folder that was scored ({root}): its images would be "
                         "scored and curated again; give a folder outside it")
    with util.OutputFolder(out, "superres curate", record, args.replace) as folder:
      if args.format == "tfds":
        _write_tfds(decisions, folder)
      else:
        curate.write_folder(decisions, folder, args.link)
  print(f"{out}: kept {kept} of {len(decisions)}")


TFDS_METADATA = ("dataset_info.json", "features.json")  # what tfds.folder_dataset.write_metadata writes


def _write_tfds(decisions, folder: util.OutputFolder) -> None:
  """Kept images as one TFDS split (PNG-encoded RGB, the source path, the stratum or -1)."""
  import tensorflow_datasets as tfds

  from fractalpre.fractals import writers
  features = tfds.features.FeaturesDict({"image": tfds.features.Image(shape=(None, None, 3)),
                                         "path": tfds.features.Text(), "stratum": tfds.features.Scalar(dtype=np.int64)})
  kept = [d for d in decisions if d["keep"]]
  curate.output_names(decisions)  # the same refusals as a folder: rows outside the scored folder
  shards, lengths, per_shard = [], [], 256
  count = max(1, -(-len(kept) // per_shard))
  names = [writers.tfds_shard_name("superres_curated", k, count) for k in range(count)]
  for name in names + list(TFDS_METADATA):
    folder.claim(name)
  folder.begin()
  for k, name in enumerate(names):
    part = kept[k * per_shard:(k + 1) * per_shard]
    path = folder.folder / name
    shards.append(path)
    lengths.append(len(part))
    if folder.fresh(name):  # the same curation of the same table: the same shard
      continue
    examples = [{"image": io.BytesIO(util.png_bytes(scoring.load_rgb(Path(d["path"]))[0])), "path": d["path"],
                 "stratum": -1 if d.get("stratum") is None else int(d["stratum"])} for d in part]
    writers.write_tfds_shard(features, examples, path)
  writers.write_tfds_metadata(folder.folder, features, {"train": (shards, lengths)}, "images kept by superres curate")
  folder.finish()


def _estimate(args) -> None:
  from superres.curation import quality
  rows = table.read(args.scores)
  target = np.array([float(r["blockiness"]) for r in rows if r.get("blockiness") not in (None, "")])
  if args.reference:
    # The reference's own score cache sits beside SCORES unless named: never in the current folder.
    cache = Path(args.reference_scores or Path(args.scores).with_suffix(".reference.csv"))
    ref_rows = scoring.score_folder(args.reference, cache, progress=False)
    images = [scoring.load_rgb(Path(r["path"]))[0] for r in ref_rows if not r.get("error")]
  else:
    images = quality.bundled_photos()
  result = quality.estimate(target, quality.reference_scores(images))
  estimated = 100 * result["quality"]  # JPEG quality 0-100, like the files' own and curate --min-quality
  if args.json:
    print(json.dumps({"quality": estimated, "kl": result["kl"]}))
  else:
    verdict = "keep" if estimated >= args.threshold else "drop"
    print(f"estimated JPEG quality {estimated:.1f} ({verdict} at threshold {args.threshold:g}); "
          + ", ".join(f"KL(q={q})={d:.3f}" for q, d in result["kl"].items()))


def _report(args) -> None:
  from superres.curation import report
  rows = table.read(args.scores) if Path(args.scores).suffix != ".json" else json.loads(Path(args.scores).read_text())
  print(report.write_report(rows, args.out))


def _upscale(args) -> None:
  """IN (a file or a folder) -> OUT (a PNG file, or a folder of PNGs at the inputs' relative paths, with
  '.png' appended to names of other formats: a.jpg -> a.jpg.png; two inputs of one output name are refused).
  A folder OUT is written through util.OutputFolder: a rerun with the same checkpoint and tiling continues
  (outputs of unchanged inputs are kept, of changed ones redone, of removed ones removed), one with another is
  refused unless --replace; unreadable inputs are listed and skipped."""
  from superres.sr import data, upscale
  src, out = Path(args.input), Path(args.output)
  if not src.exists():
    raise ValueError(f"input {str(src)!r} does not exist")
  if src.is_dir():
    if out.exists() and not out.is_dir():
      raise ValueError(f"output {str(out)!r} must be a folder when the input is a folder")
    if out.resolve().is_relative_to(src.resolve()):
      raise ValueError(f"output {str(out)!r} is inside the input folder {str(src)!r} (its images would be "
                       "inputs of the next run); give a folder outside it")
    named = lambda rel: rel if rel.suffix.lower() == ".png" else rel.with_name(rel.name + ".png")
    inputs = [(p, named(p.relative_to(src.resolve()))) for p in data.folder_images(src)]
  else:
    if out.is_dir() or out.suffix.lower() != ".png":
      raise ValueError(f"output {str(out)!r} must be a .png file when the input is a file")
    util.check_writable(out, "OUT")
  upscaler = upscale.load(args.checkpoint, tile=args.tile, overlap=args.overlap, batch=args.batch)
  if not src.is_dir():
    _upscale_all(upscaler, [(src, out)], args.quiet)
    print(f"{out}: upscaled x{upscaler.scale}")
    return
  record = provenance.fingerprint({"tile": args.tile, "overlap": args.overlap}, {"checkpoint": upscaler.checkpoint})
  with util.OutputFolder(out, "superres upscale", record, args.replace, flag="OUT") as folder:
    pairs = [(p, name, folder.claim(name, str(p), util.output_folder.signature(p))) for p, name in inputs]
    folder.begin()
    todo = [(p, o) for p, name, o in pairs if not folder.fresh(name)]
    failed = _upscale_all(upscaler, todo, args.quiet or len(todo) < 2)
    folder.finish()
  print(f"{out}: {len(todo) - failed} upscaled x{upscaler.scale}, {len(pairs) - len(todo)} already there, "
        f"{failed} unreadable")


def _upscale_all(upscaler, pairs, quiet: bool) -> int:
  """Writes each (input, output) pair atomically; returns how many inputs could not be read."""
  from tqdm import tqdm
  failed = 0
  for path, target in tqdm(pairs, unit="img", disable=quiet):
    try:
      image = scoring.load_rgb(path)[0]
    except scoring.Unreadable as e:
      print(f"{path}: skipped: {e}", file=sys.stderr)
      target.unlink(missing_ok=True)  # never an older output beside the new result
      failed += 1
      continue
    target.parent.mkdir(parents=True, exist_ok=True)
    util.write_atomic(target, util.png_bytes(upscaler(image)))
  return failed


def main(argv=None) -> int:
  parser = util.ArgumentParser(prog="superres", description=__doc__)
  parser.add_argument("--version", action="version", version=f"superres (fractalpre {fractalpre.__version__})")
  sub = parser.add_subparsers(dest="command", required=True, parser_class=util.ArgumentParser)
  s = sub.add_parser("score", help="score every image under DIR")
  s.add_argument("dir", metavar="DIR", help="folder of images (searched recursively)")
  s.add_argument("--out", required=True, help="scores.csv or scores.parquet (also the resume cache)")
  s.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
  s.add_argument("--follow-symlinks", action="store_true", help="follow symlinks that leave DIR")
  s.add_argument("--max-pixels", type=int, default=scoring.DEFAULT_MAX_PIXELS,
                 help="larger images get an error row (decompression bombs)")
  s.add_argument("--quiet", action="store_true", help="no progress bar")
  s.set_defaults(run=_score)
  c = sub.add_parser("curate", help="keep/drop every image with its reason; write a folder, manifest or TFDS")
  c.add_argument("scores", metavar="SCORES", help="the score table `superres score` wrote")
  c.add_argument("--out", required=True, help="a folder, or a manifest ending in .csv, .parquet or .json")
  c.add_argument("--format", choices=("folder", "tfds"), default=None, help="for a folder --out (default folder)")
  c.add_argument("--link", choices=curate.LINKS, default="copy", help="how a folder --out holds the kept images")
  c.add_argument("--min-segments", type=float, help="minimum SLIC segment count (DiverSeg's diversity proxy)")
  c.add_argument("--max-blockiness", type=float, help="maximum 8x8 JPEG blockiness")
  c.add_argument("--min-quality", type=float, help="minimum JPEG quality (non-JPEG files pass)")
  c.add_argument("--min-megapixels", type=float, help="minimum image size in megapixels")
  c.add_argument("--dedup", action="store_true", help="drop near-duplicates, keeping the largest copy")
  c.add_argument("--dedup-threshold", type=int, default=10, help="Hamming distance of 64-bit hashes")
  c.add_argument("--strata", type=int, default=0, help="split kept images into K quantile strata")
  c.add_argument("--strata-by", default="segments", help="score column the strata are quantiles of")
  c.add_argument("--replace", action="store_true",
                 help="--out holds an earlier curation with other settings or scores: replace it")
  c.set_defaults(run=_curate)
  e = sub.add_parser("estimate-quality", help="dataset-level JPEG quality from blockiness (DiverSeg)")
  e.add_argument("scores", metavar="SCORES", help="the score table of the images to judge")
  e.add_argument("--reference", help="folder of reference images (default: photos bundled with scikit-image)")
  e.add_argument("--reference-scores", default=None,
                 help="the reference's score table (default: SCORES with .reference.csv for its suffix)")
  e.add_argument("--threshold", type=float, default=90.0, help="JPEG quality 0-100 to keep a source (DiverSeg: 90)")
  e.add_argument("--json", action="store_true", help="print the estimate as JSON")
  e.set_defaults(run=_estimate)
  r = sub.add_parser("report", help="histograms, scatter plots, stratum grids and report.md")
  r.add_argument("scores", metavar="SCORES", help="a score table or a curation manifest")
  r.add_argument("--out", required=True, help="folder for the plots and report.md")
  r.set_defaults(run=_report)
  u = sub.add_parser("upscale", help="apply a trained SR model (tiled) to an image or a folder")
  u.add_argument("input", metavar="IN", help="an image file or a folder of images")
  u.add_argument("output", metavar="OUT", help="a .png file, or a folder when IN is a folder")
  u.add_argument("--checkpoint", required=True, help="a superres.train workdir")
  u.add_argument("--tile", type=int, default=128, help="tile size in input pixels")
  u.add_argument("--overlap", type=int, default=16, help="input pixels kept clear of every tile cut")
  u.add_argument("--batch", type=int, default=8, help="tiles per model call")
  u.add_argument("--quiet", action="store_true", help="no progress bar")
  u.add_argument("--replace", action="store_true",
                 help="OUT holds the upscaling of another checkpoint or tiling: replace it")
  u.set_defaults(run=_upscale)
  args = parser.parse_args(argv)
  try:
    if getattr(args, "workers", None) is not None and args.workers < 1:
      raise ValueError(f"--workers must be >= 1, got {args.workers}")
    if getattr(args, "strata", 0) < 0:
      raise ValueError(f"--strata must be >= 0, got {args.strata}")
    if getattr(args, "dedup_threshold", 0) is not None and not 0 <= getattr(args, "dedup_threshold", 0) < 64:
      raise ValueError(f"--dedup-threshold must be in [0, 63], got {args.dedup_threshold}")
    if getattr(args, "threshold", 0) is not None and not 0 <= getattr(args, "threshold", 0) <= 100:
      raise ValueError(f"--threshold is a JPEG quality in [0, 100], got {args.threshold:g}")
    if args.command == "curate" and args.format and Path(args.out).suffix in curate.MANIFEST_SUFFIXES:
      raise ValueError(f"--format {args.format} writes a folder, but --out {args.out} names a manifest file; "
                       "give a folder, or drop --format")
    args.run(args)
  except (ValueError, FileNotFoundError) as e:
    return util.fail(f"superres {args.command}: error: {e}")
  except OSError as e:
    if not util.is_out_of_space(e):
      raise
    where = Path(e.filename).parent if getattr(e, "filename", None) else Path.cwd()
    print(f"superres {args.command}: error: no space left writing {e.filename or 'its output'} "
          f"({util.free_space(where)}; or a quota or file-size limit); what was finished is kept, and the same "
          "command continues", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
