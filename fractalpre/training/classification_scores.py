"""Classification metrics: top-1, NLL and expected calibration error (10 equal-width bins)."""
from __future__ import annotations

import numpy as np


def softmax(logits: np.ndarray) -> np.ndarray:
  z = logits - logits.max(axis=-1, keepdims=True)
  e = np.exp(z)
  return e / e.sum(axis=-1, keepdims=True)


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 10) -> float:
  """sum_b |B_b|/n * |accuracy(B_b) - confidence(B_b)| over equal-width confidence bins; a confidence
  of exactly 1 falls in the last bin, and bins are (lo, hi] with the first one [0, hi]."""
  confidence = probs.max(axis=-1)
  correct = probs.argmax(axis=-1) == labels
  which = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
  ece = 0.0
  for b in range(bins):
    members = which == b
    if members.any():
      ece += members.mean() * abs(correct[members].mean() - confidence[members].mean())
  return float(ece)


def classification_metrics(logits: np.ndarray, labels: np.ndarray) -> dict:
  """top1 (fraction), nll (nats) and ece of logits (n, classes) against integer labels (n,)."""
  logits = np.asarray(logits, np.float64)
  labels = np.asarray(labels)
  probs = softmax(logits)
  log_z = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
  nll = float(np.mean(log_z - logits[np.arange(len(labels)), labels]))
  return {"top1": float(np.mean(probs.argmax(-1) == labels)), "nll": nll,
          "ece": expected_calibration_error(probs, labels)}
