"""A workdir belongs to one run: one trainer at a time, one config, a metrics file that survives crashes,
and one line for every mistake on the trainer's command line."""
import json
import math
import os
import re
import subprocess
import sys

import pytest

from fractalpre import util
from fractalpre.training import classification, metric_writer
from tests.fractalpre.training.test_trainer import tiny_config


def test_a_workdir_with_another_config_is_refused_untouched_unless_restarted(tmp_path):
  classification.train_and_evaluate(tiny_config(), tmp_path, progress=False)
  before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
  lion = tiny_config(**{"optim.optimizer": "lion", "optim.lr": 1e-4})
  with pytest.raises(util.UsageError, match=r"holds a run with another config or inputs \(optim\.lr: 0\.001 -> 0\.0001; "
                                              r"optim\.optimizer: \"adamw\" -> \"lion\"\); use a new --workdir, or "
                                              r"--restart"):
    classification.train_and_evaluate(lion, tmp_path, progress=False)
  assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
  # Keys that leave the state and the data alone may change: this resumes the same run.
  classification.train_and_evaluate(tiny_config(log_every=2, total_steps=3, checkpoint_every=3), tmp_path, progress=False)
  assert [r["step"] for r in metric_writer.read(tmp_path)] == [1, 2, 3]  # resumed at 2, the last step is logged
  old_metrics = (tmp_path / "metrics.jsonl").read_bytes()
  classification.train_and_evaluate(lion, tmp_path, progress=False, restart=True)
  aside = tmp_path / "replaced_runs" / "1"
  assert (aside / "metrics.jsonl").read_bytes() == old_metrics
  assert json.loads((aside / "config.json").read_text())["optim"]["optimizer"] == "adamw"
  assert (aside / "checkpoints" / "3").is_dir()
  assert json.loads((tmp_path / "config.json").read_text())["optim"]["optimizer"] == "lion"
  assert [r["step"] for r in metric_writer.read(tmp_path)] == [1, 2]


def test_a_second_trainer_on_a_workdir_is_refused(tmp_path):
  tmp_path.mkdir(exist_ok=True)
  with util.FolderLock(tmp_path, "trainer"):
    with pytest.raises(util.UsageError, match=rf"{tmp_path} is in use by another trainer \(pid {os.getpid()}, "
                                                r"holding \.lock\); wait for it to finish"):
      classification.train_and_evaluate(tiny_config(), tmp_path, progress=False)
  assert not (tmp_path / "metrics.jsonl").exists()
  classification.train_and_evaluate(tiny_config(), tmp_path, progress=False)  # released: the next one runs
  assert not (tmp_path / ".lock").exists()


def test_a_partial_last_metrics_line_is_dropped_with_a_warning(tmp_path, caplog):
  classification.train_and_evaluate(tiny_config(total_steps=2, checkpoint_every=1), tmp_path, progress=False)
  whole = metric_writer.read(tmp_path)
  with open(tmp_path / "metrics.jsonl", "a") as f:
    f.write('{"step": 3, "loss": 2.7')  # a crash mid-line
  assert metric_writer.read(tmp_path) == whole
  assert f"{tmp_path / 'metrics.jsonl'}: dropping the partial last line 3" in caplog.text
  classification.train_and_evaluate(tiny_config(total_steps=3, checkpoint_every=1), tmp_path, progress=False)
  assert [r["step"] for r in metric_writer.read(tmp_path)] == [1, 2, 3]
  lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
  lines[0] = "{garbage"
  (tmp_path / "metrics.jsonl").write_text("\n".join(lines) + "\n")
  with pytest.raises(util.UsageError, match=rf"{tmp_path / 'metrics.jsonl'}:1 is not a JSON record"):
    metric_writer.read(tmp_path)


def test_non_finite_metrics_are_written_as_null(tmp_path):
  writer = metric_writer.MetricWriter(tmp_path, tensorboard=False)
  writer.write(1, {"loss": 1.5, "grad_norm": math.inf, "x": math.nan})
  line = (tmp_path / "metrics.jsonl").read_text()
  def refuse(constant):
    raise ValueError(f"not JSON: {constant}")
  assert json.loads(line, parse_constant=refuse) == {"step": 1, "loss": 1.5, "grad_norm": None, "x": None}


def _trainer(*args, **kwargs):
  return subprocess.run([sys.executable, "-m", "fractalpre.train", *args], capture_output=True, text=True, **kwargs)


@pytest.fixture
def read_only_folder(tmp_path):
  folder = tmp_path / "ro"
  folder.mkdir()
  if os.geteuid() != 0:
    folder.chmod(0o555)
    yield folder
    folder.chmod(0o755)
    return
  mounted = subprocess.run(["mount", "--bind", str(folder), str(folder)], capture_output=True).returncode == 0 and \
      subprocess.run(["mount", "-o", "remount,ro,bind", str(folder)], capture_output=True).returncode == 0
  if not mounted:
    pytest.skip("root without a read-only bind mount: permission bits do not stop root")
  yield folder
  subprocess.run(["umount", str(folder)], check=True)


RUNLOCAL = "configs/pretrain_1pfrac_vit.py:runlocal"


@pytest.mark.parametrize("case", ["read-only workdir", "workdir is a file", "no config file", "bad :arg",
                                  "missing init_from", "batch_size=abc"])
