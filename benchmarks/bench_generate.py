"""Fractal generation throughput: 1p-frac defaults (N = 2, sigma 3.5, 100k points, per-point 3x3
patches, grayscale) at 224 and 512 px, on one thread and on all cores; medians of several runs.

  python benchmarks/bench_generate.py [--repeats 9] [--images 256]

Rows: `kernel` times `render.render_batch` on resolved class systems into a reused output buffer
(`out=`: no page faults); `dataset` times `OnePFrac.batch` (keys, systems and the kernel); `png` adds
PNG encoding as `fractalpre generate` does. The one-thread and all-core runs alternate, so that a
shared machine's slow spells hit both and the `scaling` column (all-core over one-thread kernel
medians) compares like with like.
"""
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numba
import numpy as np

from fractalpre import fractals, util
from fractalpre.fractals import writers
from fractalpre.studies.machine import describe


def seconds(fn):
  start = time.perf_counter()
  fn()
  return time.perf_counter() - start


def main():
  parser = util.ArgumentParser(description=__doc__)
  parser.add_argument("--repeats", type=int, default=9, help="timed runs (the median is reported)")
  parser.add_argument("--images", type=int, default=256, help="images per timed run")
  args = parser.parse_args()
  cores = numba.config.NUMBA_NUM_THREADS
  thread_counts = sorted({1, cores})
  print(f"# bench_generate on {describe()}; medians of {args.repeats} runs of {args.images} images")
  print("| size | threads | kernel img/s | scaling | dataset img/s | png img/s |")
  print("|---:|---:|---:|---:|---:|---:|")
  for size in (224, 512):
    ds = fractals.OnePFrac(num_classes=args.images, size=size)
    idx = list(range(args.images))
    ds.resolve(idx)
    systems = [ds.class_system(c).system for c in idx]
    probs = [ds.class_system(c).probabilities for c in idx]
    keys = [ds._instance(c, 0)[2] for c in idx]
    buffer = np.empty((args.images, size, size), np.uint8)

    def to_png(threads):
      images, _ = ds.batch(idx)
      with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda j: writers.write_atomic(Path(tmp) / f"{j}.png", writers.png_bytes(images[j])), idx))

    runs = {
        "kernel": lambda threads: ds.settings.draw(systems, keys, probs, out=buffer),
        "dataset": lambda threads: ds.batch(idx),
        "png": to_png,
    }
    times = {(name, t): [] for name in runs for t in thread_counts}
    for repeat in range(args.repeats + 1):  # the first round compiles and warms up
      for name, fn in runs.items():
        if name == "png" and repeat > max(1, args.repeats // 2):
          continue
        for threads in thread_counts:
          numba.set_num_threads(threads)
          took = seconds(lambda: fn(threads))
          if repeat:
            times[name, threads].append(took)
    rate = {key: args.images / statistics.median(ts) for key, ts in times.items()}
    for threads in thread_counts:
      scaling = rate["kernel", threads] / rate["kernel", 1]
      print(f"| {size} | {threads} | {rate['kernel', threads]:.0f} | {scaling:.2f}x | "
            f"{rate['dataset', threads]:.0f} | {rate['png', threads]:.0f} |", flush=True)


if __name__ == "__main__":
  with util.one_line_exits("bench_generate.py"):
    sys.exit(main())
