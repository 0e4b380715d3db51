"""Scores every file under a folder, on all cores, resumably: one row per file, errors included.

A row is reused from an existing output table when its (path, size, mtime) and the options that change
a row (the pixel limit) still match, so a re-run scores only new or changed files; the table is rewritten
atomically every few hundred rows, so a killed run keeps what it had done. Damaged, truncated, empty and
non-image files, images over the pixel limit, symlinks that leave the root, dangling symlinks, symlink
loops and files that vanish or cannot be read during the scan each get a row with an `error`, and the
scan goes on; conversions (CMYK, 16-bit, 32-bit float, palette, alpha, grayscale, animation) get a `note`.
Worker processes die with the scan, even when it is killed.
"""
from __future__ import annotations

import errno
import multiprocessing
import os
import select
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from fractalpre import util
from superres.curation import metrics, table

COLUMNS = ["path", "size_bytes", "mtime_ns", "max_pixels", "format", "width", "height", "megapixels",
           "jpeg_quality", "jpeg_quality_exact", "blockiness", "sharpness", "entropy", "flat_fraction", "segments",
           "phash", "note", "error", "root"]
SCORE_COLUMNS = ["megapixels", "jpeg_quality", "blockiness", "sharpness", "entropy", "flat_fraction", "segments"]
DEFAULT_MAX_PIXELS = 200_000_000
SAVE_EVERY = 200


Unreadable = util.UnreadableImage  # a file that yields a row with an error instead of scores


