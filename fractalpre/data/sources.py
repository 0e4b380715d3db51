"""Random-access sources of real images (`len`, `src[i] -> (uint8 image, int label)`, `num_classes`):
the bundled digits and lfw sets, TFDS splits and image folders."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from fractalpre.util import IMAGE_EXTENSIONS


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
  """torchvision's ImageFolder layout: ROOT/<class>/<image>, classes the sorted sub-folder names, images
  sorted by name, in any format Pillow reads (gray stays one channel, the rest becomes RGB). A split reads
  ROOT/<split>/ when it exists (what `fractalpre generate --test-instances` writes); otherwise ROOT itself,
  with the last `test_fraction` of each class's images held out as `test`."""

  def __init__(self, path: str, split: str = "train", test_fraction: float = 0.0):
    root = Path(path)
    if not root.is_dir():
      raise ValueError(f"data.path {path!r} is not a folder")
    if not 0 <= test_fraction < 1:
      raise ValueError(f"data.test_fraction must be in [0, 1), got {test_fraction}")
    held_out = not (root / split).is_dir()
    if held_out:
      if split not in ("train", "test"):
        raise ValueError(f"data.path {path!r} has no {split}/ folder")
      if split == "test" and not test_fraction:
        raise ValueError(f"data.path {path!r} has no test/ folder; set data.test_fraction to hold out part "
                         "of each class")
    else:
      root = root / split
    self.classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not self.classes:
      raise ValueError(f"data.path {str(root)!r} holds no class folders (ROOT/<class>/<image>)")
    self.files, labels = [], []
    for label, name in enumerate(self.classes):
      files = sorted(f for f in (root / name).iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS)
      if held_out and test_fraction:
        cut = len(files) - int(round(len(files) * test_fraction))
        files = files[:cut] if split == "train" else files[cut:]
      self.files += files
      labels += [label] * len(files)
    if not self.files:
      raise ValueError(f"data.path {str(root)!r} holds no images for split {split!r}")
    self.labels = np.array(labels, np.int64)
    self.num_classes = len(self.classes)

  def __len__(self):
    return len(self.files)

  def __getitem__(self, i):
    from PIL import Image
    with Image.open(self.files[i]) as image:
      gray = image.mode in ("1", "L", "LA", "I", "I;16", "F")
      return np.asarray(image.convert("L" if gray else "RGB")), int(self.labels[i])
