"""Trainer: `python -m fractalpre.train --config configs/NAME.py[:arg] --workdir DIR [--config.k=v]`.

Stages, top to bottom: mesh, input, model, optimizer, sharding, update step, checkpoint/resume, evals,
loop. The step is `jax.jit` over a 1-D `data` mesh with the global batch sharded by NamedSharding and
the train state replicated (what `pmap` used to do; `jax.pmap` is a legacy wrapper since JAX 0.8).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from tqdm import tqdm

from fractalpre import augment as augmentation
from fractalpre import checkpointing, device_data, evaluate, fileio, input_pipeline, losses, metric_logging, optim
from fractalpre import transfer
from fractalpre import workdir as workdirs
from fractalpre.models import FP8_COLLECTION, get_model


class NonFiniteLoss(RuntimeError):
  pass


def make_mesh() -> jax.sharding.Mesh:
  return jax.make_mesh((jax.device_count(),), ("data",), axis_types=(jax.sharding.AxisType.Auto,))


def mup_base_width(config) -> int:
  return config.get("mup", {}).get("base_width", 0)


def model_from_config(config, num_classes: int):
  kwargs = {k: v for k, v in config.model.items() if k != "name"}
  if mup_base_width(config):
    kwargs["mup_base_width"] = mup_base_width(config)
  return get_model(config.model.name, num_classes, config.get("precision", "fp32"), **kwargs)


def init_state(config, model, tx, rng, input_shape: tuple[int, ...]):
  variables = model.init({"params": rng}, jnp.zeros(input_shape), train=False)
  params = variables["params"]
  if config.get("init_from"):
    params = transfer.merge_pretrained(params, checkpointing.load_params(config.init_from))
  # fp8 amax histories and scales live beside the parameters, outside the optimizer: each step
  # overwrites them with the values its forward/backward pass computed.
  state = {"step": jnp.zeros((), jnp.int32), "params": params, "batch_stats": variables.get("batch_stats", {}),
           "opt_state": tx.init(params)}
  if FP8_COLLECTION in variables:  # only then: checkpoints of other runs keep their layout
    state["fp8"] = variables[FP8_COLLECTION]
  return state


def _variables(state, params=None) -> dict:
  """The model's variables: parameters (default: the state's), batch stats and fp8 metadata when present."""
  variables = {"params": state["params"] if params is None else params}
  if state["batch_stats"]:
    variables["batch_stats"] = state["batch_stats"]
  if state.get("fp8"):
    variables[FP8_COLLECTION] = state["fp8"]
  return variables


def compressed_lion(config) -> bool:
  """Lion with a `lion.comm` mode: the step runs under shard_map with per-device momenta."""
  return config.optim.optimizer == "lion" and bool(config.get("lion", {}).get("comm"))


def make_optimizer(config, mesh, trainable=None, update_scales=None):
  if not compressed_lion(config):
    return optim.make(config.optim, config.total_steps, trainable, update_scales)
  from fractalpre import parallel
  if trainable is not None or update_scales is not None:
    raise ValueError("linear_probe and mup are not supported with lion.comm (compressed Lion)")
  return parallel.distributed_lion(
      optim.schedule(config.optim, config.total_steps), b1=config.optim.get("b1", 0.9),
      b2=config.optim.get("b2", 0.99), weight_decay=config.optim.get("weight_decay", 0.0),
      comm=config.lion.comm, axis_name="data", momentum_sync=config.lion.get("momentum_sync"),
      sync_pattern=config.lion.get("sync_pattern"), mesh=mesh)


def state_specs(config, state):
  """PartitionSpecs of the train state: all replicated, except compressed Lion's per-device optimizer
  state, which has a leading device axis sharded over `data`."""
  per_device = compressed_lion(config)
  return {k: jax.tree.map(lambda _: P("data") if (per_device and k == "opt_state") else P(), v)
          for k, v in state.items()}


def replicate_per_device(opt_state, n: int):
  return jax.tree.map(lambda x: jnp.broadcast_to(x, (n,) + x.shape), opt_state)


def classification_loss(logits, batch):
  """Soft-target cross-entropy, plus the batch's top-1 accuracy as a metric."""
  accuracy = jnp.mean(jnp.argmax(logits, -1) == jnp.argmax(batch["label"], -1))
  return losses.soft_cross_entropy(logits, batch["label"]), {"train_accuracy": accuracy}


