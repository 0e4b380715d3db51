"""The seed statistics, and the demo story and the Scaling Backwards script end to end in --quick mode (their
numbers are not asserted: the structure and every per-seed entry are)."""
import json
import sys

import jax
import numpy as np
import pytest

from fractalpre.studies import transfer
from fractalpre.util import cpu_allocator
from tests.fractalpre import scripts


def test_spread_summary_and_paired_differences():
  a = {0: {"top1": 0.8, "nll": 0.5, "ece": 0.1}, 1: {"top1": 0.6, "nll": 0.7, "ece": 0.2}, 2: {"top1": 0.7, "nll": 1, "ece": 0}}
  b = {0: {"top1": 0.7, "nll": 0.6, "ece": 0.1}, 1: {"top1": 0.6, "nll": 0.6, "ece": 0.1}, 3: {"top1": 0, "nll": 9, "ece": 1}}
  mean, std = transfer.summary(a)["top1"]
  assert mean == pytest.approx(0.7) and std == pytest.approx(np.std([0.8, 0.6, 0.7], ddof=1))
  mean, std = transfer.paired(a, b)["top1"]  # seeds 0 and 1 only: differences 0.1 and 0.0
  assert mean == pytest.approx(0.05) and std == pytest.approx(np.std([0.1, 0.0], ddof=1))
  assert transfer.cell((0.05, 0.0707), "top1", signed=True) == "+5.0 ± 7.1"
  assert transfer.cell((0.5, 0.01), "nll") == "0.500 ± 0.010"


@pytest.fixture
def script_main(monkeypatch):
  """Runs a script's main() in this process (no re-execution under tcmalloc), restoring JAX's cache settings."""
  monkeypatch.setattr(cpu_allocator, "preload", lambda: None)
  saved = jax.config.jax_compilation_cache_dir, jax.config.jax_persistent_cache_min_compile_time_secs

  def run(name, *argv):
    monkeypatch.setattr(sys, "argv", [name, *argv])
    scripts.load(name).main()
  yield run
  jax.config.update("jax_compilation_cache_dir", saved[0])
  jax.config.update("jax_persistent_cache_min_compile_time_secs", saved[1])


def test_demo_story_quick(script_main, tmp_path):
  script_main("pretrain_finetune_demo", "--quick", "--workdir", str(tmp_path))
  results = json.loads((tmp_path / "results.json").read_text())["results"]
  assert set(results) == {"digits", "lfw"}
  for runs in results.values():
    assert set(runs) == {"pretrained", "scratch"}
    for per_seed in runs.values():
      assert set(per_seed) == {"0", "1"}
      assert all(set(r) == {"top1", "nll", "ece"} and 0 <= r["top1"] <= 1 for r in per_seed.values())
  story = (tmp_path / "story.md").read_text()
  assert story.count("| paired difference |") == 2 and story.count("of 2 seeds |") == 2
  assert "digits, 10 labels/class | from scratch" in story and "lfw (faces / non-faces)" in story
  assert (tmp_path / "loss_curves.png").stat().st_size > 0


def test_scaling_backwards_quick(script_main, tmp_path):
  module = scripts.load("scaling_backwards")
  script_main("scaling_backwards", "--quick", "--workdir", str(tmp_path))
  out = json.loads((tmp_path / "results.json").read_text())
  rows = module.cells(module.QUICK_ROWS, module.QUICK_SWEEPS)
  assert set(out["results"]) == {f"{g}={v}" for g, v, _ in rows}
  for cell in out["results"].values():
    assert set(cell) == {"finetune", "probe"} and all(set(cell[m]) == {"0", "1"} for m in cell)
  table = (tmp_path / "table.md").read_text().splitlines()
  assert len([line for line in table if line.startswith("| ") and "±" in line]) == len(rows)
  assert "| FractalDB |" in "\n".join(table) and "| 1p-img edges |" in "\n".join(table)
  assert (tmp_path / "sweeps.png").stat().st_size > 0
  # rows that share a pretraining share its runs: Delta = 0.3 and L = 16 are the 1p-frac row itself
  assert out["results"]["delta=0.3"] == out["results"]["L=16"] == out["results"]["rows=1p-frac"]
  assert out["results"]["rows=FractalDB"] != out["results"]["rows=1p-frac"]
