"""The seed statistics, and the demo story and the Scaling Backwards script end to end in --quick mode (their
numbers are not asserted: the structure and every per-seed entry are)."""
import functools
import json
import math
import os
import re
import subprocess
import sys

import jax
import numpy as np
import pytest

from fractalpre import util
from fractalpre.studies import transfer
from fractalpre.training import linear_probe
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


def _runs(table):
  return {p: {f: {"top1": v} for f, v in enumerate(row)} for p, row in enumerate(table)}


def test_components_split_the_spread_into_pretraining_and_finetuning_seeds():
  # one-way random-effects ANOVA by hand: groups (0.5, 0.7), (0.6, 0.6), (0.9, 0.7)
  stats = transfer.components(_runs([[0.5, 0.7], [0.6, 0.6], [0.9, 0.7]]))
  within = np.mean([np.var(g, ddof=1) for g in ([0.5, 0.7], [0.6, 0.6], [0.9, 0.7])])  # 0.0133
  between = np.var([0.6, 0.6, 0.8], ddof=1)  # of the group means, 0.0133
  assert stats["mean"] == pytest.approx(2 / 3) and stats["runs"] == 6
  assert stats["std"] == pytest.approx(np.std([0.5, 0.7, 0.6, 0.6, 0.9, 0.7], ddof=1))
  assert stats["finetune_std"] == pytest.approx(math.sqrt(within))
  assert stats["pretrain_std"] == pytest.approx(math.sqrt(between - within / 2))
  # pretraining seeds that only shift the level: all of the spread is theirs
  shifted = transfer.components(_runs([[0.5, 0.5], [0.7, 0.7]]))
  assert shifted["finetune_std"] == 0 and shifted["pretrain_std"] == pytest.approx(np.std([0.5, 0.7], ddof=1))
  # group means closer than fine-tuning noise predicts: the estimate is clipped at 0, not imaginary
  noisy = transfer.components(_runs([[0.2, 0.8], [0.8, 0.2]]))
  assert noisy["pretrain_std"] == 0 and noisy["finetune_std"] == pytest.approx(np.std([0.2, 0.8], ddof=1))
  # one pretraining group (scratch), or one fine-tuning seed per group (the probe): that spread is undefined
  assert math.isnan(transfer.components({"none": {0: {"top1": 0.5}, 1: {"top1": 0.6}}})["pretrain_std"])
  probe = transfer.components(_runs([[0.5], [0.6], [0.7]]))
  assert math.isnan(probe["finetune_std"]) and probe["pretrain_std"] == pytest.approx(0.1)


def test_scaling_backwards_pretrains_what_each_row_names():
  module = scripts.load("scaling_backwards")
  seen = set()
  for group, value, key in module.cells(tuple(module.ROWS), module.SWEEPS):
    if not key:
      continue
    config = module.pretrain_config(key, 10, seed=2)
    assert config.seed == config.data.seed == 2 and config.total_steps == 10
    if group in ("delta", "sigma", "L"):
      assert config.data.kind == "1p-frac"
      setting = {"delta": config.data.delta, "sigma": config.data.sigma, "L": config.data.num_classes}
      base = {"delta": module.BASE["delta"], "sigma": module.BASE["sigma"], "L": module.BASE["classes"]}
      assert setting == {**base, group: value}
    seen.add(config.data.kind + str(config.data.get("rendering")))
  assert seen == {"fractaldbNone", "1p-fracNone", "1p-imggray", "1p-imgedges"}


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
  """One dataset (the second only repeats the same code with another source) and the rerun."""
  script_main("pretrain_finetune_demo", "--quick", "--workdir", str(tmp_path), "--datasets", "digits")
  results = json.loads((tmp_path / "results.json").read_text())["results"]
  assert set(results) == {"digits"}
  for runs in results.values():
    assert set(runs) == {"pretrained", "scratch"}
    for per_seed in runs.values():
      assert set(per_seed) == {"0", "1"}
      assert all(set(r) == {"top1", "nll", "ece"} and 0 <= r["top1"] <= 1 for r in per_seed.values())
  story = (tmp_path / "story.md").read_text()
  assert story.count("| paired difference |") == 1 and story.count("of 2 seeds |") == 1
  assert "digits, 10 labels/class | from scratch" in story and "\n\nMeasured: 20" in story
  assert (tmp_path / "loss_curves.png").stat().st_size > 0
  # the same command again reuses every run and reports the times they took, not the rerun's
  script_main("pretrain_finetune_demo", "--quick", "--workdir", str(tmp_path), "--datasets", "digits")
  assert (tmp_path / "story.md").read_text() == story


