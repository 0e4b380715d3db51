"""`fractalpre generate` -> train with no glue: image-folder and TFDS sources, held-out splits."""
import numpy as np
import pytest
from PIL import Image

from fractalpre import cli, fractals
from fractalpre.data import sources
from fractalpre.data import registry
from fractalpre.training.classification import train_and_evaluate
from fractalpre.training.config_files import load_config
from fractalpre.util import UsageError

ARGS = ["--dataset", "1p-frac", "--classes", "4", "--instances", "3", "--test-instances", "2", "--size", "32",
        "--points", "3000", "--quiet"]


def _reference():
  """The same categories with 5 instances: 0-2 are the training split, 3-4 the held-out one."""
  return fractals.OnePFrac(num_classes=4, instances_per_class=5, size=32, points=3000)


@pytest.fixture(scope="module", params=["png", "tfds"])
def generated(request, tmp_path_factory):
  out = tmp_path_factory.mktemp(request.param) / "data"
  assert cli.main(["generate", *ARGS, "--format", request.param, "--out", str(out)]) == 0
  return request.param, out


def _source(fmt, out, split):
  kind = {"kind": "folder", "path": str(out)} if fmt == "png" else {"kind": "tfds", "name": str(out)}
  import ml_collections
  return registry.get_source(ml_collections.ConfigDict(kind), split)


def test_both_splits_read_back_as_the_generator_defines_them(generated):
  fmt, out = generated
  ref = _reference()
  for split, first in (("train", 0), ("test", 3)):
    src = _source(fmt, out, split)
    per_class = 3 if split == "train" else 2
    assert len(src) == 4 * per_class and src.num_classes == 4
    for j in range(len(src)):
      image, label = src[j]
      c, i = divmod(j, per_class)
      expected, expected_label = ref[c * 5 + first + i]
      assert label == expected_label == c
      np.testing.assert_array_equal(np.asarray(image).reshape(expected.shape), expected)


def test_training_on_the_written_dataset_evaluates_its_test_split(generated, tmp_path):
  fmt, out = generated
  config = load_config(f"configs/pretrain_generated_vit.py:path={out},runlocal,steps=2")
  config.batch_size = 8
  config.model.update(depth=1, width=32, mlp_dim=64, heads=2)  # the data path is under test, not the model
  assert config.eval_every == 2 and config.data.kind == ("folder" if fmt == "png" else "tfds")
  metrics = train_and_evaluate(config, tmp_path / "run", progress=False)
  assert 0.0 <= metrics["eval_top1"] <= 1.0 and np.isfinite(metrics["eval_nll"])


def test_tfds_folder_relative_to_the_working_directory(generated, monkeypatch):
  fmt, out = generated
  if fmt != "tfds":
    pytest.skip("TFDS only")
  monkeypatch.chdir(out.parent)
  assert len(sources.TfdsSource("data", "test")) == 8
  with pytest.raises(ValueError, match="has no split 'validation'; it has \\['test', 'train'\\]"):
    sources.TfdsSource("data", "validation")
  with pytest.raises(ValueError, match="data.name 'nothing/here' is not a folder"):
    sources.TfdsSource("nothing/here", "train")


def _folder(root, sizes):
  for c, size in enumerate(sizes):
    (root / f"class{c}").mkdir(parents=True)
    for i in range(5):
      Image.fromarray(np.full((size, size, 3), 40 * c + i, np.uint8)).save(root / f"class{c}" / f"{i}.jpg")


def test_a_flat_folder_holds_out_the_last_fraction_of_each_class(tmp_path):
  _folder(tmp_path, (8, 8))
  train, test = sources.ImageFolder(str(tmp_path), "train", 0.4), sources.ImageFolder(str(tmp_path), "test", 0.4)
  assert [f.name for f in test.files] == ["3.jpg", "4.jpg"] * 2 and len(train) == 6
  assert list(test.labels) == [0, 0, 1, 1] and train[0][0].shape == (8, 8, 3)
  with pytest.raises(ValueError, match="has no test/ folder; set data.test_fraction"):
    sources.ImageFolder(str(tmp_path), "test")
  with pytest.raises(ValueError, match="is not a folder"):
    sources.ImageFolder(str(tmp_path / "missing"))


def test_mixed_sizes_on_the_device_path_are_one_clear_error(tmp_path):
  from fractalpre.data import device_pipeline
  _folder(tmp_path, (8, 12))
  with pytest.raises(UsageError, match=r"found \(12, 12, 3\), the first image is \(8, 8, 3\); set data.augment_on=host"):
    device_pipeline.render_all(sources.ImageFolder(str(tmp_path)))
