"""Lion, one optimizer with two transports: plain (the gradients averaged, as `optax.lion` would see
them) or Lion Cub / Distributed Lion (each device keeps its own momentum and the devices agree on the
update's sign by a compressed vote; Ishikawa et al. 2024, Liu et al. 2024).

`lion()` is optax's Lion composed of the same pieces for both transports:

  [mean_gradients: pmean over the data axes] -> [clip_by_global_norm] -> scale_by_lion(transport)
    -> add_decayed_weights(weight_decay, mask) -> scale_by_learning_rate

and `scale_by_lion` differs between them in one line: the sign of c = (1 - b1) g + b1 m is taken locally
(plain) or voted (compressed). The vote, run inside `jax.shard_map`, sends per step:

  allreduce   fp32 gradients averaged (plain Lion; every momentum equal)          ~ 8 P bytes / device
  mavo_int8   sign(c_i) as int8, summed by an s8 all-reduce; u = sign(sum)        ~ 2 P        (n <= 127)
  mavo_4bit   bits (c_i > 0) in 4-bit fields, two per byte, uint8 all-reduce       ~ P          (n <= 15)
  mavo_1bit   bits packed 8 per byte; all-to-all so each device votes on 1/n of the
              vector, then an all-gather of the packed result                      ~ 2 P / 8, flat in n
  l1_int8     q_i = clip(round(c_i / mean|c_i| * s/2), -s, s), s = floor(127 / n), per tensor; u = sign(sum q_i)
  l0_int8     the same, scaled by the geometric mean of the non-zero |c_i|
  linf_int8   the same, scaled by max |c_i|

Ties (a zero sum: even n, or all-zero contributions) take the step's alternating tie-break, +1 on even
steps and -1 on odd ones. Exact zeros: the int8 modes send 0; the bit modes cannot, so a zero c_i sends the
step's tie-break bit. Unlike the authors we do not mask the update where a device's own c_i is 0: the
devices' zeros differ (a pixel that is blank in one device's batch only), and a local mask let the
replicated parameters drift apart (the two-process test caught it). u is a function of the vote alone, so
every replica applies the same update.

Momentum is local to each device. It can be averaged (an fp32 all-reduce) every k steps or at
T_{j+1} = T_j + 2^(j/k), for all parameters or those whose path matches a regular expression; the
average sits in a `lax.cond` on the step count (the same on every device), so it costs bytes on sync
steps only. Hierarchical mode (`hierarchy='node'`): on a (`node`, `local`) mesh the gradients are
averaged exactly within a node, each device of a node votes across the nodes on its 1/local share of the
vector, and the node's devices all-gather the packed result; only the vote crosses the nodes' link.
"""
from __future__ import annotations

import math
import re
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

COMMS = ("allreduce", "mavo_int8", "mavo_1bit", "mavo_4bit", "l1_int8", "l0_int8", "linf_int8")
HIERARCHIES = ("flat", "node")
INT8_COMMS = ("mavo_int8", "l1_int8", "l0_int8", "linf_int8")


class LionState(NamedTuple):
  count: jnp.ndarray  # steps taken (int32)
  mu: Any  # the momentum (this device's, under a compressed transport)
  sync_j: jnp.ndarray  # index j of the next exponential-schedule sync (int32)


# ----------------------------------------------------------------------------------------- schedule
def parse_momentum_sync(spec) -> tuple[str, int] | None:
  """None | 'every:K' | 'exp:K' (K >= 1) -> (kind, K)."""
  if spec is None or spec == "" or spec == "none":
    return None
  m = re.fullmatch(r"(every|exp):(\d+)", str(spec))
  if not m or int(m.group(2)) < 1:
    raise ValueError(f"momentum_sync must be None, 'every:K' or 'exp:K' with an integer K >= 1, got {spec!r}")
  return m.group(1), int(m.group(2))


def _exp_step(j, k):
  """Step of the j-th exponential sync (j >= 1): ceil(T_j), T_j = sum_{i<j} 2^(i/k), in float32."""
  r = jnp.exp2(jnp.float32(1.0) / k)
  return jnp.ceil((jnp.exp2(jnp.asarray(j, jnp.float32) / k) - 1) / (r - 1)).astype(jnp.int32)


def momentum_sync_steps(spec, last_step: int) -> list[int]:
  """The 1-based steps at which momentum is averaged, up to last_step (what the optimizer does)."""
  parsed = parse_momentum_sync(spec)
  if parsed is None:
    return []
  kind, k = parsed
  if kind == "every":
    return list(range(k, last_step + 1, k))
  steps, j = [], 1
  while (s := int(_exp_step(j, k))) <= last_step:
    if not steps or s > steps[-1]:
      steps.append(s)
    j += 1
  return steps


