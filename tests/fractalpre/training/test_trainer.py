import math
import os
import signal
import subprocess
import sys
import textwrap
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from fractalpre.training import checkpoints, classification, metric_writer, trainer
from fractalpre.training import config_files

TINY_MODEL = dict(name="vit_cpu", patch=8, width=32, depth=1, mlp_dim=64, heads=2)


def tiny_config(**overrides) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.data = ml_collections.ConfigDict(dict(kind="1p-frac", num_classes=16, render_size=16, points=400, seed=0,
                                          workers=2, prefetch=2))
  c.data.augment = ml_collections.ConfigDict(dict(crop_scale=(0.3, 1.0), hflip=0.5, vflip=0.5,
                                                  label_smoothing=0.1, mixup=0.8, cutmix=1.0))
  c.image_size = 16
  c.model = ml_collections.ConfigDict(TINY_MODEL)
  c.batch_size = 16
  c.total_steps = 2
  c.optim = ml_collections.ConfigDict(dict(optimizer="adamw", lr=1e-3, weight_decay=0.05, warmup_steps=1))
  c.log_every = 1
  c.checkpoint_every = 2
  c.eval_every = 0
  c.tensorboard = False
  c.update_from_flattened_dict(overrides)
  return c


def test_three_steps_on_eight_fake_devices(tmp_path):
  assert jax.device_count() == 8
  final = classification.train_and_evaluate(tiny_config(total_steps=3, checkpoint_every=3), tmp_path, progress=False)
  records = metric_writer.read(tmp_path)
  assert [r["step"] for r in records] == [1, 2, 3]
  # The head starts at zero and the warm-up's first learning rate is 0, so the predictions of steps 1
  # and 2 are uniform: loss = ln(L) exactly. Step 3 sees the first real update.
  assert records[0]["lr"] == 0 and records[1]["lr"] == pytest.approx(1e-3)
  assert records[0]["loss"] == pytest.approx(math.log(16), abs=1e-5)
  assert records[1]["loss"] == pytest.approx(math.log(16), abs=1e-5)
  assert math.isfinite(final["loss"]) and final["loss"] != pytest.approx(math.log(16), abs=1e-6)
  assert (tmp_path / "checkpoints" / "3").is_dir()


def _run_script(workdir, total_steps):
  return textwrap.dedent(f"""
      import ml_collections, sys
      sys.path.insert(0, {str(__import__('pathlib').Path(__file__).parent)!r})
      from test_trainer import tiny_config
      from fractalpre.training import classification
      classification.train_and_evaluate(tiny_config(total_steps={total_steps}, checkpoint_every=3), {str(workdir)!r},
                                        progress=False)
      """)


def test_sigkilled_run_resumes_bit_exact(tmp_path):
  whole, killed = tmp_path / "whole", tmp_path / "killed"
  # The processes load their compiled programs from the tests' shared persistent cache (tests/conftest.py).
  env = {**os.environ, "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0", "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}
  subprocess.run([sys.executable, "-c", _run_script(whole, 14)], check=True, capture_output=True, env=env)
  proc = subprocess.Popen([sys.executable, "-c", _run_script(killed, 14)], stderr=subprocess.DEVNULL, env=env)
  deadline = time.time() + 240
  while time.time() < deadline and len(metric_writer.read(killed)) < 7:
    time.sleep(0.02)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert 0 < len(metric_writer.read(killed)) < 14
  subprocess.run([sys.executable, "-c", _run_script(killed, 14)], check=True, capture_output=True, env=env)
  assert metric_writer.read(killed) == metric_writer.read(whole)


def _damage(step_folder):
  """Truncates one file of a checkpoint's state (its tree metadata), as a crash or a full disk would."""
  victim = step_folder / "state" / "_METADATA"
  victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])


