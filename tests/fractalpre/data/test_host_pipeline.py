import numpy as np
import ml_collections
import pytest
import tensorflow_datasets as tfds

from fractalpre.data import host_pipeline
from fractalpre.data import sources
from fractalpre.data import registry


def data_config(**kw):
  c = ml_collections.ConfigDict(dict(kind="1p-frac", num_classes=12, render_size=24, points=500, seed=0,
                                     image_size=16, workers=2, prefetch=2))
  c.augment = ml_collections.ConfigDict(dict(crop_scale=(0.08, 1.0), hflip=0.5, vflip=0.5, label_smoothing=0.1,
                                             mixup=0.8, cutmix=1.0))
  c.update_from_flattened_dict(kw)
  return c


def test_batches_are_normalised_soft_targets_and_resume_exactly():
  cfg = data_config()
  source = registry.get_source(cfg)
  it = host_pipeline.train_iterator(source, cfg, 8, seed=3)
  first = next(it)
  assert first["image"].shape == (8, 16, 16, 3) and first["image"].dtype == np.float32
  assert first["image"].min() >= -1 and first["image"].max() <= 1
  np.testing.assert_allclose(first["label"].sum(1), 1, rtol=1e-6)
  state = it.get_state()
  expected = [next(it) for _ in range(3)]
  resumed = host_pipeline.train_iterator(source, cfg, 8, seed=3)
  resumed.set_state(state)
  for want in expected:
    got = next(resumed)
    np.testing.assert_array_equal(got["image"], want["image"])
    np.testing.assert_array_equal(got["label"], want["label"])
  other = next(host_pipeline.train_iterator(source, cfg, 8, seed=4))
  assert not np.array_equal(other["image"], first["image"])


def test_without_augmentation_targets_are_smoothed_one_hots_of_the_source():
  cfg = data_config(**{"augment.crop_scale": None, "augment.hflip": 0.0, "augment.vflip": 0.0,
                       "augment.mixup": 0.0, "augment.cutmix": 0.0, "augment.label_smoothing": 0.2})
  source = registry.get_source(cfg)
  batch = next(host_pipeline.train_iterator(source, cfg, 12, seed=0))
  labels = batch["label"].argmax(1)
  assert len(set(labels)) > 1  # shuffled across classes
  np.testing.assert_allclose(batch["label"].max(1), 0.8 + 0.2 / 12, rtol=1e-6)
  for image, label in zip(batch["image"], labels):
    want = host_pipeline.evaluation_view(source[int(label)], 16)[0]
    np.testing.assert_allclose(image, want, atol=1e-6)


def test_mix_batch_targets_match_the_pasted_area():
  mix = host_pipeline.MixBatch(num_classes=2, label_smoothing=0.0, mixup=0.0, cutmix=1.0)
  images = np.stack([np.zeros((10, 10, 3)), np.ones((10, 10, 3))]).astype(np.float32)
  out = mix((images, np.array([0, 1])), np.random.default_rng(5))
  pasted = out["image"][0, ..., 0].mean()  # fraction of image 0 now showing image 1
  np.testing.assert_allclose(out["label"][0], [1 - pasted, pasted], atol=1e-6)


def test_digits_split_and_few_labels():
  train = sources.Digits("train", labels_per_class=7)
  test = sources.Digits("test")
  assert len(train) == 70 and np.bincount(train.labels).tolist() == [7] * 10
  assert not set(train.indices) & set(test.indices)
  assert len(sources.Digits("train")) + len(test) == 1797
  with pytest.raises(ValueError, match=r"labels_per_class must be in \[1, "):
    sources.Digits("train", labels_per_class=0)


def test_lfw_split_is_stratified_and_fixed():
  from skimage.data import lfw_subset
  train, test = sources.LfwSubset("train"), sources.LfwSubset("test")
  assert np.bincount(train.labels).tolist() == np.bincount(test.labels).tolist() == [50, 50]
  assert sorted([*train.indices, *test.indices]) == list(range(200))
  few = sources.LfwSubset("train", labels_per_class=10)
  assert np.bincount(few.labels).tolist() == [10, 10] and set(few.indices) <= set(train.indices)
  again = registry.get_source(ml_collections.ConfigDict(dict(kind="lfw", labels_per_class=10)), "train")
  np.testing.assert_array_equal(again.indices, few.indices)  # the same split on every call
  assert not np.array_equal(sources.LfwSubset("train", seed=1).indices, train.indices)
  raw = lfw_subset()
  image, label = test[0]
  assert image.dtype == np.uint8 and image.shape == (25, 25)
  np.testing.assert_array_equal(image, np.round(raw[test.indices[0]] * 255))
  assert label == int(test.indices[0] >= 100)  # the first 100 are the faces


def test_tfds_source_through_mock_data():
  cfg = ml_collections.ConfigDict(dict(kind="tfds", name="mnist", train_split="train"))
  with tfds.testing.mock_data(num_examples=12, policy=tfds.testing.MockPolicy.USE_CODE):
    source = registry.get_source(cfg)
    assert len(source) == 12 and source.num_classes == 10
    image, label = source[5]
    assert image.shape == (28, 28, 1) and 0 <= label < 10
    view, _ = host_pipeline.evaluation_view((image, label), 16)
    assert view.shape == (16, 16, 3)


def test_unknown_source_kind():
  with pytest.raises(ValueError, match="data.kind must be one of"):
    registry.get_source(ml_collections.ConfigDict(dict(kind="imagenet")))
