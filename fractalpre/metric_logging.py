"""Training metrics: JSON lines in WORKDIR/metrics.jsonl and TensorBoard events, process 0 only."""
from __future__ import annotations

import json
from pathlib import Path

import jax


class MetricWriter:
  """Appends one JSON object per logged step. On resume, `truncate(step)` drops records after the
  restored step, so a resumed run's file equals an uninterrupted run's."""

  def __init__(self, workdir: str | Path, tensorboard: bool = True):
    self.active = jax.process_index() == 0
    self.path = Path(workdir) / "metrics.jsonl"
    self.tb = None
    if self.active and tensorboard:
      from tensorboardX import SummaryWriter
      self.tb = SummaryWriter(str(Path(workdir) / "tensorboard"))

  def truncate(self, step: int) -> None:
    if not self.active or not self.path.exists():
      return
    kept = [line for line in self.path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
    tmp = self.path.with_name(self.path.name + ".tmp")
    tmp.write_text("".join(line + "\n" for line in kept))
    tmp.replace(self.path)

  def write(self, step: int, metrics: dict) -> None:
    if not self.active:
      return
    record = {"step": int(step), **{k: float(v) for k, v in metrics.items()}}
    with open(self.path, "a") as f:
      f.write(json.dumps(record) + "\n")
    if self.tb is not None:
      for k, v in record.items():
        if k != "step":
          self.tb.add_scalar(k, v, step)
      self.tb.flush()

  def read(self) -> list[dict]:
    return read(self.path.parent)

  def close(self) -> None:
    if self.tb is not None:
      self.tb.close()


def read(workdir: str | Path) -> list[dict]:
  path = Path(workdir) / "metrics.jsonl"
  return [json.loads(line) for line in path.read_text().splitlines() if line] if path.exists() else []