def _loss_and_grads(model, state, batch, dropout_rng, task_loss, params=None):
  """Loss, metrics, parameter gradients, new batch stats and new fp8 metadata (Flax returns it as the
  "gradient" of the `_overwrite_with_gradient` collection) at `params` (default: the state's)."""
  has_bn = bool(state["batch_stats"])

  def loss_fn(params, fp8):
    variables = {**_variables(state, params), **({FP8_COLLECTION: fp8} if fp8 else {})}
    out = model.apply(variables, batch["image"], train=True, rngs={"dropout": dropout_rng},
                      mutable=["batch_stats"] if has_bn else False)
    outputs, new_vars = out if has_bn else (out, {})
    loss, metrics = task_loss(outputs, batch)
    return loss, (metrics, new_vars)

  (loss, (metrics, new_vars)), (grads, fp8) = jax.value_and_grad(loss_fn, argnums=(0, 1), has_aux=True)(
      state["params"] if params is None else params, state.get("fp8", {}))
  return loss, metrics, grads, new_vars.get("batch_stats", state["batch_stats"]), fp8


def _global_norm(tree):
  return jnp.sqrt(sum(jnp.sum(g.astype(jnp.float32) ** 2) for g in jax.tree.leaves(tree)))


def make_train_step(model, tx, rng, task_loss=classification_loss, sample=None):
  """The pure update: one optimizer step on a (globally sharded) batch. With `sample` (IVON), the
  gradient is taken at weights sampled around the mean, and the same noise goes into the update."""

  def step(state, batch):
    step_rng, sample_rng = jax.random.split(jax.random.fold_in(rng, state["step"]))
    opt_state, at = state["opt_state"], None
    if sample is not None:
      at, opt_state = sample(sample_rng, state["params"], opt_state)
    loss, metrics, grads, batch_stats, fp8 = _loss_and_grads(model, state, batch, step_rng, task_loss, at)
    updates, opt_state = tx.update(grads, opt_state, state["params"])
    params = jax.tree.map(lambda p, u: p + u, state["params"], updates)
    new_state = {"step": state["step"] + 1, "params": params, "batch_stats": batch_stats, "opt_state": opt_state,
                 **({"fp8": fp8} if "fp8" in state else {})}
    return new_state, {"loss": loss, **metrics, "grad_norm": _global_norm(grads)}

  return step


def make_sharded_train_step(model, tx, rng, mesh, specs, task_loss=classification_loss):
  """Compressed Lion's update under `jax.shard_map`: each device takes the gradient of its own batch
  shard and keeps its own momentum; `tx` does the (sign-compressed) communication."""

  def local(state, batch):
    device_rng = jax.random.fold_in(jax.random.fold_in(rng, state["step"]), jax.lax.axis_index("data"))
    loss, metrics, grads, batch_stats, fp8 = _loss_and_grads(model, state, batch, device_rng, task_loss)
    opt_state = jax.tree.map(lambda x: x[0], state["opt_state"])
    updates, opt_state = tx.update(grads, opt_state, state["params"])
    params = jax.tree.map(lambda p, u: p + u, state["params"], updates)
    new_state = {"step": state["step"] + 1, "params": params,
                 "batch_stats": jax.lax.pmean(batch_stats, "data"),
                 **({"fp8": jax.lax.pmax(fp8, "data")} if "fp8" in state else {}),  # amax over devices
                 "opt_state": jax.tree.map(lambda x: x[None], opt_state)}
    # grad_norm: the mean of the devices' local gradient norms (averaging the gradients themselves
    # would put an fp32 all-reduce back on the wire).
    metrics = {"loss": loss, **metrics, "grad_norm": _global_norm(grads)}
    return new_state, jax.lax.pmean(metrics, "data")

  return jax.shard_map(local, mesh=mesh, in_specs=(specs, P("data")), out_specs=(specs, P()), check_vma=False)


