"""Pretrain, then fine-tune (or linear-probe) on a small real dataset over several seeds, and summarize
with mean, spread and paired differences: the experiments of scripts/pretrain_finetune_demo.py and
scripts/scaling_backwards.py. A single seed cannot rank two inits whose gap is smaller than the seed-to-seed
spread, so every comparison here is over seeds, paired by seed (same init noise, data order and
augmentation for both inits), and a study that pretrains several times splits its spread into the part
from pretraining seeds and the part from fine-tuning seeds (`components`). Every run has its own workdir;
a finished one is reused, an interrupted one resumes."""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import jax
import numpy as np

from fractalpre import util
from fractalpre.studies import machine

METRICS = ("top1", "nll", "ece")
# --quick smoke runs: no TensorBoard, one checkpoint and one metrics line per run (the start-up dominates)
QUICK = dict(tensorboard=False, checkpoint_every=10**9, log_every=10**9)


def use_compilation_cache(folder: str | os.PathLike) -> None:
  """JAX's persistent compilation cache in `folder`, unless one is set already (JAX_COMPILATION_CACHE_DIR):
  the many runs of a study, of every seed, compile the same few programs."""
  if not jax.config.jax_compilation_cache_dir:
    jax.config.update("jax_compilation_cache_dir", str(folder))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)


SECONDS = "wall_seconds.json"  # a run's own wall-clock time (summed over its sessions) and where it was made


class Tally:
  """What the runs of one study took and where they were measured, as each run recorded it when it trained
  (a run reused by a rerun reports its own time, not the rerun's)."""

  def __init__(self):
    self.runs: list[dict] = []

  def add(self, record: dict) -> None:
    self.runs.append(record)

  @property
  def seconds(self) -> float | None:
    """The summed training time; None when a run made before times were kept is among them."""
    times = [r.get("seconds") for r in self.runs]
    return None if None in times else float(sum(times))

  @property
  def made_on(self) -> list[str]:
    return sorted({r["made_on"] for r in self.runs})


def run(config, workdir: str | os.PathLike, label: str, overrides: dict | None = None, progress: bool = False,
        restart: bool = False, tally: Tally | None = None) -> dict:
  """train_and_evaluate (config updated by `overrides`; a progress bar only if asked), then one line to stderr
  with the run's own time. The time of every session that trains it is added to its record (an interrupted
  one too); a finished run that is reused keeps its record. Returns its final metrics; `tally` gets the
  record."""
  from fractalpre.training import classification
  config.update(overrides or {})
  workdir = Path(workdir)
  metrics_file = workdir / "metrics.jsonl"
  old = metrics_file.read_bytes() if metrics_file.exists() else None
  t, reused = time.time(), False
  try:
    metrics = classification.train_and_evaluate(config, workdir, progress=progress, restart=restart)
    reused = old is not None and metrics_file.read_bytes() == old
  finally:
    record = _record(workdir / SECONDS)  # none for a fresh run, and for one whose old run was moved aside
    if reused and not record:
      record = {"seconds": None, "made_on": "not recorded (trained before times were kept)"}
    elif not reused and workdir.is_dir():
      record = {"seconds": (record.get("seconds") or 0.0) + time.time() - t, "made_on": machine.stamp()}
      util.write_atomic(workdir / SECONDS, json.dumps(record) + "\n")
  seconds = "time not recorded" if record["seconds"] is None else f"{record['seconds']:.0f} s"
  print(f"  {label}: {seconds}{' (reused)' if reused else ''}", file=sys.stderr, flush=True)
  if tally is not None:
    tally.add(record)
  return metrics


def _record(path: Path) -> dict:
  try:
    record = json.loads(path.read_text())
    return {"seconds": float(record["seconds"]), "made_on": str(record["made_on"])}
  except (OSError, ValueError, KeyError, TypeError):
    return {}


def finetune_config(dataset: str, init: str, seed: int, steps: int, labels: int, probe: bool = False):
  """configs/finetune.py (or linear_probe.py) for one seed; `init` '' = from scratch."""
  from fractalpre.configs import finetune, linear_probe
  arg = f"dataset={dataset},labels_per_class={labels},steps={steps},init_from={init}"
  config = (linear_probe if probe else finetune).get_config(arg)
  config.seed = seed
  return config


def over_seeds(workdir: Path, dataset: str, init: str, seeds, steps: int, labels: int, probe: bool = False,
               label: str = "", overrides: dict | None = None, restart: bool = False,
               tally: Tally | None = None) -> dict[int, dict]:
  """{seed: {top1, nll, ece}} of fine-tuning (or probing) from `init` on the test split, one workdir per seed."""
  out = {}
  for seed in seeds:
    config = finetune_config(dataset, init, seed, steps, labels, probe)
    metrics = run(config, workdir / f"seed{seed}", f"{label or workdir.name} seed {seed}", overrides,
                  restart=restart, tally=tally)
    out[seed] = {k: float(metrics[f"eval_{k}"]) for k in METRICS}
  return out


def spread(values) -> tuple[float, float]:
  """(mean, sample standard deviation) of per-seed values."""
  values = np.asarray(list(values), np.float64)
  return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def summary(per_seed: dict[int, dict]) -> dict[str, tuple[float, float]]:
  """{metric: (mean, std)} over seeds."""
  return {k: spread(r[k] for r in per_seed.values()) for k in METRICS}


def components(per_pretrain: dict[object, dict[int, dict]], metric: str = "top1") -> dict[str, float]:
  """Mean and spreads of `metric` over {pretraining seed: {fine-tuning seed: metrics}}: `std` over every run
  together, `finetune_std` the pooled standard deviation within a pretraining seed, and `pretrain_std` the
  spread of the pretraining seeds' own effect, the one-way random-effects estimate
  sqrt(max(0, var(per-pretraining means) - finetune_var / n_finetune)) (the means' variance also carries
  fine-tuning noise). A spread without two seeds of its kind is NaN."""
  groups = [np.asarray([r[metric] for r in runs.values()], np.float64) for runs in per_pretrain.values()]
  values = np.concatenate(groups)
  nan = float("nan")
  within = [g.var(ddof=1) for g in groups if len(g) > 1]
  finetune_var = float(np.mean(within)) if within else nan
  n_finetune = float(np.mean([len(g) for g in groups]))
  pretrain_std = nan
  if len(groups) > 1:
    means_var = float(np.var([g.mean() for g in groups], ddof=1))
    excess = means_var - (finetune_var / n_finetune if within else 0.0)
    pretrain_std = float(np.sqrt(np.maximum(0.0, excess)))  # np.maximum keeps a NaN; max(0, nan) is 0
  return {"mean": float(values.mean()), "std": float(values.std(ddof=1)) if len(values) > 1 else nan,
          "pretrain_std": pretrain_std, "finetune_std": float(np.sqrt(finetune_var)), "runs": len(values)}


def paired(a: dict[int, dict], b: dict[int, dict]) -> dict[str, tuple[float, float]]:
  """{metric: (mean, std)} of a - b over the seeds both have (same seed, same data order and augmentation)."""
  seeds = sorted(set(a) & set(b))
  return {k: spread(a[s][k] - b[s][k] for s in seeds) for k in METRICS}


def cell(mean_std: tuple[float, float], metric: str, signed: bool = False) -> str:
  """'74.5 ± 1.2' (top-1 in %), '0.856 ± 0.020' (NLL, ECE)."""
  mean, std = mean_std
  scale, digits = (100, 1) if metric == "top1" else (1, 3)
  sign = "+" if signed else ""
  return f"{scale * mean:{sign}.{digits}f} ± {scale * std:.{digits}f}"
