"""A user's settings are refused in one line naming the key, the value and what is allowed, before any
work; every documented model trains from the pretraining configs; Ctrl-C stops with one line."""
import math
import re
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from fractalpre import util
from fractalpre.configs import pretrain_1pfrac_vit
from fractalpre.training import classification, init_from
from tests.fractalpre.training.test_trainer import tiny_config


@pytest.mark.parametrize("overrides,message", [
    ({"log_every": 0}, "log_every must be an integer >= 1, got 0"),
    ({"checkpoint_every": 0}, "checkpoint_every must be an integer >= 1, got 0"),
    ({"keep_checkpoints": 0}, "keep_checkpoints must be an integer >= 1, got 0"),
    ({"keep_checkpoints": -1}, "keep_checkpoints must be an integer >= 1, got -1"),
    ({"batch_size": 0}, "batch_size must be an integer >= 1, got 0"),
    ({"batch_size": -1}, "batch_size must be an integer >= 1, got -1"),
    ({"batch_size": 12}, "batch_size must be divisible by the 8 devices, got 12"),
    ({"total_steps": 0}, "total_steps must be an integer >= 1, got 0"),
    ({"eval_every": -1}, "eval_every must be an integer >= 0, got -1"),
    ({"optim.lr": math.nan}, "optim.lr must be a finite number >= 0, got nan"),
    ({"optim.lr": -1e-3}, "optim.lr must be a finite number >= 0, got -0.001"),
    ({"image_size": 30, "model.patch": 4}, "image_size 30 is not a multiple of vit_cpu's patch size 4 "
                                           r"\(the last 2 pixel rows and columns would never be seen\); use 28 or 32"),
    ({"data.augment.crop_scale": (0.5,)}, r"data.augment.crop_scale must be \(low, high\) with 0 < low <= high <= 1"),
    ({"data.augment.hflip": 1.5}, r"data.augment.hflip must be a number in \[0, 1\], got 1.5"),
    ({"optim.warmup_steps": -5}, "optim.warmup_steps must be an integer >= 0, got -5"),
    ({"model.drop_path": 1.5}, r"model.drop_path is a probability of dropping a residual branch, in \[0, 1\); got 1.5"),
    ({"model.drop_path": math.nan}, r"model.drop_path is a probability .*got nan"),
    ({"lion.comm": "mavo_1bit"}, "lion.comm=mavo_1bit take effect only with optim.optimizer=lion, got 'adamw'"),
])
def test_bad_settings_are_refused_before_any_work(tmp_path, overrides, message):
  config = tiny_config(**{k: v for k, v in overrides.items() if not k.startswith(("optim.", "data.augment", "lion."))})
  config.lion = {"comm": overrides.get("lion.comm", ""), "hierarchy": "flat"}
  for key, value in overrides.items():
    if key.startswith(("optim.", "data.augment")):
      parent, name = key.rsplit(".", 1)
      target = config.optim if parent == "optim" else config.data.augment
      target[name] = value
  with pytest.raises(util.UsageError, match=f"^{message}"):
    classification.train_and_evaluate(config, tmp_path / "run", progress=False)
  assert not (tmp_path / "run").exists()


def test_no_crop_from_the_command_line_means_the_whole_image(tmp_path):
  """`--config.data.augment.crop_scale=None` sets the tuple (None,): it trains without cropping."""
  result = subprocess.run([sys.executable, "-m", "fractalpre.train", "--config", "pretrain_1pfrac_vit:runlocal",
                           "--workdir", str(tmp_path / "w"), "--config.total_steps=1", "--config.tensorboard=False",
                           "--config.data.augment.crop_scale=None"],
                          capture_output=True, text=True, env={**os.environ, "FRACTALPRE_TCMALLOC": "0"})
  assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_every_registry_model_builds_from_the_pretraining_config(name):
  """The pretraining configs set drop_path: ResNets take it too (stochastic depth, as timm's ResNets)."""
  config = pretrain_1pfrac_vit.get_config("runlocal")
  config.model.name, config.model.drop_path = name, 0.5
  model = classification.model_from_config(config, 16)
  images = jax.random.uniform(jax.random.key(0), (4, 32, 32, 3))
  variables = model.init(jax.random.key(0), images, train=False)
  # random weights everywhere (the residual branches' last norm starts at zero, the head too)
  leaves, tree = jax.tree.flatten(variables["params"])
  params = jax.tree.unflatten(tree, [0.1 * jax.random.normal(jax.random.key(i), x.shape) for i, x in enumerate(leaves)])
  apply = lambda k: model.apply({**variables, "params": params}, images, train=True,
                                rngs={"dropout": jax.random.key(k)}, mutable=["batch_stats"])[0]
  feats = [apply(1), apply(2)]
  assert feats[0].shape == (4, 16)
  assert not np.allclose(feats[0], feats[1])  # blocks were dropped differently for two keys