def make_eval_fn(model):
  def logits_fn(state, images):
    return model.apply(_variables(state), images, train=False)
  return logits_fn


def evaluate_source(logits_fn, states, source, image_size, global_batch, batch_sharding) -> dict:
  """top-1 / NLL / ECE of one train state, or of the average of several states' predicted probabilities
  (Bayesian model averaging over weight samples) when `states` is a list."""
  states = states if isinstance(states, list) else [states]
  all_logits, all_labels = [], []
  for batch in input_pipeline.eval_batches(source, image_size, global_batch):
    images = jax.device_put(batch["image"], batch_sharding)  # every host built the same whole batch
    log_probs = [jax.nn.log_softmax(logits_fn(s, images)) for s in states]
    logits = np.asarray(jax.device_get(jax.nn.logsumexp(jnp.stack(log_probs), axis=0) - np.log(len(states))))
    all_logits.append(logits[batch["mask"]])
    all_labels.append(batch["label"][batch["mask"]])
  return evaluate.classification_metrics(np.concatenate(all_logits), np.concatenate(all_labels))


def build(config, mesh, model, input_shape: tuple[int, ...], task_loss=classification_loss, trainable=None):
  """(state placed on the mesh, state shardings, jitted train step) for a model, the shape of one input
  (with a batch axis of 1) and the task's loss `task_loss(outputs, batch) -> (loss, metrics)`."""
  scales = None
  if mup_base_width(config):
    from fractalpre import mup
    scales = mup.scales_for(model, mup_base_width(config), input_shape)
  with fileio.usage_errors():
    tx = make_optimizer(config, mesh, trainable, scales)
  init_rng, step_rng = jax.random.split(jax.random.key(config.seed))
  state = init_state(config, model, tx, init_rng, input_shape)
  if compressed_lion(config):
    state["opt_state"] = replicate_per_device(state["opt_state"], mesh.shape["data"])
  specs = state_specs(config, state)
  shardings = jax.tree.map(lambda spec: NamedSharding(mesh, spec), specs)
  step_fn = make_sharded_train_step(model, tx, step_rng, mesh, specs, task_loss) if compressed_lion(config) \
      else make_train_step(model, tx, step_rng, task_loss, optim.sampler(config.optim))
  train_step = jax.jit(step_fn, in_shardings=(shardings, NamedSharding(mesh, P("data"))),
                       out_shardings=(shardings, NamedSharding(mesh, P())), donate_argnums=0)
  return jax.device_put(state, shardings), shardings, train_step


def device_input_step(train_step, input_fn, batch_sharding):
  """`step(state, inputs)`: the device pipeline's `input_fn(step, inputs) -> batch`, compiled as its own
  program, then the train step on that batch. Both are dispatched without waiting. (Compiled into the
  train step, the same augmentation cost a ViT-Ti/16 step on CPU about 5x its own time.)"""
  make_batch = jax.jit(input_fn, out_shardings=batch_sharding)
  return lambda state, inputs: train_step(state, make_batch(state["step"], inputs))