def test_damaged_checkpoints_are_moved_aside_and_the_run_saves_again(tmp_path, capfd):
  config = lambda: tiny_config(total_steps=6, checkpoint_every=2)
  reference = tmp_path / "reference"
  classification.train_and_evaluate(config(), reference, progress=False)
  final_params = checkpoints.load_state(reference)["params"]

  def assert_final_checkpoint_saved():
    capfd.readouterr()
    jax.tree.map(np.testing.assert_array_equal, checkpoints.load_state(run)["params"], final_params)
    assert "could not be restored" not in capfd.readouterr().err  # step 6 itself loaded
    assert metric_writer.read(run) == metric_writer.read(reference)

  run = tmp_path / "run"
  classification.train_and_evaluate(config(), run, progress=False)
  # Only the newest damaged: resume from step 4, and step 6 is saved again; one line about it, no tracebacks
  _damage(run / "checkpoints" / "6")
  capfd.readouterr()
  classification.train_and_evaluate(config(), run, progress=False)
  err = capfd.readouterr().err.strip().splitlines()
  assert err[0].startswith("checkpoint at step 6 could not be restored (") and len(err[0]) < 400
  assert err[0].endswith(f"moved it to {run / 'damaged_checkpoints' / '6'} and trying the previous one")
  assert err[1:] == [f"resumed from step 4 in {run / 'checkpoints'}"], err
  assert_final_checkpoint_saved()
  # Every checkpoint damaged: three one-line reports, a fresh start, and the final checkpoint on disk again.
  for step in (2, 4, 6):
    _damage(run / "checkpoints" / str(step))
  classification.train_and_evaluate(config(), run, progress=False)
  err = capfd.readouterr().err.strip().splitlines()
  assert [line.split(" could not")[0] for line in err] == [f"checkpoint at step {s}" for s in (6, 4, 2)], err
  assert sorted(p.name for p in (run / "damaged_checkpoints").iterdir()) == ["2", "4", "6", "6.1"]
  assert_final_checkpoint_saved()


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
  config = tiny_config(total_steps=8, checkpoint_every=1, **{"optim.lr": 1e30, "optim.warmup_steps": 0})
  with pytest.raises(trainer.NonFiniteLoss, match=r"the loss became non-finite at step \d+; stopping \((the "
                     r"last good checkpoint, step \d+, is kept|no checkpoint was saved before it)\)\. .*--restart"):
    classification.train_and_evaluate(config, tmp_path, progress=False)
  steps = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
  assert all(np.isfinite(r["loss"]) for r in metric_writer.read(tmp_path))
  assert steps == [r["step"] for r in metric_writer.read(tmp_path)][-len(steps):]
  # the command the message names works: a lower optim.lr with --restart
  config.optim.lr = 1e-3
  final = classification.train_and_evaluate(config, tmp_path, progress=False, restart=True)
  assert math.isfinite(final["loss"]) and (tmp_path / "replaced_runs" / "1" / "checkpoints").is_dir()


def test_finetune_loads_pretrained_weights_and_resamples_position_embeddings(tmp_path):
  classification.train_and_evaluate(tiny_config(), tmp_path / "pre", progress=False)
  config = tiny_config(total_steps=1, checkpoint_every=1, init_from=str(tmp_path / "pre"), image_size=32,
                       eval_every=1)
  config.data = ml_collections.ConfigDict(dict(kind="digits", labels_per_class=5, seed=0, workers=1,
                                               augment=config.data.augment.to_dict()))
  config.optim.lr = 0.0  # so the fine-tuned weights are the loaded ones
  final = classification.train_and_evaluate(config, tmp_path / "ft", progress=False)
  pre, ft = checkpoints.load_state(tmp_path / "pre")["params"], checkpoints.load_state(tmp_path / "ft")["params"]
  np.testing.assert_array_equal(ft["block0"]["MlpBlock_0"]["Dense_0"]["kernel"],
                                pre["block0"]["MlpBlock_0"]["Dense_0"]["kernel"])
  assert pre["pos_embedding"].shape == (1, 4, 32) and ft["pos_embedding"].shape == (1, 16, 32)
  assert ft["head"]["kernel"].shape == (32, 10) and not ft["head"]["kernel"].any()
  # With a zero head and lr 0 the predictions are uniform over the 10 digits.
  assert final["eval_nll"] == pytest.approx(math.log(10), abs=1e-5)
  records = metric_writer.read(tmp_path / "ft")
  assert [r["step"] for r in records] == [1] and "loss" in records[0] and "eval_top1" in records[0]
  assert 0 <= final["eval_top1"] <= 1


