"""Scores every file under a folder, on all cores, resumably: one row per file, errors included.

A row is reused from an existing output table when its (path, size, mtime) still match, so a re-run
scores only new or changed files; the table is rewritten atomically every few hundred rows, so a killed
run keeps what it had done. Damaged, truncated, empty and non-image files, images over the pixel limit
and symlinks that leave the root each get a row with an `error`; conversions (CMYK, 16-bit, palette,
alpha, grayscale, animation) get a `note`.
"""
from __future__ import annotations

import multiprocessing
import os
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from superres import metrics, table

COLUMNS = ["path", "size_bytes", "mtime_ns", "format", "width", "height", "megapixels", "jpeg_quality",
           "jpeg_quality_exact", "blockiness", "sharpness", "entropy", "flat_fraction", "segments", "phash",
           "note", "error"]
SCORE_COLUMNS = ["megapixels", "jpeg_quality", "blockiness", "sharpness", "entropy", "flat_fraction", "segments"]
DEFAULT_MAX_PIXELS = 200_000_000
SAVE_EVERY = 200


class Unreadable(Exception):
  """A file that yields a row with an error instead of scores."""


def load_rgb(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[np.ndarray, dict]:
  """(RGB uint8 array, {format, quantization, note}) of the first frame, or Unreadable."""
  if path.stat().st_size == 0:
    raise Unreadable("empty file")
  try:
    with warnings.catch_warnings():
      warnings.simplefilter("error", Image.DecompressionBombWarning)
      im = Image.open(path)
      if im.width * im.height > max_pixels:
        raise Unreadable(f"{im.width}x{im.height} is over the pixel limit of {max_pixels}")
      notes = []
      frames = getattr(im, "n_frames", 1)
      if frames > 1:
        notes.append(f"animated: first of {frames} frames")
      im.load()
      fmt, quantization = im.format, getattr(im, "quantization", None)  # before any conversion drops them
  except Unreadable:
    raise
  except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
    raise Unreadable(f"decompression bomb: {e}") from None
  except (OSError, SyntaxError, ValueError) as e:  # Pillow's errors for unknown, damaged, truncated files
    raise Unreadable(f"not a readable image: {e}") from None
  mode = im.mode
  if mode == "CMYK":
    notes.append("CMYK converted to RGB")
  elif mode in ("I;16", "I;16B", "I;16L", "I"):
    notes.append("16-bit scaled to 8-bit")
    wide = np.asarray(im, np.float64)
    im = Image.fromarray(np.clip(wide / (65535.0 if wide.max() > 255 else 255.0) * 255 + 0.5, 0, 255).astype(np.uint8))
  elif mode in ("P", "PA"):
    notes.append("palette converted to RGB")
  elif mode in ("L", "1", "LA"):
    notes.append("grayscale")
  if "A" in im.mode or (mode == "P" and "transparency" in im.info):
    notes.append("alpha dropped")
  rgb = np.asarray(im.convert("RGB"))
  return rgb, {"format": fmt, "quantization": quantization, "note": "; ".join(notes)}


def score_file(path: str, max_pixels: int = DEFAULT_MAX_PIXELS, segmenter=None) -> dict:
  """One table row for a file."""
  p = Path(path)
  st = p.stat()
  row = {"path": str(p), "size_bytes": st.st_size, "mtime_ns": st.st_mtime_ns}
  try:
    image, info = load_rgb(p, max_pixels)
  except Unreadable as e:
    return {**row, "error": str(e)}
  quality, exact = metrics.jpeg_quality(info["quantization"] if info["format"] == "JPEG" else None)
  segmenter = segmenter or metrics.FelzenszwalbSegmenter()
  gray = metrics.opencv_gray(image)  # once: the gray scores accept it in place of the RGB image
  return {**row, "format": info["format"], "width": image.shape[1], "height": image.shape[0],
          "megapixels": metrics.megapixels(image), "jpeg_quality": quality,
          "jpeg_quality_exact": exact if quality is not None else None,
          "blockiness": metrics.blockiness(gray), "sharpness": metrics.sharpness(gray),
          "entropy": metrics.entropy(gray), "flat_fraction": metrics.flat_fraction(gray),
          "segments": segmenter.count(image), "phash": f"{metrics.perceptual_hash(gray):016x}",
          "note": info["note"] or None}


def list_files(root: Path, follow_symlinks: bool = False) -> tuple[list[Path], list[dict]]:
  """Regular files under root (sorted), and rows for symlinks that leave the root when not following."""
  root = root.resolve()
  files, skipped = [], []
  for dirpath, dirnames, filenames in os.walk(root, followlinks=follow_symlinks):
    dirnames.sort()
    for name in sorted(filenames):
      p = Path(dirpath) / name
      if name.startswith("."):
        continue
      if p.is_symlink() and not follow_symlinks:
        target = p.resolve()
        if not target.is_relative_to(root):
          skipped.append({"path": str(p), "error": f"symlink to {target} leaves the root (use --follow-symlinks)"})
          continue
      if p.is_file():
        files.append(p)
    if not follow_symlinks:
      dirnames[:] = [d for d in dirnames if not (Path(dirpath) / d).is_symlink()
                     or (Path(dirpath) / d).resolve().is_relative_to(root)]
  return files, skipped


def _score(args):
  return score_file(*args)


def _one_thread_per_process():
  """Each worker process is one core's worth: BLAS thread pools would oversubscribe the machine."""
  from threadpoolctl import threadpool_limits
  threadpool_limits(1)


def score_folder(root: str | os.PathLike, out: str | os.PathLike, workers: int | None = None,
                 follow_symlinks: bool = False, max_pixels: int = DEFAULT_MAX_PIXELS, progress: bool = True) -> list[dict]:
  """Scores every file under root into the table `out`, reusing its unchanged rows; returns the rows."""
  root, out = Path(root), Path(out)
  if not root.is_dir():
    raise ValueError(f"DIR must be an existing folder, got {root}")
  table._check(out)
  files, skipped = list_files(root, follow_symlinks)
  cached = {}
  if out.exists():
    cached = {(r["path"], r.get("size_bytes"), r.get("mtime_ns")): r for r in table.read(out)}
  rows, todo = {}, []
  for p in files:
    st = p.stat()
    hit = cached.get((str(p), st.st_size, st.st_mtime_ns))
    if hit is not None:
      rows[str(p)] = hit
    else:
      todo.append(str(p))
  for r in skipped:
    rows[r["path"]] = r
  workers = workers or os.cpu_count()
  last_save = time.time()

  def save():
    table.write(out, [rows[k] for k in sorted(rows)], COLUMNS)

  with tqdm(total=len(files), initial=len(files) - len(todo), unit="img", disable=not progress) as bar:
    if todo:
      # forkserver: forking a process that has started threads (JAX, BLAS) can deadlock.
      with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("forkserver"),
                               initializer=_one_thread_per_process) as pool:
        for i, row in enumerate(pool.map(_score, [(p, max_pixels) for p in todo], chunksize=4)):
          rows[row["path"]] = row
          bar.update(1)
          if (i + 1) % SAVE_EVERY == 0 or time.time() - last_save > 30:
            save()
            last_save = time.time()
  save()
  return [rows[k] for k in sorted(rows)]
