"""tcmalloc for CPU training runs.

XLA:CPU allocates and frees every step's buffers through malloc. Under glibc's allocator the large ones are
mapped and unmapped each step, so a ViT-Ti/16 step on 2 cores spends about half its time in page faults
(page faults and kernel time: benchmarks/bench_cpu_training.py); tcmalloc keeps them mapped and the same
run is about 1.5x faster (docs/benchmarks.md). `preload()` re-executes a CPU training process with tcmalloc
preloaded when the library is installed (Debian/Ubuntu: libtcmalloc-minimal4), and returns a one-line hint
when it is not. Runs that will use a GPU or TPU are left alone. Opt out with FRACTALPRE_TCMALLOC=0.
"""
from __future__ import annotations

import ctypes.util
import importlib.util
import os
import sys

OPT_OUT = "FRACTALPRE_TCMALLOC"  # "0": keep the system allocator
_REEXECUTED = "_FRACTALPRE_TCMALLOC_REEXEC"  # set in the re-executed process: never loop
_ACCELERATOR_PLUGINS = ("jax_cuda12_plugin", "jax_cuda13_plugin", "jax_rocm60_plugin", "jax_rocm7_plugin", "libtpu")
HINT = ("fractalpre: hint: CPU training is about 1.5x faster with tcmalloc (Debian/Ubuntu: apt-get install "
        f"libtcmalloc-minimal4); {OPT_OUT}=0 hides this line")


def library() -> str | None:
  """The installed tcmalloc shared library's name as the dynamic linker finds it, or None."""
  return ctypes.util.find_library("tcmalloc_minimal") or ctypes.util.find_library("tcmalloc")


def loaded() -> bool:
  """Whether this process runs under tcmalloc (it is mapped into the process)."""
  try:
    with open("/proc/self/maps") as f:
      return "tcmalloc" in f.read()
  except OSError:
    return False


def accelerator_expected(env=os.environ) -> bool:
  """Whether JAX will pick a GPU or TPU: JAX_PLATFORMS names one, or (unset) a GPU/TPU plugin is installed."""
  platforms = [p.strip() for p in env.get("JAX_PLATFORMS", "").split(",") if p.strip()]
  if platforms:
    return any(p != "cpu" for p in platforms)
  return any(importlib.util.find_spec(name) is not None for name in _ACCELERATOR_PLUGINS)


def plan(env=os.environ) -> tuple[str, str | None]:
  """('keep', why) | ('hint', None) | ('preload', library): what `preload` does in this environment."""
  if env.get(OPT_OUT) == "0":
    return "keep", f"{OPT_OUT}=0"
  if not sys.platform.startswith("linux"):
    return "keep", "not Linux"
  if env.get(_REEXECUTED) or loaded():
    return "keep", "already preloaded"
  if accelerator_expected(env):
    return "keep", "a GPU or TPU run"
  lib = library()
  return ("preload", lib) if lib else ("hint", None)


def preload() -> str | None:
  """Re-executes this process (same interpreter, same arguments) with tcmalloc in LD_PRELOAD where it is
  installed; call it at the start of a command-line CPU training run, after its arguments parsed. Returns
  the hint to print after the run when tcmalloc would help but is not installed (at the end, so that a
  user's mistake stays one line)."""
  action, lib = plan()
  if action == "hint":
    return HINT
  if action == "preload":
    env = dict(os.environ, **{_REEXECUTED: "1"})
    env["LD_PRELOAD"] = ":".join(filter(None, (lib, env.get("LD_PRELOAD"))))
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