def test_init_from_another_architecture_is_one_line_naming_both_models(tmp_path):
  vit = {"patch": {"kernel": np.zeros((4, 4, 3, 8))}, "block0": {"w": np.zeros((8, 8))}, "head": {"kernel": np.zeros((8, 2))}}
  wider = {"patch": {"kernel": np.zeros((4, 4, 3, 16))}, "block0": {"w": np.zeros((16, 16))},
           "head": {"kernel": np.zeros((16, 3))}}
  resnet = {"stem": {"kernel": np.zeros((3, 3, 3, 64))}, "head": {"kernel": np.zeros((64, 3))}}
  (tmp_path / "config.json").write_text('{"model": {"name": "vit_cpu"}}')
  source = f"init_from {tmp_path} ({init_from.checkpoint_model(tmp_path)})"
  assert source.endswith("(vit_cpu)")
  with pytest.raises(util.UsageError, match=r"\(vit_cpu\) does not fit vit_ti16: patch/kernel has shape \(4, 4, 3, 8\) "
                                            r"there and \(4, 4, 3, 16\) here"):
    init_from.merge_pretrained(wider, vit, "vit_ti16", source)
  with pytest.raises(util.UsageError, match=r"\(vit_cpu\) holds none of resnet18's parameters .* start from scratch"):
    init_from.merge_pretrained(resnet, vit, "resnet18", source)
  merged = init_from.merge_pretrained({**vit, "head": {"kernel": np.ones((8, 5))}}, vit, "vit_cpu", source)
  assert merged["head"]["kernel"].shape == (8, 5)


def test_ctrl_c_stops_with_one_line_and_the_same_command_resumes(tmp_path):
  argv = [sys.executable, "-m", "fractalpre.train", "--config", "pretrain_1pfrac_vit:runlocal", "--workdir",
          str(tmp_path / "w"), "--config.total_steps=100000", "--config.checkpoint_every=2",
          "--config.tensorboard=False"]
  env = {**os.environ, "FRACTALPRE_TCMALLOC": "0"}
  run = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
  deadline = time.time() + 240
  while not (tmp_path / "w" / "checkpoints" / "4").is_dir() and time.time() < deadline and run.poll() is None:
    time.sleep(0.2)
  run.send_signal(signal.SIGINT)
  _, err = run.communicate(timeout=120)
  # not the progress bar's states, nor orbax's log lines under load ("W1206 07:58:15 ... Waiting for previous save")
  lines = [l for l in err.strip().splitlines() if l.strip() and not l.startswith("w:") and not re.match(r"[IWE]\d{4} ", l)]
  assert run.returncode == 130, err[-3000:]
  assert len(lines) == 1 and "Traceback" not in err, err[-3000:]
  step, saved = map(int, re.fullmatch(
      r"fractalpre.train: interrupted at step (\d+); the last checkpoint is step (\d+); the same command resumes",
      lines[0]).groups())
  assert saved >= 4 and saved <= step
  again = subprocess.run(argv[:-3] + ["--config.total_steps=" + str(saved + 1), "--config.checkpoint_every=2",
                                      "--config.tensorboard=False"], capture_output=True, text=True, env=env)
  assert again.returncode == 0 and f"resumed from step {saved}" in again.stderr, again.stderr[-2000:]


def _limited(bytes_per_file):
  """A child process whose files may not grow past `bytes_per_file` (RLIMIT_FSIZE, with SIGXFSZ ignored so
  writes fail with EFBIG): a full disk, simulated without mounting one."""
  import resource

  def limit():
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (bytes_per_file, bytes_per_file))
  return limit


def test_a_full_disk_during_a_save_is_one_line_and_the_last_good_checkpoint_resumes(tmp_path):
  argv = lambda steps: [sys.executable, "-m", "fractalpre.train", "--config", "pretrain_1pfrac_vit:runlocal",
                        "--workdir", str(tmp_path / "w"), f"--config.total_steps={steps}",
                        "--config.checkpoint_every=2", "--config.tensorboard=False", "--config.optim.warmup_steps=1"]
  env = {**os.environ, "FRACTALPRE_TCMALLOC": "0"}
  # the shared compilation cache is read but not written (a new entry would hit the file-size limit too)
  no_cache_writes = {**env, "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": str(2**62)}
  assert subprocess.run(argv(4), capture_output=True, env=env).returncode == 0
  full = subprocess.run(argv(8), capture_output=True, text=True, env=no_cache_writes, preexec_fn=_limited(60_000))
  lines = [l for l in full.stderr.strip().splitlines() if l and not l.startswith(("w:", "resumed from"))]
  assert full.returncode == 1 and len(lines) == 1, full.stderr[-3000:]
  assert re.fullmatch(rf"fractalpre.train: error: no space left writing to {tmp_path / 'w'} \(.* free; or a quota "
                      r"or file-size limit\); stopped at step \d+, the last good checkpoint is step 4; free some "
                      r"space and run the same command to resume", lines[0]), lines[0]
  again = subprocess.run(argv(8), capture_output=True, text=True, env=env)
  assert again.returncode == 0 and "resumed from step 4" in again.stderr, again.stderr[-2000:]
  assert (tmp_path / "w" / "checkpoints" / "8").is_dir()


def test_a_warm_up_as_long_as_the_run_is_one_warning_line(capsys):
  from fractalpre.training import trainer
  config = tiny_config(total_steps=2)
  config.optim.warmup_steps = 2
  trainer.check_config(config)
  assert capsys.readouterr().err.splitlines() == [
      "warning: optim.warmup_steps 2 >= total_steps 2: the whole run is warm-up and the learning rate never "
      "reaches optim.lr"]
  config.optim.warmup_steps = 1
  trainer.check_config(config)
  assert capsys.readouterr().err == ""
