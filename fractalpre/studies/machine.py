"""Where a number was measured, for the table it ends up in: the machine (CPU model, cores, Python, JAX and
its devices) and a stamp of date, commit and machine, so that a published table says what reproduces it."""
from __future__ import annotations

import datetime
import os
import platform
import subprocess
from pathlib import Path


def describe() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      return f"{cpu(f.read())}, {os.cpu_count()} cores, Python {platform.python_version()}"
  except OSError:
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def cpu(cpuinfo: str) -> str:
  """The CPU model from /proc/cpuinfo's text, with its widest x86 vector extension: XLA:CPU picks its
  kernels by instruction set, so speed and float rounding differ between machines that report the same
  model name (ViT-Ti/16 trained at half the rate on one 'AMD EPYC' VM as on another)."""
  fields = {}
  for line in cpuinfo.splitlines():
    key, _, value = line.partition(":")
    fields.setdefault(key.strip(), value.strip())
  model = fields.get("model name") or platform.processor() or platform.machine()
  flags = set(fields.get("flags", "").split())
  vector = next((name for flag, name in (("avx512f", "AVX-512"), ("avx2", "AVX2"), ("avx", "AVX")) if flag in flags),
                None)
  return f"{model} ({vector})" if vector else model


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
