"""A linear probe that measures the features, not a head's optimiser: the protocol of CLIP (Radford et al.,
"Learning Transferable Visual Models From Natural Language Supervision", 2021), with MAE's observation (He et
al., 2022) that features must be normalised before a linear head.

The frozen model's pre-head features of every training and test image (the whole image at the model's input
size, no augmentation) are standardised with the training split's mean and standard deviation, so the result
does not depend on their scale; an L2-regularised logistic regression is fit by L-BFGS (scikit-learn), its
strength C chosen from a log grid by stratified k-fold cross-validation on the training labels only (never the
test split), then refit on every training label and evaluated on the test split (top-1, NLL, ECE).
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from fractalpre import util
from fractalpre.data import host_pipeline, registry
from fractalpre.training import checkpoints, classification_scores, init_from, metric_writer, workdir_claim

C_GRID = tuple(float(c) for c in np.logspace(-4, 4, 17))  # inverse L2 strength, 10^-4 .. 10^4, half decades
FOLDS = 5


def features(model, variables, source, image_size: int, batch: int = 256) -> tuple[np.ndarray, np.ndarray]:
  """(float64 (n, d) pre-head features, int (n,) labels) of a whole source: the model with its head replaced
  by the identity returns its features as its logits."""
  apply = jax.jit(lambda v, x: model.apply(v, x, train=False))
  feats, labels = [], []
  for b in host_pipeline.eval_batches(source, image_size, batch):
    feats.append(np.asarray(apply(variables, jnp.asarray(b["image"])), np.float64)[b["mask"]])
    labels.append(b["label"][b["mask"]])
  return np.concatenate(feats), np.concatenate(labels)


def choose_c(x: np.ndarray, y: np.ndarray, seed: int, grid=C_GRID, folds: int = FOLDS) -> tuple[float, dict]:
  """The C of the best mean validation accuracy over stratified folds of (x, y) (ties: the smaller C, the
  stronger regularisation), and {C: accuracy}. Only these labels are used."""
  from sklearn.model_selection import StratifiedKFold
  folds = min(folds, int(np.bincount(y).min()))
  if folds < 2:
    raise util.UsageError("the linear probe needs at least 2 training labels of every class to choose its "
                          "regularisation; use more labels per class")
  splits = list(StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, y))
  scores = {}
  for c in grid:
    accuracy = []
    for train, held_out in splits:
      model = _fit(x[train], y[train], c)
      accuracy.append(np.mean(model.predict(_standardise(x[train], x[held_out])) == y[held_out]))
    scores[c] = float(np.mean(accuracy))
  best = max(scores.values())
  return min(c for c, s in scores.items() if s == best), scores


def probe(train_x, train_y, test_x, test_y, num_classes: int, seed: int = 0, grid=C_GRID) -> dict:
  """top1 / nll / ece on the test split of the logistic regression chosen on the training split, with the
  chosen C and the training accuracy."""
  c, _ = choose_c(train_x, train_y, seed, grid)
  model = _fit(train_x, train_y, c)
  log_probs = np.full((len(test_x), num_classes), -np.inf)
  log_probs[:, model.classes_] = model.predict_log_proba(_standardise(train_x, test_x))
  scores = classification_scores.classification_metrics(log_probs, test_y)
  train_top1 = float(np.mean(model.predict(_standardise(train_x, train_x)) == train_y))
  return {**scores, "C": c, "train_top1": train_top1}


def _standardise(reference: np.ndarray, x: np.ndarray) -> np.ndarray:
  mean, std = reference.mean(0), reference.std(0)
  return (x - mean) / np.where(std > 0, std, 1.0)


def _fit(x: np.ndarray, y: np.ndarray, c: float):
  from sklearn.exceptions import ConvergenceWarning
  from sklearn.linear_model import LogisticRegression
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", ConvergenceWarning)  # the weakest penalties on separable data
    return LogisticRegression(C=c, max_iter=1000).fit(_standardise(x, x), y)


def probe_and_evaluate(config, workdir: str | os.PathLike, restart: bool = False) -> dict:
  """The probe of `config.init_from`'s features (or of a randomly initialised model's, when it is empty) on
  the config's data, recorded like a training run: config.json, one metrics.jsonl line (step 0) with
  eval_top1 / eval_nll / eval_ece / eval_C / eval_train_top1. A finished probe is reused."""
  from fractalpre.training import classification
  workdir = Path(workdir)
  with util.usage_errors():  # the data settings, checked before the workdir is claimed
    train, test = registry.get_source(config.data, "train"), registry.get_source(config.data, "test")
  if train.num_classes < 2:
    raise util.UsageError(f"the linear probe needs at least 2 classes, and {config.data.get('path') or config.data.kind} "
                          f"has {train.num_classes}")
  lock = workdir_claim.claim(workdir, config, restart)
  try:
    done = metric_writer.read(workdir) if (workdir / "metrics.jsonl").exists() else []
    if done:
      return {k: v for k, v in done[-1].items() if k != "step"}
    shape = (1, config.image_size, config.image_size, 3)
    probe_model = classification.model_from_config(config, 1)
    width = jax.eval_shape(probe_model.init, jax.random.key(0), jnp.zeros(shape))["params"]["head"]["kernel"].shape[0]
    model = classification.model_from_config(config, width)  # its head: the identity
    variables = model.init(jax.random.key(config.seed), jnp.zeros(shape))
    params = dict(variables["params"])
    if config.get("init_from"):
      state = checkpoints.load_state(config.init_from)
      source = f"init_from {config.init_from} ({init_from.checkpoint_model(config.init_from)})"
      params = init_from.merge_pretrained(params, state["params"], config.model.name, source)
      if state.get("batch_stats"):
        variables = {**variables, "batch_stats": state["batch_stats"]}
    params["head"] = {"kernel": np.eye(width, dtype=np.float32), "bias": np.zeros(width, np.float32)}
    variables = {**variables, "params": params}
    train_x, train_y = features(model, variables, train, config.image_size)
    test_x, test_y = features(model, variables, test, config.image_size)
    if not (np.isfinite(train_x).all() and np.isfinite(test_x).all()):
      raise util.UsageError(f"init_from {config.get('init_from') or '(none: a random init)'}: the model's features "
                            "are not finite (NaN or infinite parameters, as a diverged run leaves them); probe "
                            "another run")
    scores = probe(train_x, train_y, test_x, test_y, train.num_classes, config.seed)
    record = {f"eval_{k}": v for k, v in scores.items()}
    writer = metric_writer.MetricWriter(workdir, tensorboard=False)
    writer.write(0, record)
    writer.close()
    return record
  finally:
    if lock is not None:
      lock.release()
