"""A training run's folder: one trainer at a time, and only the run it was started as.

A re-run resumes (or, when finished, reuses the result), so a workdir must not be re-used by a different
run: its checkpoints would not load into the new state, or a probe's score would stand for a checkpoint that
has changed since. The workdir records the run's fingerprint (util.provenance: the config, a digest of each
input it reads, the package version). Keys that change only how a run is watched or paced may differ between
sessions; any other difference is refused, naming it, unless the caller asks to restart, which moves the
old run aside (never deletes it).
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import jax
import ml_collections

from fractalpre import util
from fractalpre.training import checkpoints, metric_writer
from fractalpre.util import provenance

CONFIG = "config.json"
REPLACED = "replaced_runs"
# Keys that leave the train state's layout and the data stream unchanged: logging, pacing, evaluation,
# workers, and the run's length (a longer run continues the same one; its schedule is stretched from the
# resumed step on).
# A task adds its own (`claim(..., harmless=...)`).
HARMLESS = ("total_steps", "log_every", "checkpoint_every", "keep_checkpoints", "eval_every", "eval_bma_samples",
            "tensorboard", "wandb.project", "wandb.mode", "wandb.name", "progress_unit", "data.workers", "data.prefetch")


INPUT_KEYS = ("path", "image")  # config keys (at any depth) that name a file or folder a run reads


def input_digests(config) -> dict[str, str]:
  """{key: content digest} of what a run reads besides its config: init_from's checkpoint (its step and a
  digest of its parameters), every file or folder a `*.path` or `*.image` key names (a file's bytes, a
  folder's listing), and a TFDS dataset's own folder (`name` under `data_dir`, or `name` as a folder; never
  the whole data_dir, which holds other datasets). A key naming nothing on disk (a bundled photo's name, a
  TFDS name not prepared yet) has none."""
  out = {}
  if config.get("init_from"):
    step, state = checkpoints.newest_state(config.init_from)
    out["init_from"] = checkpoints.fingerprint(step, state)
  flat = provenance.flatten(config)
  for key, value in flat.items():
    prefix, _, leaf = key.rpartition(".")
    prefix = prefix + "." if prefix else ""
    path = None
    if leaf in INPUT_KEYS and isinstance(value, str) and value:
      path = Path(value).expanduser()
    elif leaf == "name" and flat.get(f"{prefix}kind") == "tfds" and value:
      data_dir = flat.get(f"{prefix}data_dir")
      path = Path(data_dir).expanduser() / value if data_dir else Path(value).expanduser()
    if path is not None and path.is_file():
      out[key] = f"file {provenance.file_digest(path)}"
    elif path is not None and path.is_dir():
      out[key] = f"folder listing {provenance.listing_digest(path)}"
  return out


def finished(workdir: Path, config) -> bool:
  """Whether the run in this folder logged its last step (a probe: its one line)."""
  try:
    records = metric_writer.read(workdir)
  except (OSError, ValueError):  # a damaged metrics file: not a result to reuse
    return False
  return bool(records) and (bool(config.get("linear_probe")) or records[-1]["step"] >= config.total_steps)


def started(workdir: Path) -> bool:
  """Whether a run in this folder has done any work (a checkpoint or a metrics line): one that has not (a
  start refused after its config was recorded) blocks nothing."""
  steps = workdir / "checkpoints"
  has_step = steps.is_dir() and any(p.name.isdigit() for p in steps.iterdir())
  metrics = workdir / "metrics.jsonl"
  return has_step or (metrics.is_file() and metrics.stat().st_size > 0)


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
  """Checks and locks WORKDIR for this run (process 0; the others only read) and records its config and its
  fingerprint (util.provenance: the config, a digest of every input it reads (`input_digests`), the package
  version). A folder whose recorded fingerprint differs is refused, naming what changed, unless
  `restart` moves the old run aside; one that never saved anything is simply taken over. `harmless`: the
  task's own keys that a resumed run may change, besides HARMLESS. Returns the held lock (None on other
  processes): release it when the run ends."""
  workdir = Path(workdir)
  util.check_folder(workdir, "--workdir")
  # every process: restoring init_from is collective in a multi-process job
  record = provenance.fingerprint(json.loads(config.to_json()), input_digests(config))
  if jax.process_index() != 0:
    return None
  workdir.mkdir(parents=True, exist_ok=True)
  lock = util.FolderLock(workdir, "trainer").acquire()
  try:
    path = workdir / CONFIG
    if path.exists() and started(workdir):
      old = provenance.read(workdir)
      soft = [] if old else [f"no {provenance.FILE} records its inputs and package version"]
      if old is None:  # a run from before fingerprints: its config is all that is known
        try:
          old = {**record, "config": json.loads(path.read_text())}
        except ValueError:
          old = {**record, "config": {"(unreadable config.json)": True}}
      differences = provenance.differences(old, record, HARMLESS + harmless)
      soft += [d for d in differences if d.startswith("package version:")]
      hard = [d for d in differences if not d.startswith("package version:")]
      if soft and not hard and not restart and not finished(workdir, config):
        # an unfinished run resumes under this package (its checkpoints are the user's investment); a
        # finished result of another version is never reused
        print(f"warning: resuming the run in {workdir} ({'; '.join(soft)}); it now records this run's "
              "fingerprint", file=sys.stderr, flush=True)
        soft = []
      differences = hard + soft
      if differences and not restart:
        raise util.UsageError(
            f"--workdir {workdir} holds a run with another config or inputs ({'; '.join(differences)}); use a "
            "new --workdir, or --restart to move the old run aside and start over")
      if differences:
        print(f"moved the earlier run in {workdir} to {_move_old_run_aside(workdir)}", flush=True)
    util.write_atomic(path, config.to_json(indent=1) + "\n")
    provenance.write(workdir, record)
  except BaseException:
    lock.release()
    raise
  return lock
