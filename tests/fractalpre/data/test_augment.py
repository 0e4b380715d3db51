"""Device-side augmentation against the recipe: its statistics, the identity crop, and bit-identical
batches on any device count."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import ml_collections

from fractalpre.data import augment, device_pipeline, host_pipeline
from fractalpre.data import registry
from fractalpre.training import trainer

KEY = jax.random.key(7)


def test_crop_boxes_follow_random_resized_crop():
  boxes = jax.vmap(lambda k: jnp.stack(augment.crop_box(k, 64, 96, (0.08, 1.0), (3 / 4, 4 / 3))))(
      jax.random.split(KEY, 4000))
  top, left, h, w = np.asarray(boxes).T
  assert (top >= 0).all() and (left >= 0).all() and (top + h <= 64).all() and (left + w <= 96).all()
  area = h * w / (64 * 96)
  assert area.min() >= 0.08 * 0.9 and area.max() <= 1.0  # rounding moves an area by a few pixels
  assert area.min() < 0.1 and area.max() > 0.85  # spread over the range (64 x 96 at 4:3 at most is 0.89)
  # The same distribution as the host path's sampler (torchvision's algorithm, written in NumPy).
  host = host_pipeline.Augment(32, (0.08, 1.0), (3 / 4, 4 / 3))
  rng = np.random.default_rng(0)
  boxes = np.array([host._crop_box(64, 96, rng) for _ in range(4000)])
  host_area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) / (64 * 96)
  q = np.linspace(0.05, 0.95, 19)
  np.testing.assert_allclose(np.quantile(area, q), np.quantile(host_area, q), atol=0.03)
  ratio = w / h
  assert ratio.min() >= 3 / 4 * 0.9 and ratio.max() <= 4 / 3 * 1.1
  assert np.quantile(np.log(ratio), 0.5) == pytest.approx(0.0, abs=0.05)  # log-uniform, symmetric


def test_the_identity_crop_reproduces_the_resized_image():
  image = jax.random.randint(KEY, (40, 40, 1), 0, 256).astype(jnp.uint8)
  aug = augment.DeviceAugment(image_size=40, num_classes=3, crop_scale=None, hflip=0.0, vflip=0.0,
                              label_smoothing=0.0)
  out = aug(KEY, 0, image[None], jnp.array([2]))
  np.testing.assert_allclose(out["image"][0], (np.repeat(np.asarray(image), 3, -1) / 255.0 - 0.5) / 0.5, atol=1e-5)
  np.testing.assert_array_equal(out["label"], [[0, 0, 1]])
  small = augment.DeviceAugment(image_size=16, num_classes=3, crop_scale=None, hflip=0.0, vflip=0.0)
  expected = jax.image.resize(image.astype(jnp.float32), (16, 16, 1), "linear", antialias=True)
  np.testing.assert_allclose(small.image(KEY, image), expected, atol=1e-4)


def test_flip_rates_and_label_smoothing():
  image = jnp.arange(8 * 8, dtype=jnp.uint8).reshape(8, 8, 1)
  aug = augment.DeviceAugment(image_size=8, num_classes=10, crop_scale=None, hflip=0.3, vflip=0.7,
                              label_smoothing=0.1)
  out = aug(KEY, 3, jnp.broadcast_to(image, (2000, 8, 8, 1)), jnp.zeros(2000, jnp.int32))
  x = np.asarray(out["image"][..., 0])
  reference = (np.asarray(image[..., 0], np.float32) / 255 - 0.5) / 0.5
  h = np.mean([np.allclose(v, reference[:, ::-1]) or np.allclose(v, reference[::-1, ::-1]) for v in x])
  v = np.mean([np.allclose(v, reference[::-1]) or np.allclose(v, reference[::-1, ::-1]) for v in x])
  assert h == pytest.approx(0.3, abs=0.04) and v == pytest.approx(0.7, abs=0.04)
  np.testing.assert_allclose(np.asarray(out["label"]).sum(1), 1.0, rtol=1e-6)
  np.testing.assert_allclose(out["label"][0, :2], [0.91, 0.01], rtol=1e-6)


def test_mixup_and_cutmix_lambdas_follow_their_beta_distributions():
  images = jnp.zeros((2, 32, 32, 1)).at[0].set(1.0)
  labels = jnp.array([0, 1])
  for alpha, kind in ((0.8, "mixup"), (1.0, "cutmix")):
    aug = augment.DeviceAugment(32, 2, label_smoothing=0.0, mixup=alpha if kind == "mixup" else 0.0,
                                cutmix=alpha if kind == "cutmix" else 0.0)
    mixed, mixed_targets = jax.jit(jax.vmap(lambda k: aug.mix(k, images, labels)))(jax.random.split(KEY, 600))
    lams = np.asarray(mixed_targets[:, 0, 0])
    # the image is mixed by the same lambda as the targets (cutmix: the pasted area)
    np.testing.assert_allclose(np.asarray(mixed[:, 0]).mean((1, 2, 3)), lams, atol=1e-4)
    np.testing.assert_allclose(np.asarray(mixed_targets).sum(2), 1.0, rtol=1e-6)
    if kind == "mixup":  # Beta(a, a)
      assert lams.mean() == pytest.approx(0.5, abs=0.04)
      assert lams.var() == pytest.approx(1 / (4 * (2 * alpha + 1)), rel=0.25)
    else:  # the pasted box is clipped at the border, so the area's lambda is the host path's, not Beta's
      host = host_pipeline.MixBatch(2, 0.0, 0.0, alpha)
      rng = np.random.default_rng(0)
      host_lams = [host((np.asarray(images), np.array([0, 1])), rng)["label"][0, 0] for _ in range(600)]
      assert lams.mean() == pytest.approx(np.mean(host_lams), abs=0.04)
      assert lams.std() == pytest.approx(np.std(host_lams), rel=0.2)
  both = augment.DeviceAugment(32, 2, mixup=0.8, cutmix=1.0)
  mixed, _ = jax.jit(jax.vmap(lambda k: both.mix(k, images, labels)))(jax.random.split(KEY, 400))
  kinds = [bool(np.isin(np.asarray(m[0]), [0.0, 1.0]).all()) for m in mixed]
  assert np.mean(kinds) == pytest.approx(0.5, abs=0.08)  # cutmix leaves only whole pixels of either image


def _device_batch(n_devices, source, step, **recipe):
  mesh = jax.make_mesh((n_devices,), ("data",), devices=jax.devices()[:n_devices],
                       axis_types=(jax.sharding.AxisType.Auto,))
  data = device_pipeline.Resident(source, mesh, 16)
  aug = augment.DeviceAugment(16, source.num_classes, **recipe)
  fn = jax.jit(lambda s, inputs: aug(KEY, s, *data.batch(KEY, s, inputs), whole=NamedSharding(mesh, P())),
               out_shardings=NamedSharding(mesh, P("data")))
  return jax.device_get(fn(step, data.host_batch())), data


def test_a_global_batch_is_the_same_bits_on_1_and_8_devices_and_gray_stays_one_channel():
  source = registry.get_source(ml_collections.ConfigDict(
      dict(kind="1p-frac", num_classes=8, render_size=24, points=300, seed=0)))
  for step in (5,):
    one, _ = _device_batch(1, source, step, cutmix=1.0)
    eight, data = _device_batch(8, source, step, cutmix=1.0)
    for k in one:
      np.testing.assert_array_equal(one[k], eight[k])  # crops, flips, smoothing, cutmix: the same bits
    one, _ = _device_batch(1, source, step, mixup=0.8)
    eight, _ = _device_batch(8, source, step, mixup=0.8)
    for k in one:
      np.testing.assert_array_equal(one[k], eight[k])  # mixup's blend too
  assert data.images.shape == (8, 24, 24, 1) and data.images.dtype == jnp.uint8
  assert one["image"].shape == (16, 16, 16, 3)


def test_resident_batches_walk_epoch_permutations():
  source = [(np.full((4, 4), i, np.uint8), i % 3) for i in range(5)]
  mesh = trainer.make_mesh()
  data = device_pipeline.Resident(type("S", (), {"__len__": lambda s: 5, "__getitem__": lambda s, i: source[i]})(),
                              mesh, 8)
  seen = np.concatenate([np.asarray(data.indices(KEY, step)) for step in range(5)])  # 40 = 8 epochs of 5
  for epoch in range(8):
    assert sorted(seen[5 * epoch:5 * epoch + 5]) == [0, 1, 2, 3, 4]
  assert math.prod(data.images.shape) == 5 * 16
