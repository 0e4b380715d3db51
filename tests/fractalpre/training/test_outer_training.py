"""DiLoCo-style training through the trainer: the exact special cases, the bytes each step sends, resume."""
import os
import shutil
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest

from fractalpre.training import classification, metric_writer, trainer, wire_bytes
from fractalpre.util import UsageError
from tests.fractalpre.training.test_trainer import tiny_config


def outer_config(steps, **outer_settings):
  c = tiny_config(total_steps=steps, checkpoint_every=steps)
  c.outer = ml_collections.ConfigDict(dict(workers=0, every=1, lr=1.0, momentum=0.0, comm="fp32", fragments=1))
  c.outer.update(outer_settings)
  return c


def saved(workdir, step):
  return ocp.CheckpointManager((workdir / "checkpoints").absolute(), item_names=("state", "data")).restore(
      step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]


def assert_trees_close(a, b, atol):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=0, atol=atol)


def test_one_worker_with_outer_lr_1_and_no_momentum_is_the_plain_run(tmp_path):
  """Every H = 3 steps the global parameters become the worker's (up to rounding: theta - (theta - w))."""
  classification.train_and_evaluate(outer_config(6), tmp_path / "plain", progress=False)
  classification.train_and_evaluate(outer_config(6, workers=1, every=3), tmp_path / "outer", progress=False)
  plain, diloco = saved(tmp_path / "plain", 6), saved(tmp_path / "outer", 6)
  assert_trees_close(diloco["params"], plain["params"], 1e-5)
  assert_trees_close(jax.tree.map(lambda x: x[0], diloco["outer"]["params"]), plain["params"], 1e-5)
  plain_loss = [r["loss"] for r in metric_writer.read(tmp_path / "plain")]
  np.testing.assert_allclose([r["loss"] for r in metric_writer.read(tmp_path / "outer")], plain_loss, atol=1e-5)
  # the bytes: the gradients' ring all-reduce over 8 devices (plus scalar metrics); one worker syncs with no one
  params = sum(x.size for x in jax.tree.leaves(plain["params"]))
  sent = metric_writer.read(tmp_path / "plain")[-1]["comm_bytes_per_step"]
  assert ring(8, 4 * params) <= sent <= ring(8, 4 * params) + 64
  last = metric_writer.read(tmp_path / "outer")[-1]
  assert last["comm_bytes_per_step"] >= ring(8, 4 * params)
  assert last["node_link_bytes_per_step"] < 64  # a worker of all 8 devices: nothing leaves it but metrics


def ring(n, nbytes):
  return 2 * (n - 1) / n * nbytes


def test_workers_syncing_every_step_with_sgd_are_data_parallel_sgd(tmp_path):
  """H = 1, SGD with momentum inside, outer lr 1 without momentum, fp32: the global step is the mean of the
  workers' SGD steps from one point, which is SGD on the mean gradient of the global batch."""
  sgd = {"optim.optimizer": "sgd", "optim.lr": 0.5}
  plain, diloco = outer_config(4), outer_config(4, workers=4, every=1)
  for c in (plain, diloco):
    c.update_from_flattened_dict(sgd)
  classification.train_and_evaluate(plain, tmp_path / "plain", progress=False)
  classification.train_and_evaluate(diloco, tmp_path / "outer", progress=False)
  a, b = saved(tmp_path / "plain", 4)["params"], saved(tmp_path / "outer", 4)["params"]
  assert_trees_close(b, a, 1e-5)
  losses = [[r["loss"] for r in metric_writer.read(tmp_path / run)] for run in ("plain", "outer")]
  np.testing.assert_allclose(losses[1], losses[0], atol=1e-5)
  assert abs(losses[0][-1] - losses[0][0]) > 1e-3  # the runs moved
  # the bytes: inside a worker of 2 devices every step, then the sync across 4 workers (H = 1: every step)
  params = sum(x.size for x in jax.tree.leaves(a))
  last = metric_writer.read(tmp_path / "outer")[-1]
  assert ring(2, 4 * params) + ring(4, 4 * params / 2) <= last["comm_bytes_per_step"]
  # over a node's (a worker's) link: its 2 devices each send their half of the vector's ring all-reduce
  assert ring(4, 4 * params) <= last["node_link_bytes_per_step"] <= ring(4, 4 * params) + 4 * 128


