"""Random-access sources of real images (`len`, `src[i] -> (uint8 image, int label)`, `num_classes`):
the bundled digits and lfw sets, TFDS splits and image folders."""
from __future__ import annotations

import collections
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from fractalpre.util import DEFAULT_MAX_PIXELS, IMAGE_EXTENSIONS, UnreadableImage, read_image


def stratified_split(labels: np.ndarray, split: str, test_fraction: float, seed: int,
                     labels_per_class: int | None = None) -> np.ndarray:
  """Sorted indices of a fixed stratified split: one seeded permutation; of each class, the first
  round((1 - test_fraction) * size) in that order are `train` (optionally only the first `labels_per_class`
  of them: few-label fine-tuning), the rest `test`."""
  if split not in ("train", "test"):
    raise ValueError(f"split must be 'train' or 'test', got {split!r}")
  order = np.random.default_rng(seed).permutation(len(labels))
  picked = []
  for c in np.unique(labels):
    members = order[labels[order] == c]
    cut = int(round(len(members) * (1 - test_fraction)))
    members = members[:cut] if split == "train" else members[cut:]
    if split == "train" and labels_per_class is not None:
      if not 1 <= labels_per_class <= cut:
        raise ValueError(f"labels_per_class must be in [1, {cut}], got {labels_per_class}")
      members = members[:labels_per_class]
    picked.append(members)
  return np.sort(np.concatenate(picked))


class _Bundled:
  """Real labelled images that ship inside a library, split by `stratified_split`."""

  def __init__(self, images: np.ndarray, labels: np.ndarray, split: str, labels_per_class: int | None,
               test_fraction: float, seed: int):
    self.indices = stratified_split(labels, split, test_fraction, seed, labels_per_class)
    self.images, self.labels = images[self.indices], labels[self.indices]

  def __len__(self):
    return len(self.indices)

  def __getitem__(self, i):
    return self.images[i], int(self.labels[i])


class Digits(_Bundled):
  """scikit-learn's 1797 real 8x8 handwritten digits, 10 classes."""

  num_classes = 10

  def __init__(self, split: str = "train", labels_per_class: int | None = None, test_fraction: float = 0.5,
               seed: int = 0):
    from sklearn.datasets import load_digits
    data = load_digits()
    super().__init__(np.round(data.images * (255 / 16)).astype(np.uint8), data.target, split, labels_per_class,
                     test_fraction, seed)


