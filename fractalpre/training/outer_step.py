"""DiLoCo-style training in the trainer (`outer.workers` > 0; fractalpre.optim.outer): the devices form W
workers on a (`worker`, `data`) mesh, consecutive devices a worker in process order (in a multi-process job
one worker per process is a node's devices). Each worker takes the usual data-parallel step on its own
parameters with its own inner optimizer state, the gradients averaged inside the worker only; after the
steps of a fragment's schedule, the workers average that fragment's pseudo-gradient (global minus their own
parameters), the outer optimizer moves the global parameters, and every worker restarts from them; after
the run's last step every fragment is synced, so the global parameters hold all the work. The sync sits in a `lax.cond` on the step, so a step without one sends nothing across the workers.

The state keeps the global parameters where every other run keeps its parameters (evaluation, export and
init_from read them), and adds `outer`: each worker's parameters (a leading worker axis) and the outer
optimizer's state of each fragment. Each worker's inner optimizer state has a leading worker axis too.
Metrics are each worker's mean over its devices (a leading worker axis): the loop averages them at log
steps, so no step reduces anything across the workers."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from fractalpre.optim import outer

INNER_AXIS = "data"


def step_mesh(devices, workers: int) -> jax.sharding.Mesh:
  """W workers of consecutive devices in process order (jax.make_mesh may order them by topology), so that
  with one worker per process a worker is a node's devices."""
  devices = np.asarray(sorted(np.asarray(devices).reshape(-1), key=lambda d: (d.process_index, d.id)))
  return jax.sharding.Mesh(devices.reshape(workers, devices.size // workers), (outer.AXIS, INNER_AXIS),
                           axis_types=(jax.sharding.AxisType.Auto,) * 2)


def stacked(tree, n: int):
  """n copies of each leaf along a new leading axis: a state per worker here, per device for compressed
  Lion."""
  return jax.tree.map(lambda x: jnp.broadcast_to(x, (n,) + x.shape), tree)


def add_state(state: dict, s: outer.Settings, outer_tx) -> dict:
  """The trainer's state with every worker's copy of the parameters and inner optimizer state, and the
  outer optimizer's state of each fragment (over that fragment's parameter leaves)."""
  leaves = jax.tree.leaves(state["params"])
  groups = outer.fragment_leaves([x.size for x in leaves], s.fragments)
  return {**state, "opt_state": stacked(state["opt_state"], s.workers),
          "outer": {"params": stacked(state["params"], s.workers),
                    "opt": [outer_tx.init([leaves[i] for i in group]) for group in groups]}}


def state_specs(state: dict) -> dict:
  """Worker axes sharded over the workers; the rest (global parameters, outer state) replicated."""
  by_worker = lambda tree: jax.tree.map(lambda _: P(outer.AXIS), tree)
  replicated = lambda tree: jax.tree.map(lambda _: P(), tree)
  specs = {k: replicated(v) for k, v in state.items() if k not in ("opt_state", "outer")}
  return {**specs, "opt_state": by_worker(state["opt_state"]),
          "outer": {"params": by_worker(state["outer"]["params"]), "opt": replicated(state["outer"]["opt"])}}


def make_step(inner_step, s: outer.Settings, outer_tx, local_size: int, last_step: int):
  """The step `step(state, batch, rngs)` under `jax.shard_map` over (worker, data): `inner_step`
  (trainer.make_train_step over both axes, reducing over `data`) on this worker's parameters, then each
  fragment's sync when it is due (and every fragment's after `last_step`), each of a worker's `local_size`
  devices sending its share of the fragment. `rngs["outer"]`: the 1-bit codes' rounding."""

  def step(state, batch, rngs):
    view = {k: v for k, v in state.items() if k != "outer"}
    view["params"] = jax.tree.map(lambda x: x[0], state["outer"]["params"])
    new, metrics = inner_step(view, batch, rngs)
    count = new["step"]
    global_leaves, treedef = jax.tree.flatten(state["params"])
    worker_leaves = jax.tree.leaves(new["params"])
    groups = outer.fragment_leaves([x.size for x in global_leaves], s.fragments)
    opt = list(state["outer"]["opt"])
    for f, group in enumerate(groups):

      def sync(args):
        theta, mine, opt_state = args
        pseudo = [t - w for t, w in zip(theta, mine)]
        key = jax.random.fold_in(jax.random.fold_in(rngs["outer"], count), f)
        averaged = outer.mean(pseudo, s, key, INNER_AXIS, local_size)
        updates, opt_state = outer_tx.update(averaged, opt_state, theta)
        theta = [t + u for t, u in zip(theta, updates)]
        return theta, theta, opt_state  # every worker restarts from the new global parameters

      theta, mine, opt[f] = jax.lax.cond(outer.due(count, f, s, last_step), sync, lambda args: args,
                                         ([global_leaves[i] for i in group], [worker_leaves[i] for i in group],
                                          opt[f]))
      for i, t, w in zip(group, theta, mine):
        global_leaves[i], worker_leaves[i] = t, w
    workers = jax.tree.unflatten(treedef, [x[None] for x in worker_leaves])
    new = {**new, "params": jax.tree.unflatten(treedef, global_leaves), "outer": {"params": workers, "opt": opt}}
    return new, jax.tree.map(lambda m: m[None], metrics)

  return step