# ----------------------------------------------------------------------------------------- transport
class Transport(NamedTuple):
  """How the devices agree on the update: `comm`, the mesh axes of the data-parallel devices (`axes`),
  the axis the vote crosses and its size, the within-node axis of the hierarchical mode (or None), and
  the momentum sync."""
  comm: str
  axes: tuple[str, ...]
  vote_axis: str
  voters: int
  local_axis: str | None
  local_size: int
  sync: tuple[str, int] | None
  sync_pattern: str | None

  @property
  def mean_axes(self) -> tuple[str, ...]:
    """Axes over which the gradients are averaged exactly before Lion sees them."""
    if self.comm == "allreduce":
      return self.axes
    return (self.local_axis,) if self.local_axis else ()


def step_mesh(devices, hierarchy: str = "flat", local_devices: int = 0) -> jax.sharding.Mesh:
  """The mesh a compressed step runs on: 1-D `data`, or (`node`, `local`) with `local_devices` per node
  (consecutive devices, which `jax.devices()` orders by process, make a node)."""
  devices = np.asarray(devices).reshape(-1)
  if hierarchy not in HIERARCHIES:
    raise ValueError(f"lion.hierarchy must be one of {HIERARCHIES}, got {hierarchy!r}")
  if hierarchy == "flat":
    return jax.sharding.Mesh(devices, ("data",), axis_types=(jax.sharding.AxisType.Auto,))
  n = devices.size
  if local_devices < 1 or n % local_devices or local_devices == n:
    raise ValueError(f"lion.local_devices must divide the {n} devices into at least two nodes, got {local_devices}")
  return jax.sharding.Mesh(devices.reshape(n // local_devices, local_devices), ("node", "local"),
                           axis_types=(jax.sharding.AxisType.Auto,) * 2)


def transport(comm: str, mesh: jax.sharding.Mesh, momentum_sync=None, sync_pattern: str | None = None) -> Transport:
  """A compressed transport on `mesh` (from `step_mesh`); refuses what the mesh cannot do exactly:
  int8 sums need at most 127 voters, 4-bit fields at most 15."""
  if comm not in COMMS:
    raise ValueError(f"lion.comm must be one of {COMMS}, got {comm!r}")
  axes = tuple(mesh.axis_names)
  if axes not in (("data",), ("node", "local")):
    raise ValueError(f"compressed Lion runs on a ('data',) or ('node', 'local') mesh, got {axes}")
  vote_axis = axes[0]
  n = mesh.shape[vote_axis]
  if comm in INT8_COMMS and n > 127:
    raise ValueError(f"lion.comm={comm!r} sums int8 values over {n} voters, which overflows beyond 127; use mavo_1bit")
  if comm == "mavo_4bit" and n > 15:
    raise ValueError(f"lion.comm='mavo_4bit' counts votes in 4-bit fields, exact for at most 15 voters, got {n}")
  sync = parse_momentum_sync(momentum_sync)
  if sync is not None and comm == "allreduce":
    raise ValueError("lion.momentum_sync does nothing with comm='allreduce' (the momenta are equal); leave it empty")
  if sync_pattern:
    re.compile(sync_pattern)
  local = axes[1] if len(axes) == 2 else None
  return Transport(comm, axes, vote_axis, n, local, mesh.shape[local] if local else 1, sync, sync_pattern or None)


def mean_gradients(axes: tuple[str, ...]) -> optax.GradientTransformation:
  """Averages the gradients over mesh axes (inside `jax.shard_map`)."""
  return optax.GradientTransformation(lambda params: optax.EmptyState(),
                                      lambda grads, state, params=None: (jax.lax.pmean(grads, axes), state))


# ----------------------------------------------------------------------------------------- bits
def pack_bits(bits: jnp.ndarray) -> jnp.ndarray:
  """Booleans (length L) -> uint8 (ceil(L / 8)), big-endian within each byte."""
  return jnp.packbits(bits.astype(jnp.uint8))


def unpack_bits(packed: jnp.ndarray, length: int) -> jnp.ndarray:
  return jnp.unpackbits(packed, count=length).astype(bool)


def tie_break(count) -> jnp.ndarray:
  """+1 on even steps, -1 on odd steps (`count` = steps taken before this one)."""
  return jnp.where(count % 2 == 0, 1, -1).astype(jnp.int32)


def quantize(c: jnp.ndarray, n: int, norm: str) -> jnp.ndarray:
  """int8 q = clip(round(c / scale * s / 2), -s, s), s = floor(127 / n), scale by `norm` of |c|."""
  s = 127 // n
  a = jnp.abs(c)
  if norm == "l1":
    scale = a.mean()
  elif norm == "l0":
    nonzero = a > 0
    scale = jnp.exp(jnp.sum(jnp.where(nonzero, jnp.log(jnp.where(nonzero, a, 1.0)), 0.0)) / jnp.maximum(nonzero.sum(), 1))
  else:
    scale = a.max()
  scale = jnp.where(scale > 0, scale, 1.0)
  return jnp.clip(jnp.round(c / scale * (s / 2)), -s, s).astype(jnp.int8)


# ----------------------------------------------------------------------------------------- votes
def _vote_sum(total, count):
  return jnp.where(total > 0, 1, jnp.where(total < 0, -1, tie_break(count)))


def contribution(c: jnp.ndarray, comm: str, n: int, count, segments=None) -> jnp.ndarray:
  """What one voter sends for a flat fp32 vector c: int8 votes or quantised values, or booleans (c > 0)
  for the bit modes. The l*_int8 modes scale each segment (tensor) of c on its own."""
  if comm == "mavo_int8":
    return jnp.sign(c).astype(jnp.int8)
  if comm in INT8_COMMS:
    parts = jnp.split(c, np.cumsum(segments)[:-1]) if segments else [c]
    return jnp.concatenate([quantize(part, n, comm.split("_")[0]) for part in parts])
  return jnp.where(c == 0, tie_break(count) > 0, c > 0)


def combine(x: jnp.ndarray, comm: str, axis_name: str, n: int, count) -> jnp.ndarray:
  """The agreed direction (int32, +-1, the same on every voter) from every voter's `contribution`."""
  if comm in INT8_COMMS:
    return _vote_sum(jax.lax.psum(x, axis_name).astype(jnp.int32), count)  # one s8 all-reduce
  if comm == "mavo_4bit":
    return _vote_sum(2 * _count_4bit(x, axis_name) - n, count)
  return _vote_1bit(x, axis_name, n, count)


def vote(c: jnp.ndarray, comm: str, axis_name: str, n: int, count, segments=None) -> jnp.ndarray:
  """The agreed update direction of n voters along `axis_name` for one flat fp32 vector c."""
  return combine(contribution(c, comm, n, count, segments), comm, axis_name, n, count)


def _count_4bit(positive, axis_name):
  """Number of devices voting +1 per element: 4-bit fields, two per byte, one uint8 all-reduce."""
  length = positive.shape[0]
  padded = jnp.pad(positive.astype(jnp.uint8), (0, length % 2))
  pairs = padded.reshape(-1, 2)
  nibbles = pairs[:, 0] | (pairs[:, 1] << 4)
  total = jax.lax.psum(nibbles, axis_name)
  return jnp.stack([total & 15, total >> 4], axis=1).reshape(-1)[:length].astype(jnp.int32)


def _vote_1bit(positive, axis_name, n, count):
  """Two-phase majority vote on packed bits: all-to-all so each device owns 1/n of the bytes, vote
  locally, all-gather the packed result."""
  length = positive.shape[0]
  chunk = math.ceil(length / (8 * n)) * 8  # bits per device, a whole number of bytes
  bits = jnp.pad(positive, (0, chunk * n - length))
  packed = pack_bits(bits).reshape(n, chunk // 8)
  mine = jax.lax.all_to_all(packed, axis_name, 0, 0, tiled=False)  # (n, chunk/8): every device's bytes of my chunk
  votes = jax.vmap(lambda p: unpack_bits(p, chunk))(mine).astype(jnp.int32).sum(axis=0)
  decided = _vote_sum(2 * votes - n, count) > 0
  gathered = jax.lax.all_gather(pack_bits(decided), axis_name)  # (n, chunk/8)
  u_bits = unpack_bits(gathered.reshape(-1), chunk * n)[:length]
  return jnp.where(u_bits, 1, -1)


def _voted_direction(c_tree, t: Transport, count):
  """sign(c) agreed by the transport's vote, as a tree like c: one flat vector, one collective per step."""
  leaves, tree = jax.tree.flatten(c_tree)
  sizes = [x.size for x in leaves]
  flat = jnp.concatenate([x.ravel().astype(jnp.float32) for x in leaves])
  if t.local_axis is None:
    u = vote(flat, t.comm, t.vote_axis, t.voters, count, sizes)
  else:  # each device of a node votes on its share; the node gathers the packed result on its fast link
    sent = contribution(flat, t.comm, t.voters, count, sizes)
    share = math.ceil(flat.size / (8 * t.local_size)) * 8
    sent = jnp.pad(sent, (0, share * t.local_size - flat.size))
    mine = jax.lax.dynamic_slice(sent, (jax.lax.axis_index(t.local_axis) * share,), (share,))
    decided = combine(mine, t.comm, t.vote_axis, t.voters, count) > 0
    gathered = jax.lax.all_gather(pack_bits(decided), t.local_axis, tiled=True)
    u = jnp.where(unpack_bits(gathered, share * t.local_size)[:flat.size], 1, -1)
  parts = jnp.split(u, np.cumsum(sizes)[:-1])
  return jax.tree.unflatten(tree, [p.reshape(x.shape).astype(x.dtype) for p, x in zip(parts, leaves)])


def _synced_momentum(mu, state_sync_j, step, t: Transport):
  """The momentum averaged over the voters on the schedule's steps, inside a `lax.cond`: the all-reduce
  runs (and sends bytes) on sync steps only."""
  kind, k = t.sync
  if kind == "every":
    due, sync_j = step % k == 0, state_sync_j
  else:
    due = step == _exp_step(state_sync_j, k)
    sync_j = jnp.where(due, _next_j(state_sync_j, k, step), state_sync_j)
  pattern = re.compile(t.sync_pattern) if t.sync_pattern else None
  leaves, tree = jax.tree_util.tree_flatten_with_path(mu)
  chosen = [i for i, (path, _) in enumerate(leaves) if pattern is None or pattern.search(jax.tree_util.keystr(path))]
  values = [leaf for _, leaf in leaves]
  averaged = jax.lax.cond(due, lambda xs: jax.lax.pmean(xs, t.vote_axis), lambda xs: xs, [values[i] for i in chosen])
  for i, value in zip(chosen, averaged):
    values[i] = value
  return jax.tree.unflatten(tree, values), sync_j


def _next_j(j, k, step):
  """The first j' > j whose sync step is after `step` (early exponential steps can coincide)."""
  def cond(jj):
    return _exp_step(jj, k) <= step
  return jax.lax.while_loop(cond, lambda jj: jj + 1, j + 1)


# ----------------------------------------------------------------------------------------- optimizer
def scale_by_lion(b1: float = 0.9, b2: float = 0.99, mu_dtype=None, transport: Transport | None = None) -> optax.GradientTransformation:
  """Lion's direction sign((1 - b1) g + b1 m) and its momentum m <- (1 - b2) g + b2 m, as in
  `optax.scale_by_lion`; under a compressed `transport` the sign is voted and the momentum synced."""
  voted = transport is not None and transport.comm != "allreduce"

  def init_fn(params):
    return LionState(jnp.zeros((), jnp.int32), optax.tree.zeros_like(params, dtype=mu_dtype), jnp.ones((), jnp.int32))

  def update_fn(grads, state, params=None):
    del params
    c = jax.tree.map(lambda g, m: (1.0 - b1) * g + b1 * m, grads, state.mu)
    u = _voted_direction(c, transport, state.count) if voted else jax.tree.map(jnp.sign, c)
    mu = optax.tree.cast(optax.tree.update_moment(grads, state.mu, b2, 1), mu_dtype)
    step, sync_j = state.count + 1, state.sync_j
    if voted and transport.sync is not None:
      mu, sync_j = _synced_momentum(mu, sync_j, step, transport)
    return u, LionState(step, mu, sync_j)

  return optax.GradientTransformation(init_fn, update_fn)


def lion(learning_rate, b1: float = 0.9, b2: float = 0.99, weight_decay: float = 0.0, mask=None, mu_dtype=None,
         grad_clip_norm: float = 0.0, transport: Transport | None = None) -> optax.GradientTransformation:
  """Lion (Chen et al. 2023) with either transport (see the module doc). `grad_clip_norm` clips the
  averaged gradient under `allreduce` (as plain Lion does) and each device's own gradient under a vote,
  where no averaged gradient exists."""
  parts = [mean_gradients(transport.mean_axes)] if transport is not None and transport.mean_axes else []
  if grad_clip_norm:
    parts.append(optax.clip_by_global_norm(grad_clip_norm))
  parts += [scale_by_lion(b1, b2, mu_dtype, transport), optax.add_decayed_weights(weight_decay, mask),
            optax.scale_by_learning_rate(learning_rate)]
  return optax.chain(*parts)
