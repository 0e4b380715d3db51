import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from fractalpre import optim
from fractalpre.models import vit
from fractalpre.optim import mup
from fractalpre.studies import mup_coords
from fractalpre.training import classification, trainer

WIDTHS = (64, 256, 1024)
BASE = 64


def _model(width, mup_on):
  return vit.ViT(num_classes=10, patch=4, width=width, depth=1, mlp_dim=2 * width, heads=4, pool="gap",
                 mup_base_width=BASE if mup_on else 0)


RNG = np.random.default_rng(0)
IMAGES, LABELS = RNG.normal(size=(8, 8, 8, 3)).astype(np.float32), RNG.integers(0, 10, 8)


@functools.lru_cache
def _params(width):
  """Both parametrisations start from the same weights (the same initialisers and shapes)."""
  return mup.init_params(_model(width, False), IMAGES)


def _spread(mup_on):
  cfg = ml_collections.ConfigDict(dict(optimizer="adamw", lr=1e-3, weight_decay=0.0, warmup_steps=0))

  def tx_for(width, params):
    scales = mup.scales_for(_model(width, True), BASE, (1, 8, 8, 3)) if mup_on else None
    return optim.make(cfg, 10, update_scales=scales)

  return mup_coords.logit_update_spread(lambda w: _model(w, mup_on), WIDTHS, (IMAGES, LABELS), tx_for, steps=1,
                                 params_for=_params)


def test_coordinate_check_logit_updates_stay_flat_under_mup_and_grow_under_sp():
  sp, mu = _spread(False), _spread(True)
  mu_values, sp_values = np.array([mu[w] for w in WIDTHS]), np.array([sp[w] for w in WIDTHS])
  assert mu_values.max() / mu_values.min() <= 2.0, mu
  assert np.all(np.diff(sp_values) > 0) and sp_values[-1] / sp_values[0] > 4.0, sp


def test_update_scales_follow_each_parameters_role():
  scales = mup.scales_for(_model(256, True), BASE, (1, 16, 16, 3))
  block = scales["block0"]
  assert scales["embedding"]["kernel"] == 1.0  # input weights: fan_in fixed
  assert scales["embedding"]["bias"] == scales["pos_embedding"] == 1.0
  assert block["MlpBlock_0"]["Dense_0"]["kernel"] == block["MlpBlock_0"]["Dense_1"]["kernel"] == 0.25  # hidden
  attention = block["MultiHeadDotProductAttention_0"]
  assert attention["query"]["kernel"] == attention["out"]["kernel"] == 0.25
  assert attention["query"]["bias"] == block["LayerNorm_0"]["scale"] == 1.0
  assert scales["head"]["kernel"] == 1.0  # readout: the forward multiplier does the scaling


def test_mup_forward_pass_scales_readout_and_attention():
  x = jnp.asarray(np.random.default_rng(1).normal(size=(2, 16, 16, 3)), jnp.float32)
  sp, mu = _model(256, False), _model(256, True)
  params = sp.init(jax.random.key(0), x)["params"]
  params["head"]["kernel"] = jax.random.normal(jax.random.key(2), params["head"]["kernel"].shape)  # non-zero readout
  attn = params["block0"]["MultiHeadDotProductAttention_0"]
  for name in ("query", "key"):  # sharp attention, so that the logits' scale matters
    attn[name]["kernel"] = attn[name]["kernel"] * 8
  # Same parameters; muP's logits differ (1/d attention, readout times 64/256) ...
  assert not np.allclose(mu.apply({"params": params}, x), sp.apply({"params": params}, x) * 0.25)
  # ... and with attention made irrelevant (zero value projection) only the readout multiplier remains.
  attn["value"]["kernel"] = jnp.zeros_like(attn["value"]["kernel"])
  attn["value"]["bias"] = jnp.zeros_like(attn["value"]["bias"])
  np.testing.assert_allclose(mu.apply({"params": params}, x), sp.apply({"params": params}, x) * 0.25, rtol=1e-5)


def test_trainer_scales_hidden_updates_by_the_width_ratio():
  config = ml_collections.ConfigDict(dict(
      seed=0, total_steps=5, precision="fp32", model=dict(name="vit_cpu", patch=8, width=128, depth=1, mlp_dim=256,
                                                          heads=2),
      optim=dict(optimizer="adamw", lr=1e-2, weight_decay=0.0, warmup_steps=0), mup=dict(base_width=32)))
  mesh = trainer.make_mesh()
  model = classification.model_from_config(config, 10)
  state, _, step = trainer.build(config, mesh, model, (1, 16, 16, 3), classification.classification_loss)
  before = jax.device_get(state["params"])
  rng = np.random.default_rng(0)
  batch = {"image": rng.normal(size=(8, 16, 16, 3)).astype(np.float32),
           "label": np.eye(10, dtype=np.float32)[rng.integers(0, 10, 8)]}
  state, _ = step(state, batch)  # the zero head gives the body no gradient yet
  state, _ = step(state, batch)
  after = jax.device_get(state["params"])
  # Adam's second step moves every body coordinate by the same amount (|g| >> eps; its first gradient
  # was 0): muP divides the hidden weights' move by width / base = 4, not the input weights'.
  hidden = np.abs(after["block0"]["MlpBlock_0"]["Dense_0"]["kernel"] - before["block0"]["MlpBlock_0"]["Dense_0"]["kernel"])
  embed = np.abs(after["embedding"]["kernel"] - before["embedding"]["kernel"])
  assert np.median(embed) > 1e-3
  assert np.median(hidden) / np.median(embed) == pytest.approx(0.25, rel=0.05)


def test_mup_refusals():
  with pytest.raises(ValueError, match="mup.base_width must be in"):
    mup.base_model(_model(256, True), 300)
  from fractalpre.models import resnet
  with pytest.raises(ValueError, match="supported for ViT models"):
    mup.base_model(resnet.ResNet(num_classes=10, stages=(1,)), 4)
  cfg = ml_collections.ConfigDict(dict(optimizer="sgd", lr=0.1, warmup_steps=0))
  with pytest.raises(ValueError, match="Adam-like optimizers"):
    optim.make(cfg, 10, update_scales={})
