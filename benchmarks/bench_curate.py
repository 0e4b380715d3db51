"""Curation scoring speed: full per-image scoring of 512 px JPEG photos on one process and on all
cores (`superres score`, end to end: listing, decoding, every score, table writes), the time of each
score on one image, and vectorised blockiness against the authors' per-block loop.

  python benchmarks/bench_curate.py [--images 96] [--repeats 3]
"""
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from fractalpre.studies.machine import describe
from fractalpre import util
from superres.curation import metrics, quality, scoring


def median_time(fn, repeats):
  fn()
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t)
  return statistics.median(times)


def make_photos(folder: Path, count: int) -> None:
  """512 x 512 crops of the bundled photos (upscaled where smaller), JPEG q90."""
  photos = quality.bundled_photos()
  rng = np.random.default_rng(0)
  for i in range(count):
    photo = photos[i % len(photos)]
    h, w = photo.shape[:2]
    side = min(h, w)
    y, x = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
    crop = Image.fromarray(photo[y:y + side, x:x + side]).resize((512, 512), Image.Resampling.BILINEAR)
    crop.save(folder / f"{i:04d}.jpg", quality=90)


def main():
  parser = util.ArgumentParser(description=__doc__)
  parser.add_argument("--images", type=int, default=96, help="images to score")
  parser.add_argument("--repeats", type=int, default=3, help="timed runs (the median is reported)")
  args = parser.parse_args()
  cores = os.cpu_count()
  print(f"# bench_curate on {describe()}")
  with tempfile.TemporaryDirectory() as tmp:
    folder = Path(tmp) / "photos"
    folder.mkdir()
    make_photos(folder, args.images)
    print("\n| workers | images/s (512 px, all scores) | per core |\n|---:|---:|---:|")
    for workers in sorted({1, cores}):
      def run():
        out = Path(tmp) / f"scores_{workers}.csv"
        out.unlink(missing_ok=True)
        scoring.score_folder(folder, out, workers=workers, progress=False)
      rate = args.images / median_time(run, args.repeats)
      print(f"| {workers} | {rate:.1f} | {rate / workers:.1f} |", flush=True)

    image = scoring.load_rgb(folder / "0000.jpg")[0]
    seg = metrics.FelzenszwalbSegmenter()
    parts = {
        "decode (Pillow)": lambda: scoring.load_rgb(folder / "0000.jpg"),
        "blockiness": lambda: metrics.blockiness(image),
        "sharpness": lambda: metrics.sharpness(image),
        "entropy": lambda: metrics.entropy(image),
        "flat_fraction": lambda: metrics.flat_fraction(image),
        "segments (Felzenszwalb, 128x128 area)": lambda: seg.count(image),
        "perceptual hash": lambda: metrics.perceptual_hash(image),
    }
    print("\n| score (one 512 px image) | ms |\n|---|---:|")
    for name, fn in parts.items():
      print(f"| {name} | {1e3 * median_time(fn, 5 * args.repeats):.1f} |")

  jpeg = metrics.decode(metrics.encode_jpeg(quality.bundled_photos()[0], 75))
  fast = median_time(lambda: metrics.blockiness(jpeg), 5 * args.repeats)
  slow = median_time(lambda: metrics.blockiness_per_block(jpeg), 1)
  assert abs(metrics.blockiness(jpeg) - metrics.blockiness_per_block(jpeg)) < 1e-9
  print(f"\n| blockiness, astronaut q75 512 px | ms |\n|---|---:|\n| per-block loop (authors' definition) | "
        f"{1e3 * slow:.0f} |\n| vectorised | {1e3 * fast:.1f} |\n| speed-up | {slow / fast:.0f}x |")


if __name__ == "__main__":
  with util.one_line_exits("bench_curate.py"):
    sys.exit(main())
