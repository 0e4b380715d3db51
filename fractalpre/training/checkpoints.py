"""Orbax checkpoints of the train state plus the input iterator's state, with fallback on damage."""
from __future__ import annotations

import contextlib
import gc
import logging
import os
import sys
from pathlib import Path

import jax
import orbax.checkpoint as ocp

from fractalpre import util
from fractalpre.util import UsageError, provenance


class Checkpoints:
  """Async saves every `every` steps, keeps the newest `keep`. `restore_latest` returns the newest
  checkpoint that loads; a damaged one is moved aside to WORKDIR/damaged_checkpoints/ (orbax will not
  save a step at or below the newest step folder it finds, broken or not) and the previous one is used."""

  def __init__(self, workdir: str | Path, keep: int = 3):
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=True, create=True)
    self.directory = Path(workdir).absolute() / "checkpoints"
    self.damaged = Path(workdir).absolute() / "damaged_checkpoints"
    self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=("state", "data"))

  def save(self, step: int, state, data_state: dict) -> None:
    self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                    data=ocp.args.JsonSave(data_state)))

  def restore_latest(self, abstract_state):
    """(step, state, data_state) of the newest loadable checkpoint, or None when there is none."""
    moved = False

    def set_aside(step: int) -> str:
      nonlocal moved
      if jax.process_index() != 0:  # one process renames; the others fail on the same step anyway
        return "left it in place"
      moved = True
      return f"moved it to {self._move_aside(step)}"

    args = ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore())
    found = newest_loadable(self.manager, args, set_aside)
    if moved:
      self.manager.reload()
    return None if found is None else (found[0], found[1]["state"], found[1]["data"])

  def _move_aside(self, step: int) -> Path:
    """Renames a damaged step folder into damaged_checkpoints/ (never deletes: it may be recoverable)."""
    self.damaged.mkdir(exist_ok=True)
    target, n = self.damaged / str(step), 1
    while target.exists():
      target, n = self.damaged / f"{step}.{n}", n + 1
    os.replace(self.directory / str(step), target)
    return target

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def latest_step(self) -> int | None:
    """The newest saved step (None before the first save)."""
    return self.manager.latest_step()

  def close(self) -> None:
    self.manager.close()


def load_state(path: str | Path, flag: str = "init_from") -> dict:
  """The train state (`params`, `batch_stats`, ...) of the newest loadable checkpoint under a workdir (or
  its checkpoints/ folder), as NumPy arrays, without knowing the optimizer that wrote it. Errors name
  `flag`, the setting the user gave the path with."""
  return newest_state(path, flag)[1]


def newest_state(path: str | Path, flag: str = "init_from") -> tuple[int, dict]:
  """(step, train state) of `load_state`."""
  path = Path(path).absolute()
  if not path.is_dir():
    raise UsageError(f"{flag} {path} is not a folder (give a training workdir or its checkpoints/ folder)")
  directory = path / "checkpoints" if (path / "checkpoints").is_dir() else path
  manager = ocp.CheckpointManager(directory, item_names=("state", "data"),
                                  options=ocp.CheckpointManagerOptions(create=False))
  found = newest_loadable(manager, ocp.args.Composite(state=ocp.args.StandardRestore()),
                          lambda step: f"left it in place in {directory}")
  if found is None:
    raise UsageError(f"{flag} {path} holds no loadable checkpoint")
  return found[0], found[1]["state"]


def fingerprint(step: int, state: dict) -> str:
  """'step N, parameters DIGEST' of a loaded checkpoint: what a result made from it records
  (util.provenance), so that a checkpoint trained further, replaced or deleted is noticed."""
  import flax
  flat = flax.traverse_util.flatten_dict(dict(state["params"]), sep="/")
  return f"step {step}, parameters {provenance.arrays_digest(sorted(flat.items()))}"


def restores(workdir: str | Path, step: int) -> bool:
  """Whether the checkpoint of `step` in a workdir restores, read in full (nothing is printed or moved: a
  damaged one is then handled by the loop's own restore)."""
  manager = ocp.CheckpointManager(Path(workdir).absolute() / "checkpoints", item_names=("state", "data"),
                                  options=ocp.CheckpointManagerOptions(create=False))
  try:
    with _quiet_restore_errors():
      manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(), data=ocp.args.JsonRestore()))
    return True
  except Exception:  # orbax raises many types for damaged files
    return False
  finally:
    manager.close()


def newest_loadable(manager: ocp.CheckpointManager, args, on_damage) -> tuple[int, dict] | None:
  """(step, restored items) of the manager's newest checkpoint that restores with `args`, trying older ones
  in turn; `on_damage(step) -> what was done with it` for each that does not, reported in one line (process
  0). None when none loads."""
  with _quiet_restore_errors():
    for step in sorted(manager.all_steps(), reverse=True):
      try:
        return step, manager.restore(step, args=args)
      except Exception as e:  # orbax raises many types for damaged files
        where = on_damage(step)
        if jax.process_index() == 0:
          print(f"checkpoint at step {step} could not be restored ({_reason(e)}); {where} and trying the "
                "previous one", file=sys.stderr, flush=True)
  return None


def _reason(error: Exception) -> str:
  """An orbax / TensorStore error in a few words (their messages run to kilobytes of spec dumps)."""
  text = " ".join(str(error).split()) or type(error).__name__
  text = text.split(" See full TensorStore details")[0].split(": (slice(")[0]
  return text if len(text) <= 100 else text[:97] + "..."


@contextlib.contextmanager
def quiet_write_failures():
  """When a save runs out of space, orbax's writer threads each log the error with a traceback and a spec
  dump, and their callbacks fire into closed event loops: hundreds of lines that the trainer's one-line
  report (OutOfSpace) says better. Other errors are reported as usual."""
  def noise(error) -> bool:
    return util.is_out_of_space(error) or (isinstance(error, RuntimeError) and "Event loop is closed" in str(error))

  class Filter(logging.Filter):
    def filter(self, record):
      text = record.getMessage() + (str(record.exc_info[1]) if record.exc_info else "")
      return not (record.levelno >= logging.ERROR and (util.is_out_of_space(text) or "Event loop is closed" in text))

  hook, log_filter, loggers = sys.unraisablehook, Filter(), [logging.getLogger(), logging.getLogger("absl"),
                                                               logging.getLogger("asyncio")]
  sys.unraisablehook = lambda u: None if noise(u.exc_value) else hook(u)
  for logger in loggers:
    logger.addFilter(log_filter)
  try:
    yield
  finally:
    sys.unraisablehook = hook
    for logger in loggers:
      logger.removeFilter(log_filter)


@contextlib.contextmanager
def _quiet_restore_errors():
  """A failed TensorStore read leaves callbacks that fire into closed event loops and tasks whose errors
  nobody retrieves: Python reports each with a traceback and a spec dump, hundreds per damaged checkpoint.
  Within a restore they say nothing that the one-line report does not."""
  hook, asyncio_log = sys.unraisablehook, logging.getLogger("asyncio")
  level = asyncio_log.level
  sys.unraisablehook = lambda unraisable: None
  asyncio_log.setLevel(logging.CRITICAL)
  try:
    yield
  finally:
    gc.collect()  # let the leftover callbacks and tasks go while they are still silenced
    sys.unraisablehook = hook
    asyncio_log.setLevel(level)
