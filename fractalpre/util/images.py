"""Images as files and grids: PNG bytes, and the sample grids of `fractalpre preview` and TensorBoard."""
from __future__ import annotations

import io

import numpy as np

# The file types an image folder may hold (fractalpre's ImageFolder, superres's HR folders): what Pillow reads.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


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
