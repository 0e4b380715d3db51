"""The slow-link comparison: its target and steps-to-target arithmetic, its use of the link harness's
result, and the whole script in --quick mode (its numbers are not asserted; how they follow from the runs is)."""
import json

import numpy as np
import pytest

from fractalpre.training import metric_writer
from tests.fractalpre import scripts


def comparison():
  return scripts.load("slow_link_comparison")


def test_steps_to_target_uses_the_trailing_mean_of_the_last_tenth_of_logged_steps():
  s = comparison()
  records = [{"step": 10 * (i + 1), "loss": loss} for i, loss in enumerate([5, 4, 3, 2, 1.5, 1.2, 1.0, 0.8, 0.9, 1.1,
                                                                          0.7, 0.6, 0.65, 0.5, 0.55, 0.5, 0.4, 0.45,
                                                                          0.42, 0.41])]
  steps, means = s.trailing(records)  # a window of 2 logged steps
  assert steps[0] == 20 and means[0] == 4.5 and means[-1] == pytest.approx(0.415)
  assert s.steps_to(0.9, records) == 80  # (1.0 + 0.8) / 2; step 70 alone (1.0) would not do
  assert s.steps_to(0.1, records) is None


def test_a_run_s_step_time_and_bytes_weigh_sync_steps_by_their_share():
  s = comparison()
  result = {"modes": [
      {"comm": "allreduce", "momentum_sync": "", "every": {"seconds": 0.5, "measured_bytes": 4e6}},
      {"comm": "outer 50:int8", "momentum_sync": "", "every": {"seconds": 0.1, "measured_bytes": 0.0},
       "sync": {"seconds": 0.4, "measured_bytes": 1e6}}]}
  entry = s.link_entry(result, "outer:50:int8")
  assert s.per_step(entry, 1 / 50, "seconds") == pytest.approx(0.1 * 49 / 50 + 0.4 / 50)
  assert s.per_step(entry, 1 / 50, "measured_bytes") == pytest.approx(1e6 / 50)
  assert s.per_step(s.link_entry(result, "lion"), 0.3, "seconds") == 0.5  # no sync steps
  argv = s.wire_argv(["lion", "cub/exp:4", "outer:50:int8", "outer:50:4bit:5"], "100mbit", 50, quick=False)
  assert argv[argv.index("--comms") + 1] == "allreduce,mavo_1bit"
  assert argv[argv.index("--momentum-sync") + 1] == "exp:4"
  assert argv[argv.index("--outer") + 1] == "50:int8,50:4bit:5"


def test_quick_comparison_end_to_end_and_its_rerun(tmp_path, capsys):
  s = comparison()
  argv = ["--quick", "--workdir", str(tmp_path), "--steps", "4", "--seeds", "2", "--modes", "lion,outer:2:int8"]
  assert s.main(argv) == 0
  results = json.loads((tmp_path / "results.json").read_text())
  finals = {}
  for mode, folder in (("lion", "lion"), ("outer:2:int8", "outer_2_int8")):
    records = [metric_writer.read(tmp_path / "runs" / folder / f"seed{seed}") for seed in (0, 1)]
    assert [len(r) for r in records] == [4, 4]
    finals[mode] = [np.mean([x["loss"] for x in r[-1:]]) for r in records]  # a window of one logged step
    row = results["modes"][mode]
    np.testing.assert_allclose(row["final_loss"], finals[mode])
    assert row["compiled_bytes"] == records[0][-1]["comm_bytes_per_step"] > 0
  assert results["target"] == pytest.approx(np.mean(finals["lion"]))
  reached = results["modes"]["lion"]["steps_to_target"]
  assert sum(r is not None for r in reached) >= 1  # the lower of the two ends at or below their mean
  table = capsys.readouterr().out
  assert "| fp32 Lion |" in table and "| DiLoCo H=2 int8 |" in table and "\nMeasured: 20" in table
  assert s.main(argv) == 0  # again: every run reused
  assert "(reused)" in capsys.readouterr().err and json.loads((tmp_path / "results.json").read_text()) == results


def test_equal_outer_modes_are_spelled_one_way():
  canonical = comparison().canonical
  assert canonical("outer:10:int8:lr=1.0:m=0") == canonical("outer:010:int8:m=0.0:lr=1") == "outer:10:int8:lr=1:m=0"
  assert canonical("outer:10:fp32:1:lr=0.7:m=0.9") == "outer:10:fp32"  # the defaults: DiLoCo's outer step
  assert canonical("outer:50:4bit:5:lr=1.5") == "outer:50:4bit:5:lr=1.5"
  assert canonical("cub/exp:04") == "cub/exp:4" and canonical("lion") == "lion"
  # every digit kept: a value near the default is not the default, and spelling it again changes nothing
  assert canonical("outer:10:int8:lr=0.70000001:m=1234567") == "outer:10:int8:lr=0.70000001:m=1234567"
  assert canonical("outer:10:int8:lr=1e-05") == canonical(canonical("outer:10:int8:lr=0.00001")) == "outer:10:int8:lr=1e-05"


@pytest.mark.parametrize("argv,message", [
    (["--modes", "lion,outer:0:int8"], "--modes: outer:0:int8: outer.every must be an integer >= 1, got 0"),
    (["--modes", "lion,dilcoco"], "--modes: unknown mode 'dilcoco'"),
    (["--modes", "lion,outer:10:fp16"], "outer.comm must be one of fp32, bf16, int8, 4bit, 1bit, got 'fp16'"),
    (["--modes", "lion,outer:10:fp32:lr=nan"], "outer.lr must be a finite number > 0, got nan"),
    (["--modes", "lion,outer:10:fp32:m=x"], "the outer lr and m must be numbers, got '10:fp32:m=x'"),
    (["--modes", "lion,outer:10:fp32:beta=1"], "optionally followed by :lr=X and :m=Y"),
    (["--modes", "lion,outer:10:int8:lr=1,outer:010:int8:lr=1.0"],
     "--modes names one mode twice: outer:10:int8:lr=1 and outer:010:int8:lr=1.0 are both outer:10:int8:lr=1"),
    (["--modes", "lion,cub,lion"], "--modes names lion twice"),
    (["--modes", "outer:10:int8:lr=0.1234567,outer:10:int8:lr=0.1234568,lion,lion"], "--modes names lion twice"),
    (["--seeds", "1"], "--seeds must be >= 2 (a spread needs two), got 1"),
    (["--steps", "0"], "--steps must be"),
])
def test_bad_settings_are_one_line(argv, message, capsys, tmp_path):
  with pytest.raises(SystemExit) as stop:
    comparison().main(["--workdir", str(tmp_path / "w"), *argv])
  err = capsys.readouterr().err
  assert stop.value.code == 2 and message in err and err.count("\n") == 1
  assert not (tmp_path / "w").exists()