def check_batch(config) -> None:
  if config.batch_size % jax.device_count():
    raise fileio.UsageError(f"batch_size must be divisible by the {jax.device_count()} devices, "
                            f"got {config.batch_size}")


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | os.PathLike, progress: bool = True,
                       restart: bool = False) -> dict:
  """Trains a classifier (resuming from the workdir's newest good checkpoint); returns the final metrics."""
  mesh = make_mesh()
  batch_sharding = NamedSharding(mesh, P("data"))
  check_batch(config)

  with fileio.usage_errors():  # reading the config: a ValueError here is a bad setting
    source = input_pipeline.get_source(config.data, "train")
    if config.optim.optimizer == "ivon" and not config.optim.get("ess"):  # 0: the training set size
      config = ml_collections.ConfigDict(config.to_dict())
      config.optim.ess = float(len(source))
    eval_source = input_pipeline.get_source(config.data, "test") if config.get("eval_every") else None
    trainable = (lambda path: path.startswith("['head']")) if config.get("linear_probe") else None
    model = model_from_config(config, source.num_classes)
    on = augment_on(config.data)
  if on == "device":
    data = device_data.make(source, mesh, config.batch_size, config.seed, config.data)
    augment = augmentation.DeviceAugment.from_config(config.data.augment, config.image_size, source.num_classes)
    key = augment_key(config.seed)

    def input_fn(step, inputs):
      images, labels = data.batch(key, step, inputs)
      return augment(key, step, images, labels, whole=NamedSharding(mesh, P()))
  else:
    data_cfg = ml_collections.ConfigDict({**config.data.to_dict(), "image_size": config.image_size})
    data = device_data.HostBatches(input_pipeline.train_iterator(source, data_cfg, config.batch_size, config.seed),
                                   mesh)
    input_fn = None
  state, shardings, train_step = build(config, mesh, model, (1, config.image_size, config.image_size, 3),
                                       trainable=trainable)
  if input_fn is not None:
    train_step = device_input_step(train_step, input_fn, batch_sharding)
  logits_fn = jax.jit(make_eval_fn(model), in_shardings=(shardings, batch_sharding),
                      out_shardings=NamedSharding(mesh, P()))

  def evaluate(state):
    scores = evaluate_source(logits_fn, state, eval_source, config.image_size, config.batch_size, batch_sharding)
    sample, n = optim.sampler(config.optim), config.get("eval_bma_samples", 0)
    if sample is not None and n:
      keys = jax.random.split(jax.random.fold_in(jax.random.key(config.seed), 2**31 - 1), n)
      samples = [{**state, "params": sample(k, state["params"], state["opt_state"])[0]} for k in keys]
      bma = evaluate_source(logits_fn, samples, eval_source, config.image_size, config.batch_size, batch_sharding)
      scores.update({f"bma_{k}": v for k, v in bma.items()})
    return scores

  return fit(config, workdir, state, train_step, data, evaluate if eval_source is not None else None, progress,
             restart)


AUGMENT_ON = ("device", "host")


def augment_on(data_cfg) -> str:
  """Where a data config's augmentation runs: `data.augment_on`, by default on the device, except for
  TFDS sources, whose images need not share one size (their host path resizes them)."""
  on = data_cfg.get("augment_on") or ("host" if data_cfg.kind == "tfds" else "device")
  if on not in AUGMENT_ON:
    raise ValueError(f"data.augment_on must be one of {AUGMENT_ON}, got {on!r}")
  return on


def augment_key(seed: int) -> jax.Array:
  """The device pipeline's key: apart from the model's init and dropout keys of the same seed."""
  return jax.random.fold_in(jax.random.key(seed), 0x6175)


def fit(config, workdir, state, train_step, data, evaluate=None, progress: bool = True,
        restart: bool = False) -> dict:
  """The loop every task shares: claim the workdir (locked; refused if it holds a run of another config
  unless `restart`), resume from the newest good checkpoint, step, log one metrics line per logged step,
  evaluate every `eval_every` steps (`evaluate(state) -> {name: value}`), checkpoint the state with the
  data's position, stop on a non-finite loss. `data` hands each step its inputs (`host_batch()`) and has
  a checkpointable `get_state`/`set_state` (fractalpre.device_data). Returns the last logged values."""
  workdir = Path(workdir)
  lock = workdirs.claim(workdir, config, restart)
  try:
    return _loop(config, workdir, state, train_step, data, evaluate, progress)
  finally:
    if lock is not None:
      lock.release()


