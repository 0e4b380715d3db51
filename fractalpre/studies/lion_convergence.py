"""A small data-parallel run for comparing comm modes: a one-hidden-layer MLP on scikit-learn's digits,
trained with compressed `lion` under `jax.shard_map`, each device on its own shard of every batch."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from fractalpre.optim import lion


def _digits():
  from sklearn.datasets import load_digits
  data = load_digits()
  return (data.data / 16.0).astype(np.float32), data.target.astype(np.int32)


def _loss(params, x, y):
  h = jnp.tanh(x @ params["w1"] + params["b1"])
  logits = h @ params["w2"] + params["b2"]
  return jnp.mean(jax.nn.logsumexp(logits, -1) - jnp.take_along_axis(logits, y[:, None], -1)[:, 0])


def train_digits(comm: str, momentum_sync=None, steps: int = 200, lr: float = 1e-3, per_device_batch: int = 32,
                 hidden: int = 64, seed: int = 0, devices=None) -> dict:
  """Trains and returns {'losses': per-step mean train loss, 'final': loss on all 1797 digits}."""
  devices = devices or jax.devices()
  n = len(devices)
  mesh = lion.step_mesh(devices)
  x, y = _digits()
  rng = np.random.default_rng(seed)
  params = {"w1": rng.normal(0, 1 / 8, (64, hidden)).astype(np.float32), "b1": np.zeros(hidden, np.float32),
            "w2": rng.normal(0, 1 / np.sqrt(hidden), (hidden, 10)).astype(np.float32), "b2": np.zeros(10, np.float32)}
  tx = lion.lion(lr, transport=lion.transport(comm, mesh, momentum_sync))
  opt_state = jax.tree.map(lambda a: jnp.broadcast_to(a, (n,) + a.shape), tx.init(params))

  def local(params, opt_state, xb, yb):
    loss, grads = jax.value_and_grad(_loss)(params, xb, yb)
    updates, new = tx.update(grads, jax.tree.map(lambda a: a[0], opt_state), params)
    params = jax.tree.map(lambda p, u: p + u, params, updates)
    return params, jax.tree.map(lambda a: a[None], new), jax.lax.pmean(loss, "data")

  step = jax.jit(jax.shard_map(local, mesh=mesh, in_specs=(P(), P("data"), P("data"), P("data")),
                               out_specs=(P(), P("data"), P()), check_vma=False))
  sharded = NamedSharding(mesh, P("data"))
  opt_state = jax.device_put(opt_state, sharded)
  params = jax.device_put(params, NamedSharding(mesh, P()))
  losses = []
  for t in range(steps):
    idx = np.random.default_rng((seed, t)).choice(len(x), n * per_device_batch, replace=False)
    params, opt_state, loss = step(params, opt_state, jax.device_put(x[idx], sharded), jax.device_put(y[idx], sharded))
    losses.append(float(loss))
  return {"losses": losses, "final": float(_loss(jax.device_get(params), x, y))}
