"""Writes a fractal source to disk: an ImageFolder of PNGs or a TFDS (array_record) dataset.

Resumable and shardable: the images are cut into fixed chunks, chunk k belongs to shard k mod n, each
file is written under a temporary name and renamed, and a re-run skips what is complete. So a killed
run, re-run with the same arguments, ends byte-identical to an uninterrupted one, and n machines can
write disjoint parts of one dataset. With `test_instances` > 0 a held-out `test` split (the next instances
of the same categories) is written beside `train`: OUT/train/ and OUT/test/ class folders, or both TFDS
splits in one folder. `manifest.json` (every parameter, the package version, each
class's IFS) identifies the dataset: a folder holding another manifest is refused. One writer at a
time of each shard holds OUT/.shard-I-of-N.lock; TFDS records are serialized deterministically (sorted
feature keys), so two runs give the same bytes.
"""
from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tqdm import tqdm

import fractalpre
from fractalpre import util
from fractalpre.util import png_bytes, write_atomic

FORMATS = ("png", "tfds")
MANIFEST = "manifest.json"


class ExportError(util.UsageError):
  """Bad output folder or arguments: reported as one line by the CLI."""


def parse_shard(spec: str) -> tuple[int, int]:
  """'i/n' -> (i, n) with 0 <= i < n."""
  try:
    i, n = (int(part) for part in spec.split("/"))
  except ValueError:
    raise ExportError(f"--shard must look like i/n with integers 0 <= i < n, got {spec!r}") from None
  if not 0 <= i < n:
    raise ExportError(f"--shard must look like i/n with integers 0 <= i < n, got {spec!r}")
  return i, n


def manifest(ds, test_instances: int = 0, fmt: str = "png", shards: int = 1) -> dict:
  """Everything that determines the dataset's bytes, plus each class's IFS (resolving every class), and how
  the folder is laid out: its format and shard count (every writer into it must use the same)."""
  classes = []
  for first in range(0, ds.num_classes, 1024):
    ids = range(first, min(first + 1024, ds.num_classes))
    ds.resolve(ids)
    classes += [ds.class_system(c).to_json() for c in ids]
  params = {**ds.params(), **({"test_instances": test_instances} if test_instances else {})}
  return {"fractalpre_version": fractalpre.__version__, "params": params, "classes": classes, "format": fmt,
          "shards": shards}


LAYOUT = ("format", "shards")  # manifests written before these were recorded lack them: taken as matching


def _read_json(path: Path):
  try:
    return json.loads(path.read_text())
  except (OSError, ValueError):
    return None


def check_output(out: Path, expected: dict) -> None:
  """Refuses a folder that holds another dataset, or that cannot be written; creates nothing. A folder
  without a manifest is ours to resume when it holds only our lock and temporary files, plus finished
  images if its temporary manifest (a write that a kill or a full disk stopped before the rename) is
  complete and equals this dataset's."""
  util.check_folder(out, "--out")
  if (out / MANIFEST).exists():
    found = _read_json(out / MANIFEST)
    if not isinstance(found, dict):
      raise ExportError(f"--out {out}: its {MANIFEST} cannot be read; choose another folder")
    layout = [k for k in LAYOUT if k in found and found[k] != expected[k]]
    if layout:
      raise ExportError(f"--out {out} holds a dataset written with --format {found['format']} in {found['shards']} "
                        f"shards; this run asks for --format {expected['format']} in {expected['shards']} shards: "
                        "use the same format and shard count, or another folder")
    strip = lambda spec: {k: v for k, v in spec.items() if k not in LAYOUT}
    if strip(found) != strip(expected):
      raise ExportError(f"--out {out} holds a dataset with a different manifest; choose another folder")
  elif out.exists():
    ours = _read_json(util.temporary_name(out / MANIFEST)) == expected
    foreign = [p.name for p in out.iterdir() if not (util.is_lock(p.name) or util.is_temporary(p.name))]
    if foreign and not ours:
      raise ExportError(f"--out {out} is not empty and holds no {MANIFEST} (found {sorted(foreign)[0]!r}); "
                        "choose an empty or new folder")


