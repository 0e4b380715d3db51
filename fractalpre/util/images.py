"""Images as files and grids: reading a user's image file by its mode into uint8 (fractalpre's image folders
and superres's scoring share it), PNG bytes, and the sample grids of `fractalpre preview` and TensorBoard."""
from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np

# The file types an image folder may hold (fractalpre's ImageFolder, superres's HR folders): what Pillow reads.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
# Pillow's own decompression-bomb warning threshold (about 89 MP): larger images are refused unless a caller
# allows more.
DEFAULT_MAX_PIXELS = 89_478_485
_GRAY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")


class UnreadableImage(ValueError):
  """A file that cannot be read as an image (empty, truncated, not an image, over the pixel limit)."""


def float_to_uint8(values: np.ndarray) -> tuple[np.ndarray, str]:
  """Float pixels in [0, 1] (skimage's convention, when all values are <= 1) scaled by 255, or in [0, 255]
  rounded; NaN, infinite or out-of-range values are a ValueError naming them."""
  if not np.isfinite(values).all():
    raise ValueError("the image has NaN or infinite values")
  lo, hi = float(values.min()), float(values.max())
  if lo < 0 or hi > 255:
    raise ValueError(f"float image values must be in [0, 1] or [0, 255], got [{lo:g}, {hi:g}]")
  scale = 255.0 if hi <= 1 else 1.0
  note = f"{values.dtype} in [0, {1 if hi <= 1 else 255}] {'scaled' if hi <= 1 else 'rounded'} to 8-bit"
  return np.clip(np.round(values.astype(np.float64) * scale), 0, 255).astype(np.uint8), note


def read_image(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[np.ndarray, dict]:
  """(uint8 pixels, {format, quantization, notes}) of an image file's first frame, read by its mode: gray
  modes stay (H, W) (16-bit scaled by 255/65535, floats by `float_to_uint8`), the rest become (H, W, 3) RGB
  (palette, CMYK and the like converted, alpha dropped). `notes` lists each conversion. A file that
  cannot be read is an UnreadableImage saying why in a few words."""
  from PIL import Image
  path = Path(path)
  if path.stat().st_size == 0:
    raise UnreadableImage("empty file")
  if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < max_pixels:
    # Pillow warns above this and refuses above twice it; our own limit decides (process-wide, and only
    # ever raised: a global warnings filter would not be thread-safe, and images are read in threads)
    Image.MAX_IMAGE_PIXELS = max_pixels
  notes = []
  try:
    im = Image.open(path)
    if im.width * im.height > max_pixels:
      raise UnreadableImage(f"{im.width}x{im.height} is over the pixel limit of {max_pixels}")
    frames = getattr(im, "n_frames", 1)
    if frames > 1:
      notes.append(f"animated: first of {frames} frames")
    im.load()
    fmt, quantization = im.format, getattr(im, "quantization", None)  # before any conversion drops them
  except UnreadableImage:
    raise
  except Image.DecompressionBombError as e:  # Pillow's own check, at twice its limit, came first
    size = re.search(r"\((\d+) pixels\)", str(e))
    raise UnreadableImage(f"{size[1] if size else 'its size'} pixels is over the pixel limit of {max_pixels}") from None
  except (OSError, SyntaxError, ValueError) as e:  # Pillow's errors for unknown, damaged, truncated files
    raise UnreadableImage(f"not a readable image: {e}") from None
  mode = im.mode
  if mode == "I":
    lo, hi = int(np.asarray(im).min()), int(np.asarray(im).max())
    if lo < 0 or hi > 65535:
      raise UnreadableImage(f"32-bit integer image with values in [{lo}, {hi}]: scale it to 8 or 16 bits first")
  if mode.startswith("I;16") or (mode == "I" and np.asarray(im).max() > 255):
    notes.append("16-bit scaled to 8-bit")
    pixels = np.clip(np.round(np.asarray(im, np.float64) * (255 / 65535)), 0, 255).astype(np.uint8)
  elif mode == "I":
    pixels = np.asarray(im).astype(np.uint8)  # 32-bit integers that all fit in 8 bits
  elif mode == "F":
    try:
      pixels, note = float_to_uint8(np.asarray(im))
    except ValueError as e:
      raise UnreadableImage(f"32-bit float image: {e}") from None
    notes.append(f"32-bit float: {note}")
  else:
    if mode == "CMYK":
      notes.append("CMYK converted to RGB")
    elif mode in ("P", "PA"):
      notes.append("palette converted to RGB")
    if "A" in mode or (mode == "P" and "transparency" in im.info):
      notes.append("alpha dropped")
    pixels = np.asarray(im.convert("L" if mode in _GRAY_MODES else "RGB"))
  return pixels, {"format": fmt, "quantization": quantization, "notes": notes}


def png_bytes(image: np.ndarray) -> bytes:
  from PIL import Image  # imported on use: `fractalpre generate --format tfds` needs no Pillow start-up
  buf = io.BytesIO()
  Image.fromarray(image).save(buf, format="PNG", compress_level=3)  # 1.7x faster than 6, files +20%
  return buf.getvalue()


def image_grid(images, cols: int | None = None, border: int = 0) -> np.ndarray:
  """Same-shape uint8 images tiled row by row on white, `border` white pixels around each; `cols`
  defaults to the smallest square grid that holds them all."""
  images = list(images)
  if not images:
    raise ValueError("image_grid needs at least one image")
  cols = min(cols or int(np.ceil(np.sqrt(len(images)))), len(images))
  rows = -(-len(images) // cols)
  h, w = images[0].shape[:2]
  cell_h, cell_w = h + 2 * border, w + 2 * border
  grid = np.full((rows * cell_h, cols * cell_w) + images[0].shape[2:], 255, np.uint8)
  for j, image in enumerate(images):
    r, c = divmod(j, cols)
    grid[r * cell_h + border:r * cell_h + border + h, c * cell_w + border:c * cell_w + border + w] = image
  return grid
