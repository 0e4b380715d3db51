"""Where metrics go: TensorBoard's sample grid and the optional W&B writer (with a stand-in module, so the
suite needs neither wandb nor a network)."""
import io
import struct
import sys
import types

import ml_collections
import numpy as np
import pytest
from PIL import Image
from tensorboardX.proto.event_pb2 import Event

from fractalpre import util
from fractalpre.training import classification, metric_writer
from tests.fractalpre.training.test_trainer import tiny_config


def _events(folder):
  """Every Event in a TensorBoard folder (TFRecord framing: length, crc, payload, crc)."""
  out = []
  for path in sorted(folder.rglob("events.out.tfevents.*")):
    data = path.read_bytes()
    at = 0
    while at < len(data):
      (length,) = struct.unpack("<Q", data[at:at + 8])
      out.append(Event.FromString(data[at + 12:at + 12 + length]))
      at += 12 + length + 4
  return out


def test_tensorboard_gets_a_grid_of_training_samples_at_the_first_step(tmp_path):
  classification.train_and_evaluate(tiny_config(tensorboard=True), tmp_path, progress=False)
  images = [(e.step, v) for e in _events(tmp_path / "tensorboard") for v in e.summary.value if v.HasField("image")]
  assert [(step, v.tag) for step, v in images] == [(1, "train_samples")]
  grid = np.asarray(Image.open(io.BytesIO(images[0][1].image.encoded_image_string)))
  assert grid.shape == (4 * 18, 4 * 18, 3)  # 16 samples at 16 px, a 1 px border around each
  scalars = {v.tag for e in _events(tmp_path / "tensorboard") for v in e.summary.value if v.HasField("simple_value")}
  assert {"loss", "lr"} <= scalars


class _FakeWandb(types.ModuleType):
  """Records what the writer hands to wandb."""

  def __init__(self):
    super().__init__("wandb")
    self.runs = []
    self.Image = lambda array: ("image", np.asarray(array).shape)

  def init(self, **kwargs):
    run = types.SimpleNamespace(kwargs=kwargs, logged=[], finished=False)
    run.log = lambda data, step: run.logged.append((step, data))
    run.finish = lambda: setattr(run, "finished", True)
    self.runs.append(run)
    return run


def test_wandb_gets_every_record_and_a_resumed_session_continues_its_run(tmp_path, monkeypatch):
  fake = _FakeWandb()
  monkeypatch.setitem(sys.modules, "wandb", fake)
  config = lambda steps: tiny_config(total_steps=steps, **{"wandb": ml_collections.ConfigDict(
      dict(project="fractal", mode="offline", name=""))})
  classification.train_and_evaluate(config(2), tmp_path, progress=False)
  classification.train_and_evaluate(config(4), tmp_path, progress=False)  # resumes at step 2
  first, second = fake.runs
  assert first.kwargs["id"] == second.kwargs["id"] == (tmp_path / "wandb_run_id").read_text().strip()
  assert len(first.kwargs["id"]) == 8 and first.kwargs["resume"] == "allow"
  assert first.kwargs["project"] == "fractal" and first.kwargs["mode"] == "offline"
  assert first.kwargs["config"]["total_steps"] == 2 and first.finished and second.finished
  records = metric_writer.read(tmp_path)
  sent = [(step, data) for run in fake.runs for step, data in run.logged if "loss" in data]
  assert sent == [(r["step"], {k: v for k, v in r.items() if k != "step"}) for r in records]
  assert [(s, d) for s, d in first.logged if "train_samples" in d] == [(1, {"train_samples": ("image", (72, 72, 3))})]
  assert not [d for s, d in second.logged if "train_samples" in d]  # a resumed session logs no samples


def test_wandb_mistakes_are_one_line(tmp_path, monkeypatch):
  monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb raises ImportError
  cfg = ml_collections.ConfigDict(dict(project="p", mode="online", name=""))
  with pytest.raises(util.UsageError, match=r"wandb.project is set but wandb is not installed: pip install "
                                              r"'fractalpre\[wandb\]'"):
    metric_writer.MetricWriter(tmp_path, tensorboard=False, wandb=cfg)
  cfg.mode = "sometimes"
  with pytest.raises(util.UsageError, match=r"wandb.mode must be one of \('online', 'offline', 'disabled'\), got "
                                              r"'sometimes'"):
    metric_writer.MetricWriter(tmp_path, tensorboard=False, wandb=cfg)