class ImageFolderWriter:
  """ROOT/<class>/<instance>.png (ROOT = OUT, or OUT/<split> with a test split), readable by
  torchvision/timm ImageFolder and by fractalpre's `folder` source."""

  chunk = 256

  def __init__(self, out: Path, splits: dict, split: str, workers: int):
    self.out, self.ds, self.workers = (out / split if len(splits) > 1 else out), splits[split], workers
    self.class_digits = max(5, len(str(self.ds.num_classes - 1)))
    self.instance_digits = max(5, len(str(self.ds.instances_per_class - 1)))

  def path(self, index: int) -> Path:
    c, i = self.ds.locate(index)
    return self.out / f"{c:0{self.class_digits}d}" / f"{i:0{self.instance_digits}d}.png"

  def done(self, indices: range) -> int:
    return sum(self.path(i).exists() for i in indices)

  def write(self, indices: range) -> None:
    todo = [i for i in indices if not self.path(i).exists()]
    if not todo:
      return
    images, _ = self.ds.batch(todo)
    for c in {self.ds.locate(i)[0] for i in todo}:
      self.path(c * self.ds.instances_per_class).parent.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(self.workers) as pool:  # PNG encoding releases the GIL
      list(pool.map(lambda j: write_atomic(self.path(todo[j]), png_bytes(images[j])), range(len(todo))))

  def finish(self) -> None:
    pass


