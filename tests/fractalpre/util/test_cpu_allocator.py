"""tcmalloc for CPU runs: when the trainer re-executes under it, that it really does, and that the allocator
does not change what a training run computes."""
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from fractalpre.training import checkpoints, metric_writer
from fractalpre.util import cpu_allocator

NEEDS_TCMALLOC = pytest.mark.skipif(cpu_allocator.library() is None,
                                    reason="tcmalloc is not installed (Debian/Ubuntu: libtcmalloc-minimal4)")


def _env(**extra):
  env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", cpu_allocator.OPT_OUT)}
  return {**env, "JAX_PLATFORMS": "cpu", **extra}


def test_plan_follows_opt_out_accelerators_and_what_is_installed(monkeypatch):
  monkeypatch.setattr(cpu_allocator, "loaded", lambda: False)
  monkeypatch.setattr(cpu_allocator, "library", lambda: "libtcmalloc_minimal.so.4")
  assert cpu_allocator.plan({"JAX_PLATFORMS": "cpu"}) == ("preload", "libtcmalloc_minimal.so.4")
  assert cpu_allocator.plan({"JAX_PLATFORMS": "cpu", "FRACTALPRE_TCMALLOC": "0"})[0] == "keep"
  assert cpu_allocator.plan({"JAX_PLATFORMS": "cuda"}) == ("keep", "a GPU or TPU run")
  assert cpu_allocator.plan({"JAX_PLATFORMS": "tpu,cpu"}) == ("keep", "a GPU or TPU run")
  monkeypatch.setattr(cpu_allocator.importlib.util, "find_spec", lambda name: name == "jax_cuda12_plugin" or None)
  assert cpu_allocator.plan({}) == ("keep", "a GPU or TPU run")  # jax[cuda12] installed, no JAX_PLATFORMS
  monkeypatch.setattr(cpu_allocator, "library", lambda: None)
  assert cpu_allocator.plan({"JAX_PLATFORMS": "cpu"}) == ("hint", None)
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  assert "apt-get install libtcmalloc-minimal4" in cpu_allocator.preload()  # returned for after the run


@NEEDS_TCMALLOC
@pytest.mark.parametrize("opt_out", [False, True])
def test_preload_reexecutes_the_process_under_tcmalloc(opt_out):
  code = ("import sys; from fractalpre.util import cpu_allocator; print('start', flush=True); "
          "cpu_allocator.preload(); print(cpu_allocator.loaded(), sys.argv[1:])")
  env = _env(**({"FRACTALPRE_TCMALLOC": "0"} if opt_out else {}))
  out = subprocess.run([sys.executable, "-c", code, "a", "--b"], env=env, capture_output=True, text=True, check=True)
  # the same arguments in the new process; 'start' once per process
  assert out.stdout.split("\n")[:-1] == ["start"] * (1 if opt_out else 2) + [f"{not opt_out} ['a', '--b']"]


@NEEDS_TCMALLOC
def test_tcmalloc_does_not_change_a_training_run(tmp_path):
  """Measured: the same bits (metrics and every parameter) with and without tcmalloc, so the tolerance is 0."""
  runs = {}
  for name, env in (("glibc", _env(FRACTALPRE_TCMALLOC="0")), ("tcmalloc", _env())):
    workdir = tmp_path / name
    subprocess.run([sys.executable, "-m", "fractalpre.train", "--config", "configs/pretrain_1pfrac_vit.py:runlocal",
                    "--workdir", str(workdir), "--config.total_steps=3", "--config.log_every=1",
                    "--config.data.num_classes=4", "--config.tensorboard=False"],
                   env=env, capture_output=True, text=True, check=True)
    runs[name] = workdir
  assert metric_writer.read(runs["glibc"]) == metric_writer.read(runs["tcmalloc"])
  a, b = (checkpoints.load_state(runs[n])["params"] for n in ("glibc", "tcmalloc"))
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_array_equal(x, y)