def compiled_ops(**outer_settings):
  """The collectives of the trainer's step with these outer settings, 2 workers of 4 devices."""
  config = outer_config(100, **outer_settings)
  model = classification.model_from_config(config, 16)
  state, _, step = trainer.build(config, trainer.make_mesh(), model, (1, 16, 16, 3), classification.classification_loss)
  batch = {"image": jax.ShapeDtypeStruct((16, 16, 16, 3), np.float32), "label": jax.ShapeDtypeStruct((16, 16), np.float32)}
  ops = wire_bytes.collectives(step.lower(state, batch).compile().as_text(), 8, 4)
  return ops, sum(x.size for x in jax.tree.leaves(state["params"]))


@pytest.mark.parametrize("comm,wire_bytes_per_parameter", [("fp32", 4), ("bf16", 2), ("int8", 1), ("4bit", 0.5),
                                                          ("1bit", 1 / 8)])
def test_only_sync_steps_send_across_the_workers_and_what_they_send(comm, wire_bytes_per_parameter):
  ops, params = compiled_ops(workers=2, every=10, comm=comm)
  every = [o for o in ops if o["when"] == "every"]
  sync = [o for o in ops if o["when"] == "sync"]
  assert every and all(o["axis"] == "local" for o in every)  # inside a worker only
  assert {o["axis"] for o in sync} == {"node", "local"}  # across the workers, and the gather inside one
  across = [o for o in sync if o["axis"] == "node"]
  # each of a worker's 4 devices sends a quarter of the vector across (padded to whole bytes of codes)
  share = params / 4
  if comm == "fp32":
    assert {(o["op"], o["dtype"]) for o in across} == {("all-reduce", "f32")}
    assert 4 * share <= sum(o["bytes"] for o in across) <= 4 * share + 4 * 32
  else:  # reduce-scatter by all-to-all, then all-gather: each the share once
    for op in ("all-to-all", "all-gather"):
      sent = sum(o["bytes"] for o in across if o["op"] == op)
      assert wire_bytes_per_parameter * share <= sent <= wire_bytes_per_parameter * share + 32, op
    scales = [o for o in across if o["op"] == "all-reduce"]  # one fp32 number per tensor
    assert all(o["dtype"] == "f32" for o in scales) and sum(o["bytes"] for o in scales) <= 4 * 24
  gathered = [o for o in sync if o["axis"] == "local"]  # the worker's devices put the encoded means together
  code = {"fp32": "f32", "bf16": "u16", "int8": "s8", "4bit": "u8", "1bit": "u8"}[comm]
  assert [(o["op"], o["dtype"]) for o in gathered] == [("all-gather", code)]
  assert wire_bytes_per_parameter * params <= gathered[0]["bytes"] <= wire_bytes_per_parameter * params + 4 * 128