@jax.jit
def _still_finite(finite, loss):
  return finite & jnp.isfinite(loss)


def _loop(config, workdir, state, train_step, data, evaluate, progress) -> dict:
  """Asynchronous: between log, eval and checkpoint steps nothing is fetched from the devices, so the
  host dispatches ahead while they compute, and the next inputs are on their way during each step."""
  ckpt = checkpointing.Checkpoints(workdir, config.get("keep_checkpoints", 3))
  writer = metric_logging.MetricWriter(workdir, tensorboard=config.get("tensorboard", True))
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)
  restored = ckpt.restore_latest(abstract)
  start = 0
  if restored is not None:
    start, state, data_state = restored
    data.set_state(data_state)
  writer.truncate(start)  # a fresh start (no loadable checkpoint) drops the old records too
  if restored is not None and jax.process_index() == 0:
    print(f"resumed from step {start} in {workdir / 'checkpoints'}", file=sys.stderr)

  final = {}  # the last logged value of every metric, those of earlier sessions of this run included
  for record in writer.read():
    final.update({k: v for k, v in record.items() if k != "step"})
  unit = config.get("progress_unit", "img")
  bar = tqdm(total=config.total_steps * config.batch_size, initial=start * config.batch_size, unit=unit,
             unit_scale=True, disable=not progress or jax.process_index() != 0, desc=workdir.name)
  finite, checked = jnp.bool_(True), start  # no non-finite loss in steps checked+1 .. now

  def check_finite(step):
    nonlocal checked
    if not bool(finite):
      where = f"at step {step}" if checked + 1 == step else f"between steps {checked + 1} and {step}"
      raise NonFiniteLoss(f"the loss became non-finite {where}; stopping. The last good checkpoint is kept in "
                          f"{workdir / 'checkpoints'} (lower optim.lr or set optim.grad_clip_norm)")
    checked = step

  try:
    inputs = data.host_batch() if start < config.total_steps else None
    for step in range(start + 1, config.total_steps + 1):
      state, metrics = train_step(state, inputs)
      finite = _still_finite(finite, metrics["loss"])
      bar.update(config.batch_size)
      logged = step % config.log_every == 0 or step == config.total_steps
      evaluated = evaluate is not None and (step % config.eval_every == 0 or step == config.total_steps)
      saved = step % config.checkpoint_every == 0 or step == config.total_steps
      data_state = data.get_state() if saved else None  # before the next inputs are drawn
      if step < config.total_steps:
        inputs = data.host_batch()  # on its way while the step runs
      record = {}  # one JSON line per logged step, always with `loss`
      if logged or evaluated or saved:
        check_finite(step)
      if logged:
        record = {k: float(v) for k, v in jax.device_get(metrics).items()}
        record["lr"] = float(optim.schedule(config.optim, config.total_steps)(step - 1))
        bar.set_postfix(loss=f"{record['loss']:.4f}")
      if evaluated:
        loss = record["loss"] if logged else float(jax.device_get(metrics["loss"]))
        record = {"loss": loss, **record, **{f"eval_{k}": v for k, v in evaluate(state).items()}}
      if record:
        writer.write(step, record)
        final.update(record)
      if saved:
        ckpt.save(step, state, data_state)
  finally:
    bar.close()
    ckpt.wait()
    ckpt.close()
    writer.close()
  return final


