import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fractalpre import optim
from fractalpre.training import config_files

ESS, WD, H0, B1, B2, LR = 50.0, 1e-3, 0.5, 0.9, 0.99, 0.05


def test_matches_the_reference_equations_step_by_step():
  a = np.array([2.0, 0.5, 1.5], np.float32)
  grad = lambda theta: a * theta + 0.3  # a quadratic with a linear term
  tx = optim.ivon(LR, ESS, hess_init=H0, b1=B1, b2=B2, weight_decay=WD)
  m = jnp.array([1.0, -2.0, 0.5])
  state = tx.init(m)
  rm, rg, rh = np.asarray(m, np.float64), np.zeros(3), np.full(3, H0)
  for t in range(1, 8):
    theta, state = optim.ivon_sample(jax.random.key(t), m, state, ESS, WD)
    eps = np.asarray(state.noise, np.float64) * np.sqrt(ESS * (rh + WD))  # the N(0, 1) draw behind it
    # The IVON update of Shen et al. (2024), written out:
    sigma = 1 / np.sqrt(ESS * (rh + WD))
    r_theta = rm + sigma * eps
    g_hat = a * r_theta + 0.3
    h_hat = g_hat * (r_theta - rm) / sigma**2
    rg = B1 * rg + (1 - B1) * g_hat
    rh = B2 * rh + (1 - B2) * h_hat + 0.5 * (1 - B2) ** 2 * (rh - h_hat) ** 2 / (rh + WD)
    rm = rm - LR * (H0 + WD) * ((rg / (1 - B1**t) + WD * rm) / (rh + WD))
    updates, state = tx.update(grad(theta), state, m)
    m = m + updates
    np.testing.assert_allclose(np.asarray(theta), r_theta, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(state.hess), rh, rtol=1e-4)
    np.testing.assert_allclose(np.asarray(m), rm, rtol=1e-4, atol=1e-6)


def test_recovers_a_known_diagonal_curvature():
  a = jnp.array([0.5, 2.0, 8.0])
  tx = optim.ivon(1e-3, ess=1e4, hess_init=1.0, b2=0.999, weight_decay=0.0)
  m = jnp.zeros(3)
  state = tx.init(m)

  @jax.jit
  def step(key, m, state):
    theta, state = optim.ivon_sample(key, m, state, 1e4, 0.0)
    updates, state = tx.update(a * theta, state, m)
    return m + updates, state

  for t in range(6000):
    m, state = step(jax.random.key(t), m, state)
  np.testing.assert_allclose(np.asarray(state.hess), np.asarray(a), rtol=0.05)


def test_clip_radius_bounds_the_step():
  tx = optim.ivon(1.0, ESS, hess_init=1.0, weight_decay=0.0, clip_radius=0.01)
  m = jnp.zeros(2)
  state = tx.init(m)
  _, state = optim.ivon_sample(jax.random.key(0), m, state, ESS, 0.0)
  updates, _ = tx.update(jnp.array([1e3, -1e3]), state, m)
  np.testing.assert_allclose(np.abs(np.asarray(updates)), 0.01, rtol=1e-6)


@pytest.mark.parametrize("kwargs,message", [({"ess": 0}, "ess must be > 0"), ({"ess": 1, "hess_init": 0}, "hess_init must be > 0")])
def test_bad_arguments(kwargs, message):
  with pytest.raises(ValueError, match=message):
    optim.ivon(0.1, **kwargs)


def test_bma_averages_the_samples_probabilities():
  from fractalpre.data import host_pipeline, sources
  from fractalpre.training import classification, classification_scores, trainer
  source = sources.Digits("test")
  rng = np.random.default_rng(0)
  weights = [rng.normal(size=(32 * 32 * 3, 10)).astype(np.float32) * 0.01 for _ in range(3)]
  logits_fn = lambda state, images: images.reshape(len(images), -1) @ state["w"]
  sharding = jax.sharding.NamedSharding(trainer.make_mesh(), jax.sharding.PartitionSpec("data"))
  bma = classification.evaluate_source(logits_fn, [{"w": w} for w in weights], source, 32, 64, sharding)
  single = classification.evaluate_source(logits_fn, {"w": weights[0]}, source, 32, 64, sharding)
  # By hand: mean of the three softmaxes, in float64.
  images = np.stack([host_pipeline.evaluation_view(source[i], 32)[0] for i in range(len(source))])
  probs = np.mean([classification_scores.softmax(images.reshape(len(images), -1).astype(np.float64) @ w) for w in weights], 0)
  nll = -np.mean(np.log(probs[np.arange(len(source)), source.labels]))
  assert bma["nll"] == pytest.approx(nll, rel=1e-4)
  assert bma["ece"] == pytest.approx(classification_scores.expected_calibration_error(probs, source.labels), abs=1e-4)
  assert single["nll"] != pytest.approx(bma["nll"], rel=1e-4)


def test_ivon_finetuning_learns_curvature_and_reports_bma(tmp_path):
  from fractalpre.data import sources
  from fractalpre.training import classification
  config = config_files.load_config("configs/finetune.py:dataset=digits,labels_per_class=5,optimizer=ivon,ess=none,steps=3,batch=64,bma=2")
  config.model.update(dict(patch=8, width=32, depth=1, mlp_dim=64, heads=2))
  config.update(tensorboard=False, checkpoint_every=3)  # step 3 alone is read back
  final = classification.train_and_evaluate(config, tmp_path, progress=False)
  for k in ("top1", "nll", "ece"):
    assert np.isfinite(final[f"eval_{k}"]) and np.isfinite(final[f"eval_bma_{k}"])
  assert final["eval_bma_nll"] != final["eval_nll"]  # the samples differ from the mean
  saved = json.loads((tmp_path / "config.json").read_text())
  assert saved["optim"]["ess"] == len(sources.Digits("train", labels_per_class=5)) == 50
  import orbax.checkpoint as ocp
  state = ocp.CheckpointManager((tmp_path / "checkpoints").absolute(), item_names=("state", "data")).restore(
      3, args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]
  hess = state["opt_state"]["hess"]["head"]["kernel"]
  assert not np.allclose(hess, 1.0)  # the curvature estimate moved from hess_init
