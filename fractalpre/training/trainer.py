"""The generic trainer: train state, the update step, and the loop with checkpoints and metrics.

Stages, top to bottom: mesh, model state, optimizer, sharding, update step, checkpoint/resume, loop. The
step is `jax.jit` over a 1-D `data` mesh with the global batch sharded by NamedSharding and the train
state replicated (what `pmap` used to do; `jax.pmap` is a legacy wrapper since JAX 0.8); compressed Lion
runs the same step body under `jax.shard_map`. Tasks (classification, superres) bring a model, a loss,
their data and an evaluation, and call `build` and `fit`.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from tqdm import tqdm

from fractalpre import optim, util
from fractalpre.models import FP8_COLLECTION
from fractalpre.optim import lion, outer
from fractalpre.training import checkpoints, init_from, metric_writer, outer_step, wire_bytes
from fractalpre.training import workdir_claim


class NonFiniteLoss(RuntimeError):
  """The loss became NaN or infinite: the run stops (the command line: one line, exit 1)."""


class Interrupted(Exception):
  """Ctrl-C stopped the run after the pending saves finished (the command line: one line, exit 130)."""


class Preempted(Exception):
  """SIGTERM (a scheduler's preemption notice): the run saved a checkpoint at the step every process agreed
  on and stopped (the command line: one line, exit 143)."""


# How a command line or script ends on each (util.one_line_exits): one line, with this exit status
STOPS = ((NonFiniteLoss, 1), (Interrupted, 130), (Preempted, 143))


class OutOfSpace(RuntimeError):
  """The disk (or a quota, or a file-size limit) ran out while saving: the command line says so in one line,
  naming the folder, its free space and the last good checkpoint; exit 1."""


def make_mesh() -> jax.sharding.Mesh:
  return jax.make_mesh((jax.device_count(),), ("data",), axis_types=(jax.sharding.AxisType.Auto,))


def mup_base_width(config) -> int:
  return config.get("mup", {}).get("base_width", 0)


def init_state(config, model, tx, rng, input_shape: tuple[int, ...]):
  variables = model.init({"params": rng}, jnp.zeros(input_shape), train=False)
  params = variables["params"]
  if config.get("init_from"):
    source = f"init_from {config.init_from} ({init_from.checkpoint_model(config.init_from)})"
    params = init_from.merge_pretrained(params, checkpoints.load_state(config.init_from)["params"],
                                        config.model.name, source)
  # fp8 amax histories and scales live beside the parameters, outside the optimizer: each step
  # overwrites them with the values its forward/backward pass computed.
  state = {"step": jnp.zeros((), jnp.int32), "params": params, "batch_stats": variables.get("batch_stats", {}),
           "opt_state": tx.init(params)}
  if FP8_COLLECTION in variables:  # only then: checkpoints of other runs keep their layout
    state["fp8"] = variables[FP8_COLLECTION]
  return state


def model_variables(state, params=None) -> dict:
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


def lion_transport(config, mesh):
  """Compressed Lion's transport on the step's mesh (flat `data`, or `node` x `local`), or None."""
  if not compressed_lion(config):
    return None
  cfg = config.lion
  step_mesh = lion.step_mesh(mesh.devices, cfg.get("hierarchy", "flat") or "flat", cfg.get("local_devices", 0))
  return step_mesh, lion.transport(cfg.comm, step_mesh, cfg.get("momentum_sync"), cfg.get("sync_pattern"))


def state_specs(state, transport=None):
  """PartitionSpecs of the train state: all replicated, except compressed Lion's per-device optimizer
  state, which has a leading device axis sharded over the transport's axes."""
  return {k: jax.tree.map(lambda _: P(transport.axes) if (transport and k == "opt_state") else P(), v)
          for k, v in state.items()}


def _loss_and_grads(model, state, batch, dropout_rng, task_loss, params=None):
  """Loss, metrics, parameter gradients, new batch stats and new fp8 metadata (Flax returns it as the
  "gradient" of the `_overwrite_with_gradient` collection) at `params` (default: the state's)."""
  has_bn = bool(state["batch_stats"])

  def loss_fn(params, fp8):
    variables = {**model_variables(state, params), **({FP8_COLLECTION: fp8} if fp8 else {})}
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


def make_train_step(model, tx, task_loss, sample=None, axis: str | tuple[str, ...] | None = None,
                    reduce_axis: str | tuple[str, ...] | None = None):
  """The pure update `step(state, batch, rngs)`, one optimizer step; the one body of every trainer's step.
  `rngs["step"]` is the run's key for dropout and IVON's noise, an argument rather than a constant of the
  program, so that runs of other seeds reuse its compilation (JAX's persistent cache). On a globally sharded
  batch (`axis` None) the state is replicated. Under `jax.shard_map` over `axis` (compressed Lion's or the
  outer loop's mesh axes), each device takes the gradient of its own batch shard and keeps its own optimizer
  state (a leading axis of length 1 here), `tx` does the communication, batch stats are averaged, fp8 amax
  histories take their maximum and metrics their mean over `reduce_axis` (default: `axis`; the outer loop's
  workers keep their own) (grad_norm: the mean of the local norms, since averaging the gradients would put an
  fp32 all-reduce back on the wire). With `sample` (IVON), the gradient is taken at weights sampled around
  the mean, and the same noise goes into the update."""
  reduce_axis = axis if reduce_axis is None else reduce_axis

  def step(state, batch, rngs):
    step_rng = jax.random.fold_in(rngs["step"], state["step"])
    if axis is not None:
      step_rng = jax.random.fold_in(step_rng, jax.lax.axis_index(axis))
    step_rng, sample_rng = jax.random.split(step_rng)
    opt_state = state["opt_state"] if axis is None else jax.tree.map(lambda x: x[0], state["opt_state"])
    at = None
    if sample is not None:
      at, opt_state = sample(sample_rng, state["params"], opt_state)
    loss, metrics, grads, batch_stats, fp8 = _loss_and_grads(model, state, batch, step_rng, task_loss, at)
    updates, opt_state = tx.update(grads, opt_state, state["params"])
    params = jax.tree.map(lambda p, u: p + u, state["params"], updates)
    metrics = {"loss": loss, **metrics, "grad_norm": _global_norm(grads)}
    if axis is not None:
      batch_stats, metrics = jax.lax.pmean((batch_stats, metrics), reduce_axis)
      fp8 = jax.lax.pmax(fp8, reduce_axis)
      opt_state = jax.tree.map(lambda x: x[None], opt_state)
    new_state = {"step": state["step"] + 1, "params": params, "batch_stats": batch_stats, "opt_state": opt_state,
                 **({"fp8": fp8} if "fp8" in state else {})}
    return new_state, metrics

  return step


def outer_settings(config) -> outer.Settings | None:
  """The checked `outer` config (DiLoCo-style training), or None when it is off."""
  return outer.settings(config.get("outer"), jax.device_count())


def build(config, mesh, model, input_shape: tuple[int, ...], task_loss):
  """(state placed on the mesh, state shardings, train step) for a model, the shape of one input (with a
  batch axis of 1) and the task's loss `task_loss(outputs, batch) -> (loss, metrics)`. Three layouts: the
  state replicated and the batch sharded (jit), compressed Lion's per-device optimizer state, or the outer
  loop's workers (both under `jax.shard_map`)."""
  scales = None
  if mup_base_width(config):
    from fractalpre.optim import mup
    scales = mup.scales_for(model, mup_base_width(config), input_shape)
  check_model(config, model, input_shape)
  with util.usage_errors():
    settings = outer_settings(config)
    step_mesh, transport = lion_transport(config, mesh) or (mesh, None)
    tx = optim.make(config.optim, config.total_steps, scales, transport)
  init_rng, step_rng = jax.random.split(jax.random.key(config.seed))
  rngs = {"step": step_rng}
  state = init_state(config, model, tx if settings is None else outer_inner(tx), init_rng, input_shape)
  if settings is not None:
    outer_tx = outer.optimizer(settings)
    state = outer_step.add_state(state, settings, outer_tx)
    step_mesh = outer_step.step_mesh(mesh.devices, settings.workers)
    axes = (outer.AXIS, outer_step.INNER_AXIS)
    specs = outer_step.state_specs(state)
    local = mesh.size // settings.workers
    body = outer_step.make_step(make_train_step(model, outer_inner(tx), task_loss, axis=axes,
                                                reduce_axis=outer_step.INNER_AXIS), settings, outer_tx, local,
                                config.total_steps)
    rngs["outer"] = jax.random.fold_in(jax.random.key(config.seed), 1)
    batch_spec, metric_spec = P(axes), P(outer.AXIS)
    wire = dict(sync_share=sync_share(config), conditionals=settings.fragments, local=local)
  else:
    batch_spec = P(transport.axes) if transport else P("data")
    metric_spec = P()
    local = transport.local_size if transport and transport.local_axis else 0
    wire = dict(sync_share=sync_share(config), conditionals=1,
                local=local or (jax.local_device_count() if jax.process_count() > 1 else 0))
    if transport:
      state["opt_state"] = outer_step.stacked(state["opt_state"], mesh.size)
    specs = state_specs(state, transport)
    if transport:
      body = make_train_step(model, tx, task_loss, axis=transport.axes)
    else:
      body = make_train_step(model, tx, task_loss, optim.sampler(config.optim))
  shardings = jax.tree.map(lambda spec: NamedSharding(step_mesh, spec), specs)
  keyed = lambda state, batch, data: body(state, batch, {k: jax.random.wrap_key_data(v) for k, v in data.items()})
  if settings is not None or transport:
    keyed = jax.shard_map(keyed, mesh=step_mesh, in_specs=(specs, batch_spec, jax.tree.map(lambda _: P(), rngs)),
                          out_specs=(specs, metric_spec), check_vma=False)
  replicated = NamedSharding(step_mesh, P())
  jitted = jax.jit(keyed, in_shardings=(shardings, NamedSharding(step_mesh, batch_spec), replicated),
                   out_shardings=(shardings, NamedSharding(step_mesh, metric_spec)), donate_argnums=0)
  # the keys' raw data, replicated on every process's devices (a key array cannot be put there)
  data = {k: np.asarray(jax.random.key_data(v)) for k, v in rngs.items()}
  data = {k: jax.make_array_from_callback(v.shape, replicated, lambda index, v=v: v[index]) for k, v in data.items()}
  return jax.device_put(state, shardings), shardings, Step(jitted, data, **wire)


def check_model(config, model, input_shape: tuple[int, ...]) -> None:
  """What the config asks of the model, refused in one line before any data is loaded: the outer loop's
  workers keep no batch statistics or fp8 scales, and split at most one fragment per parameter tensor."""
  with util.usage_errors():
    settings = outer_settings(config)
  if settings is None:
    return
  variables = jax.eval_shape(lambda: model.init({"params": jax.random.key(0)}, jnp.zeros(input_shape), train=False))
  if variables.get("batch_stats") or FP8_COLLECTION in variables:
    raise util.UsageError(f"outer.workers keeps no batch statistics or fp8 scales per worker; "
                          f"{config.model.name} with precision {config.get('precision', 'fp32')!r} has them: use "
                          "a ViT in fp32 or bf16")
  with util.usage_errors():
    outer.fragment_leaves([x.size for x in jax.tree.leaves(variables["params"])], settings.fragments)


def outer_inner(tx):
  """A worker's inner optimizer: the gradients averaged over the worker's own devices first."""
  return optax.chain(lion.mean_gradients((outer_step.INNER_AXIS,)), tx)


def sync_share(config) -> float:
  """The fraction of the run's steps that sync: compressed Lion's momentum averages, or the outer loop's
  fragment syncs (one fragment's sync a step, on its `wire_bytes.step_bytes` sync step)."""
  settings = outer_settings(config)
  if settings is not None:
    return outer.sync_share(settings, config.total_steps)
  if not compressed_lion(config):
    return 0.0
  return len(lion.momentum_sync_steps(config.lion.get("momentum_sync"), config.total_steps)) / config.total_steps


class Step:
  """The jitted train step, compiled at its first call for the state and batch it is given; from then on
  `comm_metrics` holds the mean bytes a device sends per step (`comm_bytes_per_step`) and, where the layout
  has nodes of `local` devices (an outer worker, compressed Lion's node, a process), the mean bytes over a
  node's link (`node_link_bytes_per_step`), read from that compiled program (`wire_bytes`; `sync_share`:
  the fraction of steps that sync, one of `conditionals` conditionals sending on each); empty on one
  device. `rngs`: the run's keys (their raw data), passed to every call."""

  def __init__(self, jitted, rngs, sync_share: float, conditionals: int, local: int):
    self.jitted, self.rngs = jitted, rngs
    self.sync_share, self.conditionals, self.local = sync_share, conditionals, local
    self.compiled, self.comm_metrics = None, {}

  def __call__(self, state, batch):
    if self.compiled is None:
      self.compiled = self.lower(state, batch).compile()
      if jax.device_count() > 1:
        ops = wire_bytes.collectives(self.compiled.as_text(), jax.device_count(), self.local)
        row = wire_bytes.step_bytes(ops, self.conditionals)
        self.comm_metrics = {"comm_bytes_per_step": wire_bytes.per_step(row, self.sync_share)}
        if self.local:
          self.comm_metrics["node_link_bytes_per_step"] = wire_bytes.node_link(row, self.sync_share, self.local)
    return self.compiled(state, batch, self.rngs)

  def lower(self, state, batch):
    return self.jitted.lower(state, batch, self.rngs)


class DeviceInputStep:
  """`step(state, inputs)`: the device pipeline's `input_fn(key, step, inputs) -> batch`, compiled as its
  own program (`key` an argument, so that other seeds reuse it), then the train step on that batch. Both are
  dispatched without waiting. (Compiled into the train step, the same augmentation cost a ViT-Ti/16 step on
  CPU about 5x its own time.)"""

  def __init__(self, train_step, input_fn, batch_sharding, key):
    self.train_step, self.key = train_step, key
    self.make_batch = jax.jit(input_fn, out_shardings=batch_sharding)

  def __call__(self, state, inputs):
    return self.train_step(state, self.make_batch(self.key, state["step"], inputs))

  @property
  def comm_metrics(self):
    return self.train_step.comm_metrics


def check_config(config) -> None:
  """The loop's settings, refused in one line naming the key, the value and what is allowed, before any
  work: a zero interval would divide by zero after compiling, and keep_checkpoints=0 would delete them all."""
  at_least = {"total_steps": 1, "batch_size": 1, "log_every": 1, "checkpoint_every": 1, "keep_checkpoints": 1,
              "eval_every": 0}
  for key, low in at_least.items():
    value = config.get(key, low)
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
      raise util.UsageError(f"{key} must be an integer >= {low}, got {value!r}")
  if config.batch_size % jax.device_count():
    raise util.UsageError(f"batch_size must be divisible by the {jax.device_count()} devices, "
                          f"got {config.batch_size}")
  warmup = config.optim.get("warmup_steps", 0)
  if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
    raise util.UsageError(f"optim.warmup_steps must be an integer >= 0, got {warmup!r}")
  if warmup >= config.total_steps > 1 and jax.process_index() == 0:
    print(f"warning: optim.warmup_steps {warmup} >= total_steps {config.total_steps}: the whole run is warm-up "
          f"and the learning rate never reaches optim.lr", file=sys.stderr, flush=True)
  drop_path = config.get("model", {}).get("drop_path")
  if drop_path is not None and not (isinstance(drop_path, (int, float)) and 0 <= drop_path < 1):
    raise util.UsageError(f"model.drop_path is a probability of dropping a residual branch, in [0, 1); got "
                          f"{drop_path!r}")
  with util.usage_errors():
    settings = outer_settings(config)
  if settings is not None and (compressed_lion(config) or config.optim.optimizer == "ivon"):
    what = f"lion.comm={config.lion.comm}" if compressed_lion(config) else "optim.optimizer=ivon"
    raise util.UsageError(f"outer.workers={settings.workers} takes any inner optimizer but IVON, without "
                          f"lion.comm; got {what}")
  set_lion = [f"lion.{k}={v}" for k, v in (config.get("lion") or {}).items() if v and (k, v) != ("hierarchy", "flat")]
  if set_lion and config.optim.optimizer != "lion":
    raise util.UsageError(f"{', '.join(set_lion)} take effect only with optim.optimizer=lion, got "
                          f"{config.optim.optimizer!r}; set --config.optim.optimizer=lion or leave them unset")


def fit(config, workdir, state, train_step, data, evaluate=None, progress: bool = True,
        restart: bool = False, samples=None, harmless: tuple[str, ...] = ()) -> dict:
  """The loop every task shares: claim the workdir (locked; refused if it holds a run of another config
  unless `restart`), resume from the newest good checkpoint, step, log one metrics line per logged step,
  evaluate every `eval_every` steps (`evaluate(state) -> {name: value}`), checkpoint the state with the
  data's position, stop on a non-finite loss. `data` hands each step its inputs (`host_batch()`) and has
  a checkpointable `get_state`/`set_state` (fractalpre.data.device_pipeline). `samples() -> uint8 (H, W, 3)`: an
  image of training samples, logged at the first step of a fresh run. `harmless`: the task's config keys a
  resumed run may change (see `workdir_claim.claim`). Returns the last logged values."""
  workdir = Path(workdir)
  lock = workdir_claim.claim(workdir, config, restart, harmless)
  try:
    with checkpoints.quiet_write_failures():
      return _loop(config, workdir, state, train_step, data, evaluate, progress, samples)
  finally:
    if lock is not None:
      lock.release()


def finished_result(config, workdir, restart: bool = False, harmless: tuple[str, ...] = ()) -> dict | None:
  """The last logged values of a finished run in WORKDIR made from what this run would be made from (the
  claim's fingerprint check, which refuses any difference as for a resume), reused without building the
  model; None when there is no finished run to reuse. One-process jobs only: the others resume as usual."""
  workdir = Path(workdir)
  if jax.process_count() > 1 or not workdir_claim.finished(workdir, config):
    return None  # the usual start (and its one claim): no second digest of the inputs for a run to resume
  lock = workdir_claim.claim(workdir, config, restart, harmless)
  try:
    if not (workdir_claim.finished(workdir, config)
            and (workdir / "checkpoints" / str(config.total_steps)).is_dir()
            and checkpoints.restores(workdir, config.total_steps)):
      return None
    return metric_writer.last_values(metric_writer.read(workdir))
  finally:
    lock.release()


class _StopRequest:
  """Signals during the loop, turned into a stop at a step boundary so that no library is interrupted
  half-way (orbax's writer can deadlock on a KeyboardInterrupt raised inside it).

  Ctrl-C (SIGINT) stops after the current step (in a multi-process job it counts as SIGTERM, so that all
  processes stop at one step); a second one interrupts at once. SIGTERM (preemption)
  saves a checkpoint and stops: in a one-process run at the next step; in a multi-process job at the step
  all processes agree on through JAX's preemption sync point (JAX owns SIGTERM there, and every process
  asks at every step). Only the main thread can own handlers; elsewhere nothing changes."""

  def __init__(self):
    self.interrupted = self.terminated = False
    self.previous = {}
    self.multi = jax.process_count() > 1

  def _interrupt(self, signum, frame):
    signal.signal(signal.SIGINT, self.previous[signal.SIGINT])  # a second Ctrl-C: the default KeyboardInterrupt
    if self.multi:  # processes stopping at different steps would wait for each other forever: agree first
      os.kill(os.getpid(), signal.SIGTERM)
    else:
      self.interrupted = True

  def _terminate(self, signum, frame):
    self.terminated = True

  def preempted_at(self, step: int) -> bool:
    """Whether this step is where a preempted job saves and stops (every process gets the same answer)."""
    if self.multi:
      from jax.experimental import multihost_utils
      return multihost_utils.reached_preemption_sync_point(step)
    return self.terminated

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      self.previous[signal.SIGINT] = signal.signal(signal.SIGINT, self._interrupt)
      if not self.multi:
        self.previous[signal.SIGTERM] = signal.signal(signal.SIGTERM, self._terminate)
    return self

  def __exit__(self, *exc):
    for signum, handler in self.previous.items():
      signal.signal(signum, handler)
    self.previous = {}


@jax.jit
def _still_finite(finite, loss):
  """Elementwise, so that the outer loop's per-worker losses are checked without a step's collective."""
  return finite & jnp.isfinite(loss)


@jax.jit
def scalar_metrics(tree):
  """A step's metrics as scalars: the outer loop's per-worker values averaged (the others are scalars)."""
  return jax.tree.map(jnp.mean, tree)


def _loop(config, workdir, state, train_step, data, evaluate, progress, samples) -> dict:
  """Asynchronous: between log, eval and checkpoint steps nothing is fetched from the devices, so the
  host dispatches ahead while they compute, and the next inputs are on their way during each step."""
  ckpt = checkpoints.Checkpoints(workdir, config.get("keep_checkpoints", 3))
  writer = metric_writer.MetricWriter(workdir, tensorboard=config.get("tensorboard", True),
                                       wandb=config.get("wandb"), config=config.to_dict())
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)
  restored = ckpt.restore_latest(abstract)
  start = 0
  if restored is not None:
    start, state, data_state = restored
    data.set_state(data_state)
  writer.truncate(start)  # a fresh start (no loadable checkpoint) drops the old records too
  if start == 0 and samples is not None and (writer.tb or writer.wandb):
    writer.write_image(1, "train_samples", samples())
  if restored is not None and jax.process_index() == 0:
    print(f"resumed from step {start} in {workdir / 'checkpoints'}", file=sys.stderr)

  final = metric_writer.last_values(writer.read())  # earlier sessions of this run included
  unit = config.get("progress_unit", "img")
  bar = tqdm(total=config.total_steps * config.batch_size, initial=start * config.batch_size, unit=unit,
             unit_scale=True, disable=not progress or jax.process_index() != 0, desc=workdir.name)
  finite, checked = jnp.bool_(True), start  # no non-finite loss in steps checked+1 .. now

  def check_finite(step):
    nonlocal checked
    if not bool(jnp.all(finite)):
      where = f"at step {step}" if checked + 1 == step else f"between steps {checked + 1} and {step}"
      ckpt.wait()
      kept = ckpt.latest_step()
      kept = f"the last good checkpoint, step {kept}, is kept" if kept else "no checkpoint was saved before it"
      raise NonFiniteLoss(f"the loss became non-finite {where}; stopping ({kept}). To retry with a lower "
                          "optim.lr or an optim.grad_clip_norm, run the same command with the new value and "
                          "--restart (this run is moved aside, not deleted)")
    checked = step

  done, interrupted, preempted, out_of_space = start, False, False, None
  stop = _StopRequest().__enter__()
  try:
    inputs = data.host_batch() if start < config.total_steps else None
    for step in range(start + 1, config.total_steps + 1):
      if stop.interrupted:
        interrupted = True
        break
      state, metrics = train_step(state, inputs)
      done = step
      preempted = stop.preempted_at(step)
      finite = _still_finite(finite, metrics["loss"])
      bar.update(config.batch_size)
      logged = step % config.log_every == 0 or step == config.total_steps
      evaluated = evaluate is not None and (step % config.eval_every == 0 or step == config.total_steps)
      saved = step % config.checkpoint_every == 0 or step == config.total_steps or preempted
      data_state = data.get_state() if saved else None  # before the next inputs are drawn
      if step < config.total_steps:
        inputs = data.host_batch()  # on its way while the step runs
      record = {}  # one JSON line per logged step, always with `loss`
      if logged or evaluated or saved:
        check_finite(step)
      if logged:
        record = {k: float(v) for k, v in jax.device_get(scalar_metrics(metrics)).items()}
        record["lr"] = float(optim.schedule(config.optim, config.total_steps)(step - 1))
        record.update(getattr(train_step, "comm_metrics", {}))
        bar.set_postfix(loss=f"{record['loss']:.4f}")
      if evaluated:
        loss = record["loss"] if logged else float(jax.device_get(scalar_metrics(metrics["loss"])))
        record = {"loss": loss, **record, **{f"eval_{k}": v for k, v in evaluate(state).items()}}
      if record:
        writer.write(step, record)
        final.update(record)
      if saved:
        ckpt.save(step, state, data_state)
      if preempted:
        break
  except KeyboardInterrupt:
    interrupted = True
  except Exception as e:
    if not util.is_out_of_space(e):
      raise
    out_of_space = e
  finally:
    bar.close()
    last, failures = None, []
    for finish in (ckpt.wait, "latest", ckpt.close, writer.close):  # each, even when an earlier one fails
      try:
        if finish == "latest":
          last = ckpt.latest_step()  # before close: a closed manager no longer answers
        else:
          finish()
      except Exception as e:
        if util.is_out_of_space(e):
          out_of_space = out_of_space or e
        else:
          failures.append(e)
    stop.__exit__()  # only now: a signal during the last saves must not interrupt them
    if failures:
      raise failures[0]
  if out_of_space is not None:
    kept = f"the last good checkpoint is step {last}" if last else "no checkpoint was saved"
    raise OutOfSpace(f"no space left writing to {workdir} ({util.free_space(workdir)}; or a quota or file-size "
                     f"limit); stopped at step {done}, {kept}; free some space and run the same command to resume")
  if preempted and done < config.total_steps:
    raise Preempted(f"preempted (SIGTERM): saved a checkpoint at step {last} and stopped; the same command "
                    "resumes")
  if interrupted:
    resumes = f"the last checkpoint is step {last}" if last else "no checkpoint was saved yet"
    raise Interrupted(f"interrupted at step {done}; {resumes}; the same command "
                      f"{'resumes' if last else 'starts over'}")
  return final
