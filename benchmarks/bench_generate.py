"""Fractal generation throughput: 1p-frac defaults (N = 2, sigma 3.5, 100k points, per-point 3x3
patches, grayscale) at 224 and 512 px, on one thread and on all cores; medians of several runs.

  python benchmarks/bench_generate.py [--repeats 5] [--images 256]

Rows: `kernel` times `render.render_batch` on resolved class systems into a reused output buffer
(`out=`: no page faults); `dataset` times
`OnePFrac.batch` (keys, systems and the kernel); `png` adds PNG encoding as `fractalpre generate` does.
"""
import argparse
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numba
import numpy as np

from fractalpre import datasets, export
from machine import describe


def rate(fn, images, repeats):
  fn()  # compile / warm up
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return images / statistics.median(times)


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--images", type=int, default=256)
  args = parser.parse_args()
  cores = numba.config.NUMBA_NUM_THREADS
  print(f"# bench_generate on {describe()}")
  print(f"| size | threads | kernel img/s | dataset img/s | png img/s |")
  print(f"|---:|---:|---:|---:|---:|")
  for size in (224, 512):
    ds = datasets.OnePFrac(num_classes=args.images, size=size)
    idx = list(range(args.images))
    ds.resolve(idx)
    systems = [ds.class_system(c).system for c in idx]
    probs = [ds.class_system(c).probabilities for c in idx]
    keys = [ds._instance(c, 0)[2] for c in idx]
    for threads in sorted({1, cores}):
      numba.set_num_threads(threads)
      buffer = np.empty((args.images, size, size), np.uint8)
      kernel = rate(lambda: ds.settings.draw(systems, keys, probs, out=buffer), args.images, args.repeats)
      batch = rate(lambda: ds.batch(idx), args.images, args.repeats)

      def to_png():
        images, _ = ds.batch(idx)
        with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(threads) as pool:
          list(pool.map(lambda j: export.write_atomic(Path(tmp) / f"{j}.png", export.png_bytes(images[j])), idx))

      png = rate(to_png, args.images, max(1, args.repeats // 2))
      print(f"| {size} | {threads} | {kernel:.0f} | {batch:.0f} | {png:.0f} |", flush=True)


if __name__ == "__main__":
  main()
