"""Lion whose data-parallel step sends signs instead of fp32 gradients (Lion Cub / Distributed Lion).

`distributed_lion` is an optax GradientTransformation meant to run inside `jax.shard_map` over a data
axis: each device holds its own gradient and its own momentum, computes c_i = b1 m_i + (1 - b1) g_i,
and the devices agree on the update direction u through one of these collectives (Lion Cub, Ishikawa et
al. 2024; Distributed Lion, Liu et al. 2024):

  allreduce   fp32 gradients averaged (ordinary Lion; every momentum equal)       ~ 8 P bytes / device
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
every replica applies the same update. Momentum is local;
it can be averaged (fp32 all-reduce) every k steps or at T_{j+1} = T_j + 2^(j/k), for all parameters or
those whose path matches a regular expression.
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


class DistributedLionState(NamedTuple):
  count: jnp.ndarray  # steps taken (int32)
  mu: Any  # this device's momentum
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


def vote(c: jnp.ndarray, comm: str, axis_name: str, n: int, count, segments=None) -> jnp.ndarray:
  """The agreed update direction (int32, +-1; the same on every device) for one flat fp32 vector c.
  The l*_int8 modes scale each segment (tensor) of c on its own; `segments` lists their sizes."""
  if comm in ("mavo_int8", "l1_int8", "l0_int8", "linf_int8"):
    if comm == "mavo_int8":
      q = jnp.sign(c).astype(jnp.int8)
    else:
      parts = jnp.split(c, np.cumsum(segments)[:-1]) if segments else [c]
      q = jnp.concatenate([quantize(part, n, comm.split("_")[0]) for part in parts])
    u = _vote_sum(jax.lax.psum(q, axis_name).astype(jnp.int32), count)  # one s8 all-reduce
  else:
    positive = jnp.where(c == 0, tie_break(count) > 0, c > 0)
    if comm == "mavo_4bit":
      u = _vote_sum(2 * _count_4bit(positive, axis_name) - n, count)
    else:
      u = _vote_1bit(positive, axis_name, n, count)
  return u


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


# ----------------------------------------------------------------------------------------- optimizer
def distributed_lion(learning_rate, b1: float = 0.9, b2: float = 0.99, weight_decay: float = 0.0,
                     comm: str = "mavo_1bit", axis_name: str = "data", momentum_sync=None,
                     sync_pattern: str | None = None, mesh: jax.sharding.Mesh | None = None,
                     num_devices: int | None = None) -> optax.GradientTransformation:
  """Lion for `jax.shard_map` over `axis_name` with compressed sign collectives (see the module doc).

  `mesh` (or `num_devices`) fixes the device count, which decides whether a mode's arithmetic holds:
  int8 sums need n <= 127, 4-bit fields n <= 15, l*_int8 need s = floor(127/n) >= 1. `momentum_sync`:
  None, 'every:K' or 'exp:K'; `sync_pattern` restricts it to parameters whose path matches.
  """
  if comm not in COMMS:
    raise ValueError(f"comm must be one of {COMMS}, got {comm!r}")
  if mesh is not None:
    if axis_name not in mesh.axis_names:
      raise ValueError(f"axis_name {axis_name!r} is not an axis of the mesh {tuple(mesh.axis_names)}")
    num_devices = mesh.shape[axis_name]
  n = num_devices or jax.device_count()
  if comm in ("mavo_int8", "l1_int8", "l0_int8", "linf_int8") and n > 127:
    raise ValueError(f"comm={comm!r} sums int8 values over {n} devices, which overflows beyond 127; use mavo_1bit")
  if comm == "mavo_4bit" and n > 15:
    raise ValueError(f"comm='mavo_4bit' counts votes in 4-bit fields, exact for at most 15 devices, got {n}")
  sync = parse_momentum_sync(momentum_sync)
  pattern = re.compile(sync_pattern) if sync_pattern else None
  schedule = learning_rate if callable(learning_rate) else (lambda _: learning_rate)

  def init_fn(params):
    return DistributedLionState(jnp.zeros((), jnp.int32), jax.tree.map(jnp.zeros_like, params),
                                jnp.ones((), jnp.int32))

  def update_fn(grads, state, params=None):
    count = state.count
    if comm == "allreduce":
      grads = jax.lax.pmean(grads, axis_name)
    c = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, state.mu, grads)
    if comm == "allreduce":
      u = jax.tree.map(lambda x: jnp.sign(x), c)
    else:
      leaves, tree = jax.tree.flatten(c)  # one flat vector: one collective per step, not one per tensor
      sizes = [x.size for x in leaves]
      flat = jnp.concatenate([x.ravel().astype(jnp.float32) for x in leaves])
      parts = jnp.split(vote(flat, comm, axis_name, n, count, sizes), np.cumsum(sizes)[:-1])
      u = jax.tree.unflatten(tree, [p.reshape(x.shape).astype(x.dtype) for p, x in zip(parts, leaves)])
    lr = schedule(count)
    if weight_decay and params is not None:
      updates = jax.tree.map(lambda d, p: -lr * (d + weight_decay * p), u, params)
    else:
      updates = jax.tree.map(lambda d: -lr * d, u)
    mu = jax.tree.map(lambda m, g: b2 * m + (1 - b2) * g, state.mu, grads)
    step = count + 1
    sync_j = state.sync_j
    if sync is not None:
      kind, k = sync
      if kind == "every":
        due = step % k == 0
      else:
        due = step == _exp_step(sync_j, k)
        sync_j = jnp.where(due, _next_j(sync_j, k, step), sync_j)

      def average(path, m):
        if pattern is not None and not pattern.search(jax.tree_util.keystr(path)):
          return m
        return jnp.where(due, jax.lax.pmean(m, axis_name), m)

      mu = jax.tree_util.tree_map_with_path(average, mu)
    return updates, DistributedLionState(step, mu, sync_j)

  return optax.GradientTransformation(init_fn, update_fn)


def _next_j(j, k, step):
  """The first j' > j whose sync step is after `step` (early exponential steps can coincide)."""
  def cond(jj):
    return _exp_step(jj, k) <= step
  return jax.lax.while_loop(cond, lambda jj: jj + 1, j + 1)
