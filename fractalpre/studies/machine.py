"""Where a number was measured, for the table it ends up in: the machine (CPU model, cores, Python, JAX and
its devices) and a stamp of date, commit and machine, so that a published table says what reproduces it."""
from __future__ import annotations

import datetime
import os
import platform
import subprocess
from pathlib import Path


def describe() -> str:
  model = platform.processor() or platform.machine()
  try:
    with open("/proc/cpuinfo") as f:
      model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
  except (OSError, StopIteration):
    pass
  return f"{model}, {os.cpu_count()} cores, Python {platform.python_version()}"


def describe_jax() -> str:
  """`describe()` plus the JAX version and devices, for the benchmarks that train."""
  import jax  # here, so that benchmarks without JAX do not import it
  return f"{describe()}, JAX {jax.__version__}, {jax.device_count()} x {jax.devices()[0].device_kind}"


def commit(folder: str | os.PathLike | None = None) -> str:
  """The short commit of the checkout holding `folder` (this package's by default), '+changes' when it has
  uncommitted changes to tracked files; 'no git checkout' for an installed package."""
  folder = Path(folder or Path(__file__).parent)
  try:
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=folder, capture_output=True, text=True,
                          check=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=folder,
                           capture_output=True, text=True, check=True).stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    return "no git checkout"
  return head + ("+changes" if dirty else "")


def stamp() -> str:
  """'2026-12-06, commit abc1234, <CPU>, N cores, Python x, JAX y, ...': a table's provenance line."""
  return f"{datetime.date.today().isoformat()}, commit {commit()}, {describe_jax()}"