def load_rgb(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[np.ndarray, dict]:
  """(RGB uint8 array, {format, quantization, note}) of the first frame, or Unreadable."""
  pixels, info = util.read_image(path, max_pixels)
  notes = info.pop("notes")
  if pixels.ndim == 2:
    if not any("16-bit" in n or "float" in n for n in notes):  # those notes say it already
      notes.append("grayscale")
    pixels = np.repeat(pixels[..., None], 3, axis=-1)
  return pixels, {**info, "note": "; ".join(notes)}


def score_file(path: str, max_pixels: int = DEFAULT_MAX_PIXELS, segmenter=None) -> dict:
  """One table row for a file; a file that vanishes or cannot be read gets a row with the error."""
  p = Path(path)
  row = {"path": str(p), "max_pixels": max_pixels}
  try:
    st = p.stat()
    row.update(size_bytes=st.st_size, mtime_ns=st.st_mtime_ns)
    image, info = load_rgb(p, max_pixels)
  except Unreadable as e:
    return {**row, "error": str(e)}
  except OSError as e:
    return {**row, "error": f"cannot read: {e.strerror or e}"}
  quality, exact = metrics.jpeg_quality(info["quantization"] if info["format"] == "JPEG" else None)
  segmenter = segmenter or metrics.FelzenszwalbSegmenter()
  gray = metrics.to_gray(image)  # once: every gray score accepts it in place of the RGB image
  return {**row, "format": info["format"], "width": image.shape[1], "height": image.shape[0],
          "megapixels": metrics.megapixels(image), "jpeg_quality": quality,
          "jpeg_quality_exact": exact if quality is not None else None,
          "blockiness": metrics.blockiness(gray), "sharpness": metrics.sharpness(gray),
          "entropy": metrics.entropy(gray), "flat_fraction": metrics.flat_fraction(gray),
          "segments": segmenter.count(image), "phash": f"{metrics.perceptual_hash(gray):016x}",
          "note": info["note"] or None}


def list_files(root: Path, follow_symlinks: bool = False,
               exclude: tuple[Path, ...] = ()) -> tuple[list[Path], list[dict]]:
  """Regular files under root (sorted, hidden names and `exclude` left out), and error rows for what
  cannot be scored: symlinks that leave the root (when not following), dangling symlinks, symlink loops,
  and folders that cannot be listed. Each folder is entered once, so a looping folder link ends."""
  root = root.resolve()
  exclude = {Path(p).resolve() for p in exclude}
  files, errors, seen = [], [], set()

  def error(path, message):
    errors.append({"path": str(path), "error": message})

  def visit(folder: Path):
    try:
      st = folder.stat()
      entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as e:
      return error(folder, f"cannot list folder: {e.strerror or e}")
    if (st.st_dev, st.st_ino) in seen:
      return error(folder, "symlink loop or second link to a folder already scanned")
    seen.add((st.st_dev, st.st_ino))
    for entry in entries:
      p = Path(entry.path)
      if entry.name.startswith(".") or p.absolute() in exclude:
        continue
      if entry.is_symlink():
        try:
          target = p.resolve(strict=True)
        except RuntimeError:  # Python < 3.13 reports a loop this way
          error(p, "symlink loop")
          continue
        except OSError as e:
          error(p, "symlink loop" if e.errno == errno.ELOOP else f"dangling symlink to {os.readlink(p)}")
          continue
        if not follow_symlinks and not target.is_relative_to(root):
          error(p, f"symlink to {target} leaves the root (use --follow-symlinks)")
          continue
        if target.is_dir() and not follow_symlinks:
          continue  # its files are scanned under their own path inside the root
      if p.is_dir():
        visit(p)
      elif p.is_file():
        files.append(p)

  visit(root)
  return files, errors


def _score(args):
  return score_file(*args)


def _worker_init(scan_pid: int):
  """Each worker process is one core's worth (BLAS thread pools would oversubscribe the machine), and
  exits when the scan's process does, even by SIGKILL: a worker holds both ends of its task pipe, so it
  would never see the scan go, and the forkserver only exits after its workers."""
  from threadpoolctl import threadpool_limits
  threadpool_limits(1)
  threading.Thread(target=_exit_with, args=(scan_pid,), daemon=True).start()


def _exit_with(pid: int) -> None:
  try:
    fd = os.pidfd_open(pid)  # readable once that process has exited
  except (AttributeError, OSError):  # not Linux >= 5.3: poll instead
    while True:
      time.sleep(1.0)
      try:
        os.kill(pid, 0)
      except ProcessLookupError:
        os._exit(1)
      except PermissionError:
        pass
  select.select([fd], [], [])
  os._exit(1)


def score_folder(root: str | os.PathLike, out: str | os.PathLike, workers: int | None = None,
                 follow_symlinks: bool = False, max_pixels: int = DEFAULT_MAX_PIXELS, progress: bool = True) -> list[dict]:
  """Scores every file under root into the table `out`, reusing its unchanged rows; returns the rows."""
  root, out = Path(root), Path(out)
  if not root.is_dir():
    raise ValueError(f"DIR must be an existing folder, got {root}")
  if max_pixels < 1:
    raise ValueError(f"max_pixels must be >= 1, got {max_pixels}")
  table._check(out)
  util.check_writable(out, "--out")  # before the work, not after it
  files, skipped = list_files(root, follow_symlinks, exclude=(out, util.temporary_name(out)))
  cached = {}
  if out.exists():
    cached = {(r["path"], r.get("size_bytes"), r.get("mtime_ns"), r.get("max_pixels")): r for r in table.read(out)}
  rows, todo = {}, []
  for p in files:
    try:
      st = p.stat()
    except OSError:  # gone since the listing: score_file writes its error row
      todo.append(str(p))
      continue
    hit = cached.get((str(p), st.st_size, st.st_mtime_ns, max_pixels))
    if hit is not None:
      rows[str(p)] = hit
    else:
      todo.append(str(p))
  for r in skipped:
    rows[r["path"]] = r
  workers = workers or os.cpu_count()
  last_save = time.time()

  def save():  # every row names the folder it was scored under: curate copies only files inside it
    table.write(out, [{**rows[k], "root": str(root.resolve())} for k in sorted(rows)], COLUMNS)

  with tqdm(total=len(files), initial=len(files) - len(todo), unit="img", disable=not progress) as bar:
    if todo:
      # forkserver: forking a process that has started threads (JAX, BLAS) can deadlock.
      with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("forkserver"),
                               initializer=_worker_init, initargs=(os.getpid(),)) as pool:
        for i, row in enumerate(pool.map(_score, [(p, max_pixels) for p in todo], chunksize=4)):
          rows[row["path"]] = row
          bar.update(1)
          if (i + 1) % SAVE_EVERY == 0 or time.time() - last_save > 30:
            save()
            last_save = time.time()
  save()
  return [{**rows[k], "root": str(root.resolve())} for k in sorted(rows)]
