"""A training run's folder: one trainer at a time, and only the config it was started with.

A re-run resumes, so a workdir must not be re-used by a different run: its checkpoints would not load
into the new state (or, worse, a later `init_from` would load the old model). Keys that change only how
a run is watched or paced may differ between sessions; any other difference is refused, naming the keys,
unless the caller asks to restart, which moves the old run aside (never deletes it).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import jax
import ml_collections

from fractalpre import util
from fractalpre.training.config_files import flatten

CONFIG = "config.json"
REPLACED = "replaced_runs"
# Keys that leave the train state's layout and the data stream unchanged: logging, pacing, evaluation,
# workers, and the run's length (a longer run continues the same one; its schedule is stretched from the
# resumed step on).
# A task adds its own (`claim(..., harmless=...)`).
HARMLESS = ("total_steps", "log_every", "checkpoint_every", "keep_checkpoints", "eval_every", "eval_bma_samples",
            "tensorboard", "wandb.project", "wandb.mode", "wandb.name", "progress_unit", "data.workers", "data.prefetch")


def config_differences(old: dict, new: dict, harmless: tuple[str, ...] = ()) -> list[str]:
  """'key: old -> new' for every key (dotted) whose value changes the run, sorted."""
  old, new = flatten(old), flatten(new)
  missing = object()
  out = []
  for key in sorted(set(old) | set(new)):
    a, b = old.get(key, missing), new.get(key, missing)
    if a is missing and (b is None or b is False):  # a key added since the run started, not set or off: as before
      continue
    if a != b and key not in HARMLESS + harmless:
      show = lambda v: "(absent)" if v is missing else json.dumps(v)
      out.append(f"{key}: {show(a)} -> {show(b)}")
  return out


def _move_old_run_aside(workdir: Path) -> Path:
  aside = workdir / REPLACED
  n = 1
  while (aside / str(n)).exists():
    n += 1
  target = aside / str(n)
  target.mkdir(parents=True)
  for entry in workdir.iterdir():
    if entry.name != REPLACED and not util.is_lock(entry.name):
      os.replace(entry, target / entry.name)
  return target


def claim(workdir: str | os.PathLike, config: ml_collections.ConfigDict, restart: bool = False,
          harmless: tuple[str, ...] = ()):
  """Checks and locks WORKDIR for this run (process 0; the others only read) and records its config.
  `harmless`: the task's own keys that a resumed run may change, besides HARMLESS. Returns the held lock
  (None on other processes): release it when the run ends."""
  workdir = Path(workdir)
  util.check_folder(workdir, "--workdir")
  if jax.process_index() != 0:
    return None
  workdir.mkdir(parents=True, exist_ok=True)
  lock = util.FolderLock(workdir, "trainer").acquire()
  try:
    new = json.loads(config.to_json())
    path = workdir / CONFIG
    if path.exists():
      try:
        old = json.loads(path.read_text())
      except ValueError:
        old = {"(unreadable config.json)": True}
      differences = config_differences(old, new, harmless)
      if differences and not restart:
        raise util.UsageError(
            f"--workdir {workdir} holds a run with another config ({'; '.join(differences)}); use a new "
            "--workdir, or --restart to move the old run aside and start over")
      if differences:
        print(f"moved the earlier run in {workdir} to {_move_old_run_aside(workdir)}", flush=True)
    util.write_atomic(path, config.to_json(indent=1) + "\n")
  except BaseException:
    lock.release()
    raise
  return lock
