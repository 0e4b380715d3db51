"""A user's image folder: one class-to-label mapping for every split, images read by their mode, and files
that cannot be read refused (or skipped) before training, in one line."""
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from fractalpre import util
from fractalpre.configs import finetune
from fractalpre.data import sources
from fractalpre.training import classification


def _save(path, array, mode=None):
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(array, mode).save(path) if mode else Image.fromarray(array).save(path)


def _classes(root, names, images=2):
  """root/<name>/<i>.png, every pixel of class k equal to 10 * (k + 1), so a label can be read off."""
  for k, name in enumerate(names):
    for i in range(images):
      _save(root / name / f"{i}.png", np.full((6, 6), 10 * (k + 1), np.uint8))


def _big_header(path, width=20_000, height=20_000):
  """A valid small PNG whose header declares width x height (a decompression bomb's signature)."""
  data = bytearray(util.png_bytes(np.zeros((2, 2), np.uint8)))
  ihdr = 8 + 8  # signature, then the IHDR chunk's length and type
  data[ihdr:ihdr + 8] = struct.pack(">II", width, height)
  data[ihdr + 13:ihdr + 17] = struct.pack(">I", zlib.crc32(bytes(data[ihdr - 4:ihdr + 13])))
  path.write_bytes(bytes(data))


def test_a_test_split_missing_a_class_keeps_train_s_labels(tmp_path):
  _classes(tmp_path / "train", ["00000", "00001", "00002"])
  _classes(tmp_path / "test", ["00001", "00002"])
  train, test = sources.ImageFolder(str(tmp_path), "train"), sources.ImageFolder(str(tmp_path), "test")
  assert train.classes == test.classes == ["00000", "00001", "00002"] and test.num_classes == 3
  # test/00001's images carry class index 0's pixel value (written by _classes): the label is 1, as in train
  assert sorted(set(test.labels.tolist())) == [1, 2]
  for i in range(len(test)):
    assert test.classes[test[i][1]] == test.files[i].parent.name


def test_a_class_only_in_test_an_empty_class_and_a_link_outside_are_refused(tmp_path):
  _classes(tmp_path / "train", ["a", "b"])
  _classes(tmp_path / "test", ["a", "zebra"])
  with pytest.raises(ValueError, match=r"class folders that .*train' lacks: zebra"):
    sources.ImageFolder(str(tmp_path), "test")
  (tmp_path / "train" / "empty").mkdir()
  with pytest.raises(ValueError, match=r"class folder '.*empty' holds no images"):
    sources.ImageFolder(str(tmp_path), "train")
  (tmp_path / "train" / "empty").rmdir()
  _classes(tmp_path / "elsewhere", ["c"])
  (tmp_path / "train" / "c").symlink_to(tmp_path / "elsewhere" / "c")
  with pytest.raises(ValueError, match=r"class folder '.*c' links outside"):
    sources.ImageFolder(str(tmp_path / "train"), "train")


def test_images_are_read_by_their_mode_and_each_conversion_is_counted_once(tmp_path, capsys):
  gradient = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (8, 1))
  _save(tmp_path / "a" / "deep.png", gradient)  # 16-bit gray
  rgba = np.zeros((8, 8, 4), np.uint8)
  rgba[..., 0], rgba[..., 3] = 200, 50
  _save(tmp_path / "a" / "rgba.png", rgba)
  (tmp_path / "b").mkdir()
  Image.fromarray(np.full((8, 8, 3), 30, np.uint8)).convert("P").save(tmp_path / "b" / "p1.png")
  Image.fromarray(np.full((8, 8, 3), 90, np.uint8)).convert("P").save(tmp_path / "b" / "p2.png")
  folder = sources.ImageFolder(str(tmp_path), "train")
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1
  assert "1 images 16-bit scaled to 8-bit" in err[0] and "2 images palette converted to RGB" in err[0]
  assert "1 images alpha dropped" in err[0]
  deep = folder[folder.files.index(tmp_path / "a" / "deep.png")][0]
  assert deep.dtype == np.uint8 and deep.shape == (8, 64)
  np.testing.assert_array_equal(deep[0], np.round(gradient[0] * (255 / 65535)).astype(np.uint8))
  assert abs(deep.mean() - 127.5) < 1  # not clipped to white (convert("L") gave 254.5)
  rgb = folder[folder.files.index(tmp_path / "a" / "rgba.png")][0]
  assert rgb.shape == (8, 8, 3) and (rgb[..., 0] == 200).all()


@pytest.fixture
def damaged(tmp_path):
  _classes(tmp_path, ["a", "b"], images=3)
  good = (tmp_path / "a" / "0.png").read_bytes()
  (tmp_path / "a" / "truncated.png").write_bytes(good[: len(good) // 2])
  (tmp_path / "a" / "zero.png").write_bytes(b"")
  (tmp_path / "b" / "text.png").write_text("not an image")
  _big_header(tmp_path / "b" / "huge.png")
  return tmp_path


def test_unreadable_files_are_refused_before_training_naming_the_first_few_and_the_count(damaged):
  with pytest.raises(ValueError) as e:
    sources.ImageFolder(str(damaged), "train")
  message = str(e.value)
  assert "\n" not in message and "4 of 10 files cannot be read as images" in message
  assert "a/truncated.png (not a readable image" in message and "a/zero.png (empty file)" in message
  assert "b/huge.png (400000000 pixels is over the pixel limit of 89478485)" in message and "and 1 more" in message
  assert "data.skip_bad_images=True" in message
  config = finetune.get_config(f"dataset={damaged},steps=2,batch=8")
  with pytest.raises(util.UsageError, match="4 of 10 files cannot be read as images"):
    classification.train_and_evaluate(config, damaged.parent / "run", progress=False)
  assert not (damaged.parent / "run" / "checkpoints").exists()


def test_skipping_unreadable_files_reads_each_file_once_and_says_how_many(damaged, capsys, monkeypatch):
  reads = []
  real = sources.read_image
  monkeypatch.setattr(sources, "read_image", lambda path, *a: reads.append(path) or real(path, *a))
  folder = sources.ImageFolder(str(damaged), "train", skip_bad=True)
  assert len(folder) == 6 and sorted(reads) == sorted(set(reads)) and len(reads) == 10
  assert "skipped 4 unreadable files of 10" in capsys.readouterr().err
  for i in range(len(folder)):  # epochs read only the good files
    folder[i]
  assert len(reads) == 16


def test_a_train_folder_without_test_holds_out_the_same_images_from_both_splits(tmp_path):
  _classes(tmp_path / "train", ["a", "b"], images=5)
  train = sources.ImageFolder(str(tmp_path), "train", test_fraction=0.4)
  test = sources.ImageFolder(str(tmp_path), "test", test_fraction=0.4)
  assert len(train) == 6 and len(test) == 4 and not set(train.files) & set(test.files)


def test_integer_images_outside_16_bits_are_refused(tmp_path):
  Image.fromarray(np.array([[-5, 300]], np.int32), "I").save(tmp_path / "neg.tif")
  with pytest.raises(util.UnreadableImage, match=r"32-bit integer image with values in \[-5, 300\]"):
    util.read_image(tmp_path / "neg.tif")