def test_trainer_mistakes_are_one_line_and_exit_2(case, tmp_path, read_only_folder):
  (tmp_path / "file").write_text("")
  args = {
      "read-only workdir": ["--config", RUNLOCAL, "--workdir", str(read_only_folder / "run")],
      "workdir is a file": ["--config", RUNLOCAL, "--workdir", str(tmp_path / "file")],
      "no config file": ["--config", "configs/nope.py", "--workdir", str(tmp_path / "w")],
      "bad :arg": ["--config", "configs/pretrain_1pfrac_vit.py:delta=abc", "--workdir", str(tmp_path / "w")],
      "missing init_from": ["--config", f"configs/finetune.py:init_from={tmp_path / 'nope'}",
                            "--workdir", str(tmp_path / "w")],
      "batch_size=abc": ["--config", RUNLOCAL, "--workdir", str(tmp_path / "w"), "--config.batch_size=abc"],
  }[case]
  message = {
      "read-only workdir": rf"--workdir {read_only_folder / 'run'} is not writable \({read_only_folder}: ",
      "workdir is a file": rf"--workdir {tmp_path / 'file'} exists and is not a folder",
      "no config file": r"--config configs/nope.py is not a file",
      "bad :arg": r"--config configs/pretrain_1pfrac_vit.py:delta=abc: config argument delta='abc' is not a float",
      "missing init_from": rf"init_from {tmp_path / 'nope'} is not a folder",
      "batch_size=abc": r"flag --config.batch_size=abc: invalid literal for int\(\) with base 10: 'abc'",
  }[case]
  result = _trainer(*args)
  lines = result.stderr.strip().splitlines()
  assert result.returncode == 2 and len(lines) == 1, result.stderr[-3000:]
  assert re.fullmatch(f"fractalpre.train: error: {message}.*", lines[0]), lines[0]
  assert not (tmp_path / "w").exists()


def test_a_value_error_inside_the_computation_is_a_bug_not_a_usage_error(tmp_path):
  code = f"""
import jax.numpy as jnp
from fractalpre import train
def shape_bug(config, workdir, restart):
  return jnp.ones(3) @ jnp.ones(4)
train.run(shape_bug, argv=["fractalpre.train", "--config", {RUNLOCAL!r}, "--workdir", {str(tmp_path)!r}])
"""
  result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
  assert result.returncode == 1 and "Traceback" in result.stderr
  assert "TypeError" in result.stderr or "ValueError" in result.stderr
  assert "fractalpre.train: error" not in result.stderr


def test_the_loop_fetches_nothing_from_the_devices_between_log_steps(tmp_path, monkeypatch):
  """jax.transfer_guard does not fire on CPU (the arrays already live on the host), so count every way
  a device array reaches the host instead, and compare runs with 4 and 12 steps between log steps."""
  import jax
  from jax._src import array as jax_array
  fetches = []
  for name in ("__float__", "__int__", "__bool__", "__array__", "item", "tolist", "__index__"):
    original = getattr(jax_array.ArrayImpl, name)
    monkeypatch.setattr(jax_array.ArrayImpl, name,
                        lambda self, *a, _f=original, _n=name, **k: (fetches.append(_n), _f(self, *a, **k))[1])
  device_get = jax.device_get
  monkeypatch.setattr(jax, "device_get", lambda x: (fetches.append("device_get"), device_get(x))[1])
  counts = []
  for steps in (4, 12):
    config = tiny_config(total_steps=steps, log_every=steps, checkpoint_every=steps)
    classification.train_and_evaluate(config, tmp_path / str(steps), progress=False)
    counts.append(len(fetches))
    fetches.clear()
  assert counts[0] == counts[1] > 0, counts


def test_the_inputs_a_run_reads_are_fingerprinted_and_a_tfds_root_is_not_hashed_whole(tmp_path):
  from fractalpre.training import workdir_claim
  (tmp_path / "images" / "a").mkdir(parents=True)
  (tmp_path / "images" / "a" / "x.png").write_bytes(b"1")
  (tmp_path / "tfds" / "mine" / "1.0.0").mkdir(parents=True)
  (tmp_path / "tfds" / "other").mkdir()
  config = tiny_config()
  config.data = {"kind": "folder", "path": str(tmp_path / "images")}
  config.eval = {"kind": "tfds", "name": "mine", "data_dir": str(tmp_path / "tfds")}
  first = workdir_claim.input_digests(config)
  assert set(first) == {"data.path", "eval.name"}
  (tmp_path / "tfds" / "other" / "downloaded").write_bytes(b"another dataset")  # not this run's input
  assert workdir_claim.input_digests(config) == first
  (tmp_path / "tfds" / "mine" / "1.0.0" / "shard").write_bytes(b"regenerated")
  (tmp_path / "images" / "a" / "y.png").write_bytes(b"2")
  changed = workdir_claim.input_digests(config)
  assert all(changed[k] != first[k] for k in first)


def test_a_run_that_saved_nothing_blocks_nothing_and_a_new_version_resumes_only_an_unfinished_run(
    tmp_path, monkeypatch, capsys):
  (tmp_path / "w").mkdir()
  (tmp_path / "w" / "config.json").write_text('{"a refused start": true}')
  classification.train_and_evaluate(tiny_config(total_steps=2, checkpoint_every=1), tmp_path / "w", progress=False)
  monkeypatch.setattr("fractalpre.__version__", "9.9")
  # unfinished (it goes on to 3 steps): resumed with one warning line
  classification.train_and_evaluate(tiny_config(total_steps=3, checkpoint_every=1), tmp_path / "w", progress=False)
  assert 'warning: resuming the run in' in capsys.readouterr().err
  monkeypatch.setattr("fractalpre.__version__", "10.0")
  with pytest.raises(util.UsageError, match=r'\(package version: "9.9" -> "10.0"\); use a new --workdir'):
    classification.train_and_evaluate(tiny_config(total_steps=3, checkpoint_every=1), tmp_path / "w", progress=False)