@pytest.mark.parametrize("name,argv,message", [
    ("pretrain_finetune_demo", ["--delta", "-1"], "--classes/--delta: delta must be a finite number >= 0, got -1.0"),
    ("pretrain_finetune_demo", ["--delta", "nan"], "--classes/--delta: delta must be a finite number >= 0, got nan"),
    ("pretrain_finetune_demo", ["--workdir", "FILE"], "--workdir FILE exists and is not a folder"),
    ("scaling_backwards", ["--workdir", "FILE"], "--workdir FILE exists and is not a folder"),
])
def test_the_scripts_refuse_bad_settings_before_any_work(script_main, tmp_path, monkeypatch, name, argv, message):
  monkeypatch.chdir(tmp_path)
  (tmp_path / "FILE").write_text("")
  with pytest.raises(util.UsageError, match=f"^{re.escape(message)}$"):
    script_main(name, *argv)
  assert sorted(p.name for p in tmp_path.iterdir()) == ["FILE"]


def test_a_script_s_mistake_is_one_line_and_exit_2_from_the_shell(tmp_path):
  result = subprocess.run([sys.executable, str(scripts.SCRIPTS / "pretrain_finetune_demo.py"), "--delta", "nan",
                           "--workdir", str(tmp_path / "w")], capture_output=True, text=True,
                          env={**os.environ, "FRACTALPRE_TCMALLOC": "0"})
  assert result.returncode == 2 and result.stderr.strip().splitlines() == [
      "pretrain_finetune_demo.py: error: --classes/--delta: delta must be a finite number >= 0, got nan"]


@pytest.mark.parametrize("flag", ["--pretrain-seeds", "--finetune-seeds"])
def test_scaling_backwards_needs_two_seeds_of_each_kind(script_main, tmp_path, capsys, flag):
  with pytest.raises(SystemExit) as stop:
    script_main("scaling_backwards", flag, "1", "--workdir", str(tmp_path / "w"))
  assert stop.value.code == 2
  assert f"{flag} must be at least 2 (the table splits the spread between both kinds of seed), got 1" in \
      capsys.readouterr().err
  assert not (tmp_path / "w").exists()


def test_scaling_backwards_quick(script_main, tmp_path, monkeypatch):
  module = scripts.load("scaling_backwards")
  # two L2 strengths instead of 17 for the probes: the table's structure is what is checked here (the
  # choice over the whole grid is test_linear_probe's)
  monkeypatch.setattr(linear_probe, "probe", functools.partial(linear_probe.probe, grid=(1e-2, 1.0)))
  script_main("scaling_backwards", "--quick", "--workdir", str(tmp_path))
  out = json.loads((tmp_path / "results.json").read_text())
  rows = module.cells(module.QUICK_ROWS, module.QUICK_SWEEPS)
  assert set(out["results"]) == {f"{g}={v}" for g, v, _ in rows}
  metrics = {"top1", "nll", "ece"}
  # {pretraining seed: {fine-tuning seed: metrics}}: 2 x 2 fine-tunes and one probe per pretraining seed
  frac = out["results"]["rows=1p-frac"]
  assert {p: set(runs) for p, runs in frac["finetune"].items()} == {"0": {"0", "1"}, "1": {"0", "1"}}
  assert {p: set(runs) for p, runs in frac["probe"].items()} == {"0": {"0"}, "1": {"0"}}
  # scratch: no pretraining, as many fine-tuning runs as a pretrained cell, a probe per random init
  scratch = out["results"]["rows=scratch"]
  assert {p: set(runs) for p, runs in scratch["finetune"].items()} == {"none": {"0", "1", "2", "3"}}
  assert {p: set(runs) for p, runs in scratch["probe"].items()} == {"none": {"0", "1"}}
  for cell in out["results"].values():
    assert all(set(r) == metrics for mode in cell.values() for runs in mode.values() for r in runs.values())
  # the pretraining seeds pretrained apart, and their fine-tunes differ
  assert (tmp_path / "pretrain" / module.ROWS["1p-frac"] / "seed1").is_dir()
  assert frac["finetune"]["0"] != frac["finetune"]["1"]
  table = (tmp_path / "table.md").read_text()
  lines = [line for line in table.splitlines() if line.startswith("| ") and "±" in line]
  assert len(lines) == len(rows) and "| scratch |" in lines[0] and "| — / " in lines[0]
  assert "2 pretraining seeds x 2 fine-tuning seeds" in table and "of the 1 pretrainings" in table
  assert (tmp_path / "sweeps.png").stat().st_size > 0
  # rows that share a pretraining share its runs: Delta = 0.3 and L = 16 are the 1p-frac row itself
  assert out["results"]["delta=0.3"] == out["results"]["L=16"] == frac