def test_unknown_config_key_names_near_matches(tmp_path):
  argv = ["--config", "configs/finetune.py:dataset=digits", "--workdir", str(tmp_path), "--config.optim.lrr=1"]
  assert config_files.unknown_override(argv) == "fractalpre.train: error: unknown config key 'optim.lrr'; did you mean optim.lr?"
  assert config_files.unknown_override(argv[:-1] + ["--config.total_steps=3"]) is None
  result = subprocess.run([sys.executable, "-m", "fractalpre.train", *argv[:-1], "--config.totl_steps=3"],
                          capture_output=True, text=True)
  assert result.returncode == 2
  assert result.stderr.strip() == "fractalpre.train: error: unknown config key 'totl_steps'; did you mean total_steps?"


@pytest.mark.parametrize("comm,hierarchy", [("mavo_1bit", "flat"), ("l1_int8", "node")])
def test_compressed_lion_trains_and_restores_per_device_momenta_exactly(tmp_path, comm, hierarchy):
  overrides = {"optim.optimizer": "lion", "optim.lr": 1e-3, "total_steps": 4, "checkpoint_every": 2}
  def config():
    c = tiny_config(**overrides)
    c.lion = ml_collections.ConfigDict(dict(comm=comm, momentum_sync="every:3", sync_pattern="",
                                            hierarchy=hierarchy, local_devices=2))
    return c
  classification.train_and_evaluate(config(), tmp_path / "whole", progress=False)
  run = tmp_path / "resumed"
  classification.train_and_evaluate(config(), run, progress=False)
  import shutil
  shutil.rmtree(run / "checkpoints" / "4")
  classification.train_and_evaluate(config(), run, progress=False)
  whole = metric_writer.read(tmp_path / "whole")
  assert [r["step"] for r in whole] == [1, 2, 3, 4]
  assert metric_writer.read(run) == whole
  import orbax.checkpoint as ocp
  restored = ocp.CheckpointManager((run / "checkpoints").absolute(), item_names=("state", "data")).restore(
      4, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
  lion_state = next(s for s in restored["state"]["opt_state"] if isinstance(s, dict) and "mu" in s)
  mu = lion_state["mu"]["head"]["kernel"]
  assert mu.shape[0] == 8
  if hierarchy == "flat":
    assert not np.allclose(mu[0], mu[1])  # per-device momenta, not yet synced at step 4
  else:  # one momentum per node of 2 devices
    np.testing.assert_array_equal(mu[0], mu[1])
    assert not np.allclose(mu[0], mu[2])


def test_bf16_run_tracks_the_fp32_run(tmp_path):
  losses = {}
  for precision in ("fp32", "bf16"):
    config = tiny_config(total_steps=6, checkpoint_every=6)
    config.precision = precision
    classification.train_and_evaluate(config, tmp_path / precision, progress=False)
    losses[precision] = np.array([r["loss"] for r in metric_writer.read(tmp_path / precision)])
  assert not np.array_equal(losses["bf16"], losses["fp32"])  # bf16 matmuls really ran
  np.testing.assert_allclose(losses["bf16"], losses["fp32"], rtol=0.02)


def test_fp8_step_quantises_and_keeps_its_scales_out_of_the_optimizer(tmp_path):
  config = tiny_config(total_steps=2, precision="fp8")
  config.optim.update(dict(lr=0.5, weight_decay=0.5))  # an optimizer touching fp8 state would show
  mesh = trainer.make_mesh()
  model = classification.model_from_config(config, 16)
  state, shardings, step = trainer.build(config, mesh, model, (1, 16, 16, 3), classification.classification_loss)
  assert "input_scale" in state["fp8"]["block0"]["MlpBlock_0"]["Dense_0"]["Fp8DirectDotGeneralOp_0"]
  assert not any("Fp8" in jax.tree_util.keystr(p)
                 for p, _ in jax.tree_util.tree_leaves_with_path(state["opt_state"]))
  rng = np.random.default_rng(0)
  batch = {"image": rng.normal(size=(16, 16, 16, 3)).astype(np.float32),
           "label": np.eye(16, dtype=np.float32)[rng.integers(0, 16, 16)]}
  hlo = step.lower(state, batch).compile().as_text()
  assert "f8e4m3fn" in hlo and "f8e5m2" in hlo
  # The dot's input is the kernel cast to the bf16 compute dtype.
  kernel0 = np.asarray(state["params"]["block0"]["MlpBlock_0"]["Dense_0"]["kernel"].astype(jnp.bfloat16), np.float32)
  state, _ = step(state, batch)
  meta = jax.device_get(state["fp8"]["block0"]["MlpBlock_0"]["Dense_0"]["Fp8DirectDotGeneralOp_0"])
  assert float(meta["kernel_amax_history"][0]) == pytest.approx(np.abs(kernel0).max(), rel=1e-6)
  assert float(meta["kernel_scale"][0]) == 1.0  # delayed scaling: the history was empty at step 1
  state, _ = step(state, batch)
  meta = jax.device_get(state["fp8"]["block0"]["MlpBlock_0"]["Dense_0"]["Fp8DirectDotGeneralOp_0"])
  # Step 2 quantised with amax(history) / 448, e4m3's largest value: the amax of step 1's kernel (the
  # optimizer's large lr and weight decay changed the kernel, but never the scale).
  assert float(meta["kernel_scale"][0]) == pytest.approx(np.abs(kernel0).max() / 448, rel=1e-6)
  assert float(meta["input_scale"][0]) > 0 and float(meta["output_grad_scale"][0]) > 0


@pytest.mark.parametrize("on", ["host", "device"])
def test_both_input_paths_resume_exactly(tmp_path, on):
  import shutil
  config = tiny_config(total_steps=6, checkpoint_every=3, **{"data.augment_on": on})
  classification.train_and_evaluate(config, tmp_path, progress=False)
  whole = metric_writer.read(tmp_path)
  shutil.rmtree(tmp_path / "checkpoints" / "6")  # as if killed after the save at step 3
  classification.train_and_evaluate(config, tmp_path, progress=False)
  assert metric_writer.read(tmp_path) == whole


@pytest.mark.parametrize("changes", [{"optim.optimizer": "ivon", "optim.ess": 100.0},
                                     {"outer.workers": 2, "outer.comm": "1bit"}])
def test_runs_of_other_seeds_lower_to_the_same_program(changes):
  """The run's keys are arguments of the step, not constants in it, so that JAX's persistent cache serves
  every seed of a study from one compilation (IVON's noise and the 1-bit outer rounding use them)."""
  texts = []
  for seed in (0, 1):
    c = tiny_config(seed=seed)
    c.outer = ml_collections.ConfigDict(dict(workers=0, every=2, lr=0.7, momentum=0.9, comm="fp32", fragments=1))
    c.update_from_flattened_dict(changes)
    state, _, step = trainer.build(c, trainer.make_mesh(), classification.model_from_config(c, 16), (1, 16, 16, 3),
                                   classification.classification_loss)
    batch = {"image": jax.ShapeDtypeStruct((16, 16, 16, 3), jnp.float32),
             "label": jax.ShapeDtypeStruct((16, 16), jnp.float32)}
    texts.append(step.lower(state, batch).as_text())
  assert texts[0] == texts[1]