def test_a_killed_streaming_run_resumes_bit_exact(tmp_path):
  config = lambda: outer_config(6, workers=2, every=2, fragments=2, comm="int8", lr=0.7, momentum=0.9)
  whole = tmp_path / "whole"
  classification.train_and_evaluate(config(), whole, progress=False)
  run = tmp_path / "resumed"
  c = config()
  c.checkpoint_every = 3
  classification.train_and_evaluate(c, run, progress=False)
  shutil.rmtree(run / "checkpoints" / "6")
  classification.train_and_evaluate(c, run, progress=False)  # from step 3: between two fragments' syncs
  assert metric_writer.read(run) == metric_writer.read(whole)
  a, b = saved(whole, 6), saved(run, 6)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  # the logged bytes: every step's, plus one fragment's half of the syncs' bytes on each fragment's sync:
  # fragment 0 after steps 1, 3, 5 and 6 (the last), fragment 1 after 2, 4, 6
  ops, _ = compiled_ops(workers=2, every=2, fragments=2, comm="int8")
  every = sum(wire_bytes.sent_bytes(o["op"], o["bytes"], o["group"]) for o in ops if o["when"] == "every")
  synced = sum(wire_bytes.sent_bytes(o["op"], o["bytes"], o["group"]) for o in ops if o["when"] == "sync")
  assert synced > 0 and metric_writer.read(whole)[-1]["comm_bytes_per_step"] == pytest.approx(
      every + (4 + 3) * synced / 2 / 6)
  middle = saved(run, 3)  # after step 3 fragment 0 has just synced, fragment 1 has not
  workers, theta = jax.tree.leaves(middle["outer"]["params"]), jax.tree.leaves(middle["params"])
  np.testing.assert_array_equal(workers[0][0], workers[0][1])  # just synced: both workers restart from it
  np.testing.assert_array_equal(workers[0][0], theta[0])
  assert not np.array_equal(workers[-1][0], workers[-1][1])  # one inner step since its sync
  for w, t in zip(jax.tree.leaves(a["outer"]["params"]), jax.tree.leaves(a["params"])):  # all synced at the end
    np.testing.assert_array_equal(w[0], t)
    np.testing.assert_array_equal(w[1], t)


@pytest.mark.parametrize("change,message", [
    ({"outer.every": 0}, "outer.every must be an integer >= 1, got 0"),
    ({"outer.workers": 3}, "outer.workers must divide the 8 devices into equal workers, got 3"),
    ({"outer.comm": "2bit"}, "outer.comm must be one of fp32, bf16, int8, 4bit, 1bit, got '2bit'"),
    ({"optim.optimizer": "ivon"}, "outer.workers=2 takes any inner optimizer but IVON, without lion.comm; "
                                  "got optim.optimizer=ivon"),
])
def test_bad_outer_configs_are_one_line_before_any_work(change, message):
  c = outer_config(2, workers=2)
  c.update_from_flattened_dict(change)
  with pytest.raises(UsageError) as caught:
    trainer.check_config(c)
  assert str(caught.value) == message


def test_models_the_outer_loop_cannot_take_are_one_line_before_any_data():
  c = outer_config(2, workers=2, every=500, fragments=500)
  model = classification.model_from_config(c, 16)
  leaves = len(jax.tree.leaves(jax.eval_shape(lambda: model.init(jax.random.key(0), np.zeros((1, 16, 16, 3)))["params"])))
  with pytest.raises(UsageError) as caught:
    trainer.check_model(c, model, (1, 16, 16, 3))
  assert str(caught.value) == f"outer.fragments must be at most the model's {leaves} parameter tensors, got 500"
  c = outer_config(2, workers=2)
  c.model = ml_collections.ConfigDict(dict(name="resnet18", stages=(1,)))
  with pytest.raises(UsageError, match="^outer.workers keeps no batch statistics or fp8 scales per worker; resnet18 "):
    trainer.check_model(c, classification.model_from_config(c, 16), (1, 16, 16, 3))


RUNLOCAL = ["--config", "pretrain_1pfrac_vit:runlocal", "--config.log_every=1",
            "--config.checkpoint_every=2", "--config.data.workers=0", "--config.outer.every=1",
            "--config.optim.warmup_steps=0", "--config.total_steps=1"]


def test_resuming_with_another_worker_count_is_one_line(tmp_path):
  run = lambda workers: subprocess.run([sys.executable, "-m", "fractalpre.train", *RUNLOCAL, "--workdir", str(tmp_path),
                                        f"--config.outer.workers={workers}"],
                                       capture_output=True, text=True, env={**os.environ, "FRACTALPRE_TCMALLOC": "0"})
  first = run(2)
  assert first.returncode == 0, first.stderr[-2000:]
  second = run(4)
  assert second.returncode == 2
  assert second.stderr.strip() == (f"fractalpre.train: error: --workdir {tmp_path} holds a run with another config "
                                   "or inputs (outer.workers: 2 -> 4); use a new --workdir, or --restart to move the "
                                   "old run aside and start over")