def load_config(spec: str) -> ml_collections.ConfigDict:
  """'configs/x.py:arg' -> get_config(arg) of that file; a missing file or a bad argument is a UsageError."""
  import importlib.util
  path, _, arg = spec.partition(":")
  if not Path(path).is_file():
    raise fileio.UsageError(f"--config {path} is not a file")
  module_spec = importlib.util.spec_from_file_location("fractalpre_config", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  with fileio.usage_errors(f"--config {spec}: "):
    return module.get_config(arg or None)


def _config_spec(argv: list[str]) -> str | None:
  spec = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
  if spec is None and "--config" in argv[:-1]:
    spec = argv[argv.index("--config") + 1]
  return spec


def unknown_override(argv: list[str], prog: str = "fractalpre.train") -> str | None:
  """A one-line error for the first `--config.key` that the config lacks, naming near matches."""
  import difflib
  spec = _config_spec(argv)
  if spec is None:
    return None
  keys = set(flatten_keys(load_config(spec)))
  for a in argv:
    if a.startswith("--config."):
      key = a[len("--config."):].split("=", 1)[0]
      if key not in keys:
        near = difflib.get_close_matches(key, sorted(keys), n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(near)}?" if near else f"; known keys: {', '.join(sorted(keys))}"
        return f"{prog}: error: unknown config key {key!r}{hint}"
  return None


def flatten_keys(config, prefix=""):
  for k, v in config.items():
    if isinstance(v, ml_collections.ConfigDict):
      yield from flatten_keys(v, f"{prefix}{k}.")
    else:
      yield f"{prefix}{k}"


def _parse_flags(argv: list[str], prog: str):
  """absl's flags parsed from argv, or one line and exit 2 for a bad flag, config, argument or value."""
  from absl import flags
  try:
    error = unknown_override(argv[1:], prog)
    if error:
      raise SystemExit(fileio.fail(error))
    flags.FLAGS(argv)
  except fileio.UsageError as e:
    raise SystemExit(fileio.fail(f"{prog}: error: {e}")) from None
  except flags.Error as e:
    raise SystemExit(fileio.fail(f"{prog}: error: {str(e).splitlines()[0]}")) from None
  return flags.FLAGS


def run(train_fn=train_and_evaluate, prog: str = "fractalpre.train", argv: list[str] | None = None):
  """The command line of a trainer: `--config FILE[:arg] --workdir DIR [--restart] [--distributed]
  [--config.k=v]`. A user's mistake (bad flag, config, value, folder) is one line and exit 2; a diverged
  run is one line and exit 1; anything else is a bug and keeps its traceback."""
  from absl import flags
  from absl import logging as absl_logging
  from ml_collections import config_flags
  config_flags.DEFINE_config_file("config", None, "config file, e.g. configs/pretrain_1pfrac_vit.py:runlocal",
                                  lock_config=True)
  flags.DEFINE_string("workdir", None, "checkpoints, metrics.jsonl, config.json and TensorBoard events go here")
  flags.DEFINE_bool("restart", False, "the workdir holds a run of another config: move it to "
                    "WORKDIR/replaced_runs/N and start over")
  flags.DEFINE_bool("distributed", False, "call jax.distributed.initialize() (multi-host GPU / TPU pods)")
  flags.mark_flags_as_required(["config", "workdir"])
  FLAGS = _parse_flags(sys.argv if argv is None else argv, prog)
  absl_logging.use_absl_handler()
  absl_logging.set_verbosity(absl_logging.WARNING)  # orbax logs every save at INFO
  if FLAGS.distributed:
    jax.distributed.initialize()
  try:
    metrics = train_fn(FLAGS.config, FLAGS.workdir, restart=FLAGS.restart)
  except fileio.UsageError as e:
    raise SystemExit(fileio.fail(f"{prog}: error: {e}")) from None
  except NonFiniteLoss as e:
    print(f"{prog}: error: {e}", file=sys.stderr)
    raise SystemExit(1) from None
  if jax.process_index() == 0:
    print(" ".join(f"{k}={v:.4f}" if v is not None else f"{k}=null" for k, v in metrics.items()))


if __name__ == "__main__":
  run()
