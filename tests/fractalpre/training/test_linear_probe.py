"""The linear probe measures features: its result does not depend on their scale, it fits separable
features, and its regularisation is chosen on the training labels alone."""
import shutil

import numpy as np
import pytest

from fractalpre import util
from fractalpre.configs import linear_probe as probe_config
from fractalpre.training import classification, linear_probe, metric_writer


def _blobs(seed, n_per_class=12, classes=3, dim=16, spread=3.0):
  rng = np.random.default_rng(seed)
  centres = rng.normal(0, spread, (classes, dim))
  y = np.repeat(np.arange(classes), n_per_class)
  return centres[y] + rng.normal(0, 1.0, (len(y), dim)), y


def test_the_probe_does_not_depend_on_the_features_scale():
  (train_x, train_y), (test_x, test_y) = _blobs(0, spread=0.6), _blobs(1, spread=0.6)
  test_x = test_x - test_x.mean(0) + train_x.mean(0)  # same distribution, other samples
  full = linear_probe.probe(train_x, train_y, test_x, test_y, 3)
  small = linear_probe.probe(1e-3 * train_x, train_y, 1e-3 * test_x, test_y, 3)
  assert small["C"] == full["C"] and small["top1"] == full["top1"]
  assert small["nll"] == pytest.approx(full["nll"], rel=1e-6)


def test_separable_features_are_fit_and_classified_perfectly():
  rng = np.random.default_rng(0)
  y = np.repeat(np.arange(4), 10)
  x = np.eye(4)[y] * 5 + 0.01 * rng.normal(size=(40, 4))
  scores = linear_probe.probe(x, y, x[::3], y[::3], 4)
  assert scores["train_top1"] == 1.0 and scores["top1"] == 1.0


def test_the_regularisation_is_chosen_without_the_test_labels():
  train_x, train_y = _blobs(0, spread=0.5)
  test_x, test_y = _blobs(2, spread=0.5)
  chosen, _ = linear_probe.choose_c(train_x, train_y, seed=0)
  with_true = linear_probe.probe(train_x, train_y, test_x, test_y, 3)
  shuffled = np.random.default_rng(5).permutation(test_y)
  with_shuffled = linear_probe.probe(train_x, train_y, test_x, shuffled, 3)
  assert with_true["C"] == with_shuffled["C"] == chosen
  # shuffled labels leave every C at chance, and a choice made on them would fall to the smallest C
  assert chosen != linear_probe.C_GRID[0]


def test_the_probe_config_runs_as_a_workdir_and_is_reused(tmp_path):
  config = probe_config.get_config("dataset=digits,labels_per_class=5,image_size=16,model=vit_cpu")
  config.model.patch = 8
  first = classification.train_and_evaluate(config, tmp_path, progress=False)
  assert set(first) >= {"eval_top1", "eval_nll", "eval_ece", "eval_C", "eval_train_top1"}
  assert 0.1 < first["eval_top1"] <= 1.0 and first["eval_C"] in linear_probe.C_GRID
  assert [r["step"] for r in metric_writer.read(tmp_path)] == [0]
  assert classification.train_and_evaluate(config, tmp_path, progress=False) == first  # reused, not refit


def test_a_finished_probe_is_reused_only_while_its_checkpoint_is_the_same(tmp_path):
  from tests.fractalpre.training.test_trainer import tiny_config
  pre = tmp_path / "pre"
  classification.train_and_evaluate(tiny_config(total_steps=2), pre, progress=False)
  config = probe_config.get_config(f"dataset=digits,labels_per_class=5,image_size=16,init_from={pre}")
  config.model = tiny_config().model
  first = classification.train_and_evaluate(config, tmp_path / "probe", progress=False)
  assert classification.train_and_evaluate(config, tmp_path / "probe", progress=False) == first
  # trained further: the probe's score no longer describes it
  classification.train_and_evaluate(tiny_config(total_steps=4, checkpoint_every=4), pre, progress=False)
  with pytest.raises(util.UsageError, match=r"holds a run with another config or inputs \(init_from: \"step 2, "
                                              r"parameters [0-9a-f]{16}\" -> \"step 4, parameters [0-9a-f]{16}\"\); "
                                              r"use a new --workdir, or --restart"):
    classification.train_and_evaluate(config, tmp_path / "probe", progress=False)
  # deleted: one line naming init_from
  shutil.rmtree(pre)
  with pytest.raises(util.UsageError, match=rf"^init_from {pre} is not a folder"):
    classification.train_and_evaluate(config, tmp_path / "probe", progress=False)
