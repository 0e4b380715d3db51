"""What the trainer expects of its data, as `typing.Protocol`s (structural: nothing needs to subclass them)."""
from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Source(Protocol):
  """Random access to labelled images: every fractal and real source, and what `get_source` returns. An
  image is uint8 (H, W) or (H, W, C); the same index gives the same bytes on every call."""
  num_classes: int

  def __len__(self) -> int: ...

  def __getitem__(self, index: int) -> tuple[np.ndarray, int]: ...


@runtime_checkable
class TrainData(Protocol):
  """The trainer's data (`trainer.fit`): each step's inputs, and a position that checkpoints with the
  model so that a resumed run draws exactly the batches it would have drawn."""

  def host_batch(self) -> Any: ...

  def get_state(self) -> dict: ...

  def set_state(self, state: dict) -> None: ...
