import numpy as np
import pytest

from fractalpre.training import classification_scores


def test_ece_against_a_hand_computed_example():
  # Confidences 0.9 (correct), 0.9 (wrong), 0.6 (correct), 0.3 -> argmax class 1 with 0.4 (correct).
  probs = np.array([[0.9, 0.1, 0.0], [0.9, 0.1, 0.0], [0.6, 0.4, 0.0], [0.3, 0.4, 0.3]])
  labels = np.array([0, 1, 0, 1])
  # Bin (0.8, 0.9]: 2 examples, accuracy 0.5, confidence 0.9 -> 2/4 * 0.4 = 0.2
  # Bin (0.5, 0.6]: 1 example, accuracy 1, confidence 0.6 -> 1/4 * 0.4 = 0.1
  # Bin (0.3, 0.4]: 1 example, accuracy 1, confidence 0.4 -> 1/4 * 0.6 = 0.15
  assert classification_scores.expected_calibration_error(probs, labels) == pytest.approx(0.45)


def test_metrics_against_direct_formulas():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(50, 4)) * 3
  labels = rng.integers(0, 4, 50)
  m = classification_scores.classification_metrics(logits, labels)
  p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
  assert m["nll"] == pytest.approx(-np.mean(np.log(p[np.arange(50), labels])))
  assert m["top1"] == pytest.approx(np.mean(p.argmax(1) == labels))
  assert 0 <= m["ece"] <= 1
  perfect = classification_scores.classification_metrics(np.eye(4)[labels] * 1e3, labels)
  assert perfect["top1"] == 1 and perfect["ece"] == pytest.approx(0, abs=1e-9)