class TfdsWriter:
  """A TFDS folder (array_record shards + dataset_info.json) for `tfds.builder_from_directory` and
  `tfds.data_source`. Written without TensorFlow: images are PNG-encoded with Pillow."""

  chunk = 1024

  def __init__(self, out: Path, splits: dict, split: str, workers: int):
    self.out, self.ds, self.workers, self.split, self.splits = out, splits[split], workers, split, splits
    self.name = "fractal_" + self.ds.name.replace("-", "_")
    self.features = tfds_features(self.ds)

  def path(self, k: int, split: str | None = None) -> Path:
    split = split or self.split
    return self.out / tfds_shard_name(self.name, k, math.ceil(len(self.splits[split]) / self.chunk), split)

  def done(self, indices: range) -> int:
    return len(indices) if self.path(indices.start // self.chunk).exists() else 0

  def write(self, indices: range) -> None:
    path = self.path(indices.start // self.chunk)
    if path.exists():
      return
    images, labels = self.ds.batch(indices)
    with ThreadPoolExecutor(self.workers) as pool:  # PNG encoding releases the GIL
      pngs = list(pool.map(png_bytes, images))
    # PNG file objects: TFDS would otherwise encode the arrays with TensorFlow.
    examples = [{"image": io.BytesIO(png), "label": int(label)} for png, label in zip(pngs, labels)]
    write_tfds_shard(self.features, examples, path, self.workers)

  def finish(self) -> None:
    """Writes the TFDS metadata once every shard file of every split exists (whichever run completes the
    set)."""
    splits = {}
    for split, ds in self.splits.items():
      chunks = math.ceil(len(ds) / self.chunk)
      splits[split] = ([self.path(k, split) for k in range(chunks)],
                       [min(self.chunk, len(ds) - k * self.chunk) for k in range(chunks)])
    if all(p.exists() for paths, _ in splits.values() for p in paths):
      write_tfds_metadata(self.out, self.features, splits,
                          f"{self.ds.name} rendered by fractalpre {fractalpre.__version__}; see manifest.json")


def tfds_features(ds):
  import tensorflow_datasets as tfds  # imported only for this format: it is slow to import
  return tfds.features.FeaturesDict({
      "image": tfds.features.Image(shape=(ds.settings.size, ds.settings.size, 3 if ds.settings.color else 1)),
      "label": tfds.features.ClassLabel(num_classes=ds.num_classes)})


def tfds_shard_name(name: str, index: int, count: int, split: str = "train") -> str:
  return f"{name}-{split}.array_record-{index:05d}-of-{count:05d}"


def write_tfds_shard(features, examples: list[dict], path: Path, workers: int = 1) -> None:
  """One array_record shard of serialized examples, written atomically."""
  from array_record.python.array_record_module import ArrayRecordWriter
  with ThreadPoolExecutor(workers) as pool:
    records = list(pool.map(lambda example: serialize_example(features, example), examples))
  with util.atomic_path(path) as tmp:
    writer = ArrayRecordWriter(str(tmp), "group_size:1")
    for record in records:
      writer.write(record)
    writer.close()


def serialize_example(features, example: dict) -> bytes:
  """A tf.train.Example with its feature map in key order: TFDS's own serializer writes the map in hash
  order, which changes from process to process (string hashing is salted), so its bytes do too."""
  from tensorflow_datasets.core.example_serializer import ExampleSerializer
  serializer = ExampleSerializer(features.get_serialized_info())
  return serializer.get_tf_example(features.encode_example(example)).SerializeToString(deterministic=True)


def write_tfds_metadata(out: Path, features, splits: dict[str, tuple[list[Path], list[int]]],
                        description: str) -> None:
  """dataset_info.json + features.json for a folder of shards ({split: (shard paths, shard lengths)}), so
  that `tfds.builder_from_directory(out)` loads it (no TensorFlow needed)."""
  import tensorflow_datasets as tfds
  infos = [tfds.core.SplitInfo(name=name, shard_lengths=lengths, num_bytes=sum(p.stat().st_size for p in shards))
           for name, (shards, lengths) in splits.items()]
  tfds.folder_dataset.write_metadata(data_dir=out, features=features, split_infos=infos,
                                     filename_template="{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}",
                                     check_data=False, description=description)


def write_dataset(ds, out: str | os.PathLike, fmt: str = "png", shard: tuple[int, int] = (0, 1), workers: int = 1,
           progress: bool = True, log: Callable[[str], None] = print, test_instances: int = 0) -> int:
  """Writes this shard's part of `ds` (and of its held-out split of `test_instances` per class) to `out`;
  returns the number of images it rendered."""
  if fmt not in FORMATS:
    raise ExportError(f"--format must be one of {FORMATS}, got {fmt!r}")
  out = Path(out)
  splits = {"train": ds, **({"test": ds.held_out(test_instances)} if test_instances else {})}
  spec = manifest(ds, test_instances, fmt, shard[1])
  check_output(out, spec)
  writers = [(ImageFolderWriter if fmt == "png" else TfdsWriter)(out, splits, split, workers) for split in splits]
  out.mkdir(parents=True, exist_ok=True)
  with util.FolderLock(out, f"fractalpre generate of shard {shard[0]}/{shard[1]}", f"shard-{shard[0]}-of-{shard[1]}"):
    check_output(out, spec)  # again, holding the lock: another writer may have started in between
    if not (out / MANIFEST).exists():
      write_atomic(out / MANIFEST, json.dumps(spec, indent=1).encode())
    rendered = sum(_write_shard(w.ds, out, w, shard, progress, log, split) for w, split in zip(writers, splits))
    writers[0].finish()  # a TFDS writer's metadata covers every split
    return rendered


def _write_shard(ds, out: Path, writer, shard: tuple[int, int], progress: bool, log: Callable[[str], None],
                 split: str) -> int:
  index, count = shard
  chunks = math.ceil(len(ds) / writer.chunk)
  mine = [range(k * writer.chunk, min((k + 1) * writer.chunk, len(ds))) for k in range(index, chunks, count)]
  total = sum(len(r) for r in mine)
  done = sum(writer.done(r) for r in mine)
  rendered = 0
  with tqdm(total=total, initial=done, unit="img", desc=f"{ds.name} {split} shard {index}/{count}",
            disable=not progress, smoothing=0.1) as bar:
    for r in mine:
      left = len(r) - writer.done(r)
      if left:
        writer.write(r)
        rendered += left
        bar.update(left)
  log(f"{out}: {total} {split} images in shard {index}/{count} ({rendered} rendered now, {total - rendered} "
      "already there)")
  return rendered