class LfwSubset(_Bundled):
  """scikit-image's `lfw_subset`: 200 real 25x25 grayscale images, 100 faces (Labeled Faces in the Wild)
  and 100 non-faces; label 0 = face, 1 = non-face."""

  num_classes = 2

  def __init__(self, split: str = "train", labels_per_class: int | None = None, test_fraction: float = 0.5,
               seed: int = 0):
    from skimage.data import lfw_subset
    images = lfw_subset()
    labels = np.repeat(np.arange(2), len(images) // 2)  # the first half are the faces
    super().__init__(np.round(images * 255).astype(np.uint8), labels, split, labels_per_class, test_fraction, seed)


def open_tfds(name: str, split: str, data_dir: str | None = None, key: str = "data.name"):
  """(builder, random-access data source) of a TFDS split, by registry name (with `data_dir`) or dataset
  folder; a path that is not a folder or a split the dataset lacks is a ValueError naming `key`."""
  import tensorflow_datasets as tfds
  if Path(name).is_dir():
    builder = tfds.builder_from_directory(str(Path(name).absolute()))
  elif "/" in name or name.startswith("."):
    raise ValueError(f"{key} {name!r} is not a folder (a TFDS dataset folder, or a registry name such as 'mnist')")
  else:
    builder = tfds.builder(name, data_dir=data_dir)
  splits = builder.info.splits
  if splits and split.split("[")[0] not in splits:  # (TFDS's mock data declares no splits)
    raise ValueError(f"TFDS dataset {name!r} has no split {split!r}; it has {sorted(splits)}")
  return builder, builder.as_data_source(split=split)


class TfdsSource:
  """A TFDS split through `tfds.data_source` (array_record; no TensorFlow at run time). `name` is a
  registry name (with `data_dir`) or a dataset folder, relative or absolute (what `fractalpre generate
  --format tfds` writes)."""

  def __init__(self, name: str, split: str, data_dir: str | None = None):
    builder, self.source = open_tfds(name, split, data_dir)
    self.num_classes = builder.info.features["label"].num_classes

  def __len__(self):
    return len(self.source)

  def __getitem__(self, i):
    example = self.source[i]
    return np.asarray(example["image"]), int(example["label"])


class ImageFolder:
  """torchvision's ImageFolder layout: ROOT/<class>/<image>, images sorted by name, in any format Pillow
  reads (gray stays one channel, the rest becomes RGB). A split reads ROOT/<split>/ when it exists (what
  `fractalpre generate --test-instances` writes); otherwise ROOT itself, with the last `test_fraction` of
  each class's images held out as `test`. The classes are the training folder's sorted sub-folder names,
  for every split: a test/ that lacks a class keeps every other label, and a test/ class that train/ lacks
  is refused. A class folder with no images, or one that links outside the dataset, is refused.

  Every image is decoded once here (threads; `fractalpre.util.read_image`: by its mode, 16-bit and float
  scaled to 8 bits, palette, CMYK and alpha converted), so that a file that cannot be read (empty,
  truncated, not an image, over `max_pixels`) stops the run before training, in one line naming the first
  few and the count; `skip_bad` leaves them out instead. Conversions are counted in one line."""

  def __init__(self, path: str, split: str = "train", test_fraction: float = 0.0, skip_bad: bool = False,
               max_pixels: int = DEFAULT_MAX_PIXELS):
    root = Path(path)
    if not root.is_dir():
      raise ValueError(f"data.path {path!r} is not a folder")
    if not 0 <= test_fraction < 1:
      raise ValueError(f"data.test_fraction must be in [0, 1), got {test_fraction}")
    train_root = root / "train" if (root / "train").is_dir() else root
    if train_root == root and (root / "test").is_dir():
      raise ValueError(f"data.path {path!r} has a test/ folder but no train/ folder beside it")
    # Without a test/ folder, `test_fraction` of each class's training images is held out, from both splits.
    held_out = split in ("train", "test") and not (root / "test").is_dir()
    if held_out and split == "test" and not test_fraction:
      raise ValueError(f"data.path {path!r} has no test/ folder; set data.test_fraction to hold out part "
                       "of each class")
    if not held_out and split != "train" and not (root / split).is_dir():
      raise ValueError(f"data.path {path!r} has no {split}/ folder")
    self.classes = _class_folders(train_root, root)
    split_root = train_root if held_out or split == "train" else root / split
    present = _class_folders(split_root, root) if split_root != train_root else self.classes
    unknown = sorted(set(present) - set(self.classes))
    if unknown:
      raise ValueError(f"data.path {str(split_root)!r} has class folders that {str(train_root)!r} lacks: "
                       f"{', '.join(unknown[:5])}{' ...' if len(unknown) > 5 else ''} (the labels are train's classes)")
    self.files, labels = [], []
    for label, name in enumerate(self.classes):
      if name not in present:
        continue
      files = sorted(f for f in (split_root / name).iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS)
      if split_root == train_root and not files:
        raise ValueError(f"data.path class folder {str(split_root / name)!r} holds no images "
                         f"({', '.join(IMAGE_EXTENSIONS)}); remove it or add images")
      if held_out and test_fraction:
        cut = len(files) - int(round(len(files) * test_fraction))
        files = files[:cut] if split == "train" else files[cut:]
      self.files += files
      labels += [label] * len(files)
    if max_pixels < 1:
      raise ValueError(f"data.max_pixels must be >= 1, got {max_pixels}")
    self.max_pixels = max_pixels
    where = f"data.path {str(split_root)!r} ({split})"
    bad, conversions = _scan(self.files, max_pixels, where)
    if bad and not skip_bad:
      raise ValueError(f"{where}: {len(bad)} of {len(self.files)} files cannot be read as images: {_listed(bad)}; "
                       "remove them, or set data.skip_bad_images=True to train without them")
    if bad:
      _report(f"{where}: skipped {len(bad)} unreadable files of {len(self.files)} ({_listed(bad)})")
      keep = [j for j, f in enumerate(self.files) if f not in bad]
      self.files, labels = [self.files[j] for j in keep], [labels[j] for j in keep]
    if conversions:
      _report(f"{where}: " + ", ".join(f"{n} images {kind}" for kind, n in sorted(conversions.items())))
    if not self.files:
      raise ValueError(f"data.path {str(split_root)!r} holds no images for split {split!r}")
    self.labels = np.array(labels, np.int64)
    self.num_classes = len(self.classes)

  def __len__(self):
    return len(self.files)

  def __getitem__(self, i):
    return read_image(self.files[i], self.max_pixels)[0], int(self.labels[i])


def _class_folders(folder: Path, root: Path) -> list[str]:
  """The sorted class folder names of `folder` (hidden ones left out); one that links outside `root` is
  refused (its images would belong to another dataset)."""
  classes = sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
  if not classes:
    raise ValueError(f"data.path {str(folder)!r} holds no class folders (ROOT/<class>/<image>)")
  inside = root.resolve()
  for name in classes:
    target = (folder / name).resolve()
    if target != inside and inside not in target.parents:
      raise ValueError(f"data.path class folder {str(folder / name)!r} links outside {str(root)!r} (to {target})")
  return classes


def _scan(files: list[Path], max_pixels: int, where: str) -> tuple[dict[Path, str], collections.Counter]:
  """({file: why it cannot be read}, {conversion: count}) of every file, decoded once, in threads (Pillow
  releases the GIL while it decodes)."""
  def one(path):
    try:
      return None, read_image(path, max_pixels)[1]["notes"]
    except UnreadableImage as e:
      return str(e), []
    except OSError as e:  # vanished or unreadable file
      return e.strerror or str(e), []

  bad, conversions = {}, collections.Counter()
  with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
    results = tqdm(pool.map(one, files), total=len(files), desc=f"checking {where}", unit="img",
                   disable=len(files) < 2000, file=sys.stderr)
    for path, (error, notes) in zip(files, results):
      if error:
        bad[path] = error
      conversions.update(notes)
  return bad, conversions


def _listed(bad: dict[Path, str], first: int = 3) -> str:
  shown = ", ".join(f"{p.parent.name}/{p.name} ({why[:60]})" for p, why in list(bad.items())[:first])
  return shown + (f" and {len(bad) - first} more" if len(bad) > first else "")


def _report(line: str) -> None:
  print(line, file=sys.stderr, flush=True)

