"""Training metrics: JSON lines in WORKDIR/metrics.jsonl, TensorBoard events and, when a config names a
W&B project, Weights & Biases (imported only then), process 0 only."""
from __future__ import annotations

import json
import logging
import math
import secrets
from pathlib import Path

import jax

from fractalpre import util


WANDB_ID = "wandb_run_id"
WANDB_MODES = ("online", "offline", "disabled")


def _wandb_run(workdir: Path, wandb_cfg, config: dict | None):
  """A W&B run for this workdir: one run id per workdir (kept in WORKDIR/wandb_run_id), so a resumed
  training session continues the same W&B run."""
  if wandb_cfg.get("mode", "online") not in WANDB_MODES:
    raise util.UsageError(f"wandb.mode must be one of {WANDB_MODES}, got {wandb_cfg.mode!r}")
  try:
    import wandb
  except ImportError:
    raise util.UsageError("wandb.project is set but wandb is not installed: pip install 'fractalpre[wandb]' "
                            "(or leave wandb.project empty)") from None
  id_file = workdir / WANDB_ID
  if not id_file.exists():
    util.write_atomic(id_file, secrets.token_hex(4) + "\n")  # W&B run ids: lowercase letters and digits
  return wandb.init(project=wandb_cfg.project, name=wandb_cfg.get("name") or workdir.name,
                    mode=wandb_cfg.get("mode", "online"), dir=str(workdir), id=id_file.read_text().strip(),
                    resume="allow", config=config)


class MetricWriter:
  """Appends one JSON object per logged step. On resume, `truncate(step)` drops records after the
  restored step, so a resumed run's file equals an uninterrupted run's. W&B keeps what it was sent (it
  ignores steps at or below the last one it saw)."""

  def __init__(self, workdir: str | Path, tensorboard: bool = True, wandb=None, config: dict | None = None):
    self.active = jax.process_index() == 0
    self.path = Path(workdir) / "metrics.jsonl"
    self.tb = self.wandb = None
    if self.active and tensorboard:
      from tensorboardX import SummaryWriter
      self.tb = SummaryWriter(str(Path(workdir) / "tensorboard"))
    if self.active and wandb is not None and wandb.get("project"):
      self.wandb = _wandb_run(Path(workdir), wandb, config)

  def truncate(self, step: int) -> None:
    """Keeps the records up to `step` (rewriting the file atomically, a partial last line dropped)."""
    if not self.active or not self.path.exists():
      return
    kept = [record for record in read(self.path.parent) if record["step"] <= step]
    util.write_atomic(self.path, "".join(json.dumps(record) + "\n" for record in kept))

  def write(self, step: int, metrics: dict) -> None:
    """One record; a non-finite value is written as null (JSON has no Infinity or NaN)."""
    if not self.active:
      return
    record = {"step": int(step), **{k: _finite_or_none(v) for k, v in metrics.items()}}
    with open(self.path, "a") as f:
      f.write(json.dumps(record, allow_nan=False) + "\n")
    if self.tb is not None:
      for k, v in metrics.items():
        self.tb.add_scalar(k, float(v), step)
      self.tb.flush()
    if self.wandb is not None:
      self.wandb.log({k: v for k, v in record.items() if k != "step"}, step=int(step))

  def write_image(self, step: int, name: str, image) -> None:
    """One uint8 (H, W, C) image, such as a grid of training samples."""
    if self.tb is not None:
      self.tb.add_image(name, image, step, dataformats="HWC")
      self.tb.flush()
    if self.wandb is not None:
      import wandb
      self.wandb.log({name: wandb.Image(image)}, step=int(step))

  def read(self) -> list[dict]:
    return read(self.path.parent)

  def close(self) -> None:
    if self.tb is not None:
      self.tb.close()
    if self.wandb is not None:
      self.wandb.finish()


def _finite_or_none(value) -> float | None:
  value = float(value)
  return value if math.isfinite(value) else None


def last_values(records: list[dict]) -> dict:
  """The last logged value of every metric over these records (a run's, across its sessions)."""
  final = {}
  for record in records:
    final.update({k: v for k, v in record.items() if k != "step"})
  return final


def read(workdir: str | Path) -> list[dict]:
  """The records of WORKDIR/metrics.jsonl. A partial last line (what a crash or a full disk leaves) is
  dropped with a warning; a damaged line before the last is an error naming the file and line."""
  path = Path(workdir) / "metrics.jsonl"
  if not path.exists():
    return []
  text = path.read_text()
  lines = text.split("\n")
  records = []
  for number, line in enumerate(lines, 1):
    if not line:
      continue
    try:
      records.append(json.loads(line))
    except ValueError as e:
      if number == len(lines) and not text.endswith("\n"):
        logging.warning("%s: dropping the partial last line %d (%r): a crash or a full disk left it", path,
                        number, line[:80])
        continue
      raise util.UsageError(f"{path}:{number} is not a JSON record ({e}); fix or remove that line") from None
  return records
