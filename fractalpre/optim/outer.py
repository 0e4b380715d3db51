"""The outer optimizer of DiLoCo-style training: W workers take `every` (H) inner steps alone, then average
their pseudo-gradients (global parameters minus their own) over a slow link and take one outer step.

  DiLoCo (Douillard et al. 2023): outer Nesterov SGD, lr 0.7, momentum 0.9; one worker with outer lr 1 and
  no momentum is the plain run, and with H = 1, SGD inside and outer lr 1 without momentum it is
  data-parallel SGD.
  INTELLECT-1 (Prime Intellect 2024): H = 100 and int8 pseudo-gradients.
  Streaming DiLoCo (Douillard et al. 2025): the parameters in F fragments, synced at staggered steps, so a
  sync step sends 1/F of the model (the paper also overlaps that send with the next inner steps; here it
  is sent within its step).

The pseudo-gradients are averaged over the `worker` mesh axis inside `jax.shard_map`, sent as `comm`:

  fp32   an fp32 all-reduce                                                             4 P bytes
  bf16   reduce-scatter by all-to-all of bf16 chunks, each chunk averaged in fp32 by its owner, the means
         all-gathered in bf16                                                           2 P
  int8   the same with int8 codes: each tensor divided by the largest |value| any worker has in it (one
         small fp32 max over the workers), rounded to 127 levels each way                P
  4bit   the same with 7 levels each way, two codes a byte                              P / 2
  1bit   the same with each worker's sign as one bit, the owner's mean of the signs rounded stochastically
         back to one bit (unbiased), times each tensor's mean |value| averaged over the workers   P / 8

(P parameters; the bytes a worker sends per sync for W = 2, ring algorithms; a worker's devices each send
their share.)
"""
from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

COMMS = ("fp32", "bf16", "int8", "4bit", "1bit")
AXIS = "worker"  # the mesh axis across workers; `data` is the axis inside one


class Settings(NamedTuple):
  """The checked `outer` config: workers (W), every (H), lr, momentum, comm, fragments (F)."""
  workers: int
  every: int
  lr: float
  momentum: float
  comm: str
  fragments: int


def settings(cfg, devices: int) -> Settings | None:
  """The `outer` config checked against `devices` devices; None when `outer.workers` is 0 (off). Raises
  ValueError naming the key, the value and what is allowed."""
  if not cfg or not cfg.get("workers"):
    return None

  def integer(key, low, high=None):
    value = cfg.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
      allowed = f">= {low}" + (f" and <= {high}" if high is not None else "")
      raise ValueError(f"outer.{key} must be an integer {allowed}, got {value!r}")
    return value

  workers = integer("workers", 1)
  if devices % workers:
    raise ValueError(f"outer.workers must divide the {devices} devices into equal workers, got {workers}")
  every = integer("every", 1)
  fragments = integer("fragments", 1, every)
  lr, momentum = cfg.get("lr"), cfg.get("momentum")
  if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not (math.isfinite(lr) and lr > 0):
    raise ValueError(f"outer.lr must be a finite number > 0, got {lr!r}")
  if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) or not 0 <= momentum < 1:
    raise ValueError(f"outer.momentum must be a number in [0, 1), got {momentum!r}")
  if cfg.get("comm") not in COMMS:
    raise ValueError(f"outer.comm must be one of {', '.join(COMMS)}, got {cfg.get('comm')!r}")
  return Settings(workers, every, float(lr), float(momentum), cfg.comm, fragments)


def optimizer(s: Settings) -> optax.GradientTransformation:
  """The outer step: Nesterov SGD on the averaged pseudo-gradient (plain SGD without momentum)."""
  return optax.sgd(s.lr, momentum=s.momentum or None, nesterov=bool(s.momentum))


def fragment_leaves(leaf_sizes: list[int], fragments: int) -> list[list[int]]:
  """The leaf indices of each of F fragments: runs of consecutive leaves (layers in the model's order) of
  about equal size, none empty."""
  count = len(leaf_sizes)
  if fragments > count:
    raise ValueError(f"outer.fragments must be at most the model's {count} parameter tensors, got {fragments}")
  begins = np.concatenate([[0], np.cumsum(leaf_sizes)[:-1]]) / sum(leaf_sizes)  # where each leaf starts
  starts = [0]
  for f in range(1, fragments):
    wanted = int(np.searchsorted(begins, f / fragments))
    starts.append(min(max(wanted, starts[-1] + 1), count - (fragments - f)))
  return [list(range(a, b)) for a, b in zip(starts, starts[1:] + [count])]


def sync_offset(fragment: int, s: Settings) -> int:
  """Fragment f is synced after steps (f + 1) H / F, then every H steps (all of them at H when F = 1)."""
  return (fragment + 1) * s.every // s.fragments


def due(step, fragment: int, s: Settings, last_step: int):
  """Whether fragment `fragment` is synced after 1-based step `step` (a traced int is fine): on its
  schedule, and every fragment after the run's last step, so that the global parameters (what is evaluated
  and exported) hold every step's work."""
  offset = sync_offset(fragment, s)
  return ((step >= offset) & ((step - offset) % s.every == 0)) | (step == last_step)


def sync_steps(fragment: int, s: Settings, last_step: int) -> list[int]:
  """The steps after which fragment `fragment` is synced in a run of `last_step` steps (`due`'s)."""
  return sorted(set(range(sync_offset(fragment, s), last_step + 1, s.every)) | {last_step})


def sync_share(s: Settings, last_step: int) -> float:
  """The fragments' syncs in a run of `last_step` steps, per step: the weight of one fragment's sync bytes
  in the mean bytes per step (fragments of about equal size)."""
  return sum(len(sync_steps(f, s, last_step)) for f in range(s.fragments)) / last_step


# ----------------------------------------------------------------------------------------- the mean
def mean(tree, s: Settings, key, local_axis: str | None = None, local_size: int = 1):
  """The mean over the workers of a tree of fp32 arrays, sent as `s.comm` (inside `jax.shard_map` over
  AXIS); every device gets the same result. `key`: the 1-bit rounding's randomness (the same on every
  device). With `local_axis` (a worker's `local_size` devices, all holding the same tree), each device of a
  worker sends only its 1/local_size share across the workers and the worker's devices all-gather the
  encoded means on their own link, so a node's link carries the vector once, not once per device. Each
  tensor's scale (int8, 4bit: the largest |value| any worker has in it; 1bit: the workers' mean of its mean
  |value|) comes from the whole tensor: one fp32 number per tensor crosses the link."""
  in_shares = local_axis is not None and local_size > 1
  if s.comm == "fp32" and not in_shares:
    return jax.lax.pmean(tree, AXIS)  # tensor by tensor: no copy into one vector
  leaves, treedef = jax.tree.flatten(tree)
  scale = None
  if s.comm == "1bit":
    scale = jax.lax.pmean(jnp.stack([jnp.abs(x).mean() for x in leaves]), AXIS)
    leaves = [jnp.sign(x) for x in leaves]
  elif s.comm in ("int8", "4bit"):
    scale = jax.lax.pmax(jnp.stack([jnp.abs(x).max() for x in leaves]), AXIS)
    scale = jnp.where(scale > 0, scale, 1.0)
    leaves = [x / scale[i] for i, x in enumerate(leaves)]
  flat = jnp.concatenate([x.ravel().astype(jnp.float32) for x in leaves])
  length = flat.shape[0]
  here = jax.lax.axis_index(AXIS)
  if in_shares:
    share = 8 * s.workers * math.ceil(length / (8 * s.workers * local_size))  # whole bytes of 1-bit codes a worker
    here = here * local_size + jax.lax.axis_index(local_axis)
    flat = jax.lax.dynamic_slice(jnp.pad(flat, (0, share * local_size - length)),
                                 (jax.lax.axis_index(local_axis) * share,), (share,))
  encode, decode = _codes(s.comm)
  key = jax.random.fold_in(key, here)
  if s.comm == "fp32":
    codes = jax.lax.pmean(flat, AXIS)
  else:
    codes = _reduce_scatter_gather(flat, s.workers, encode, decode, key)
  if in_shares:
    codes = jax.lax.all_gather(codes, local_axis)  # the encoded means: the fast link carries codes too
  out = decode(codes).reshape(-1)[:length]  # shares, then chunks, in order; the padding at the end
  parts = jnp.split(out, np.cumsum([x.size for x in leaves])[:-1])
  if scale is not None:
    parts = [p * scale[i] for i, p in enumerate(parts)]
  return jax.tree.unflatten(treedef, [p.reshape(x.shape) for p, x in zip(parts, leaves)])


def _codes(comm: str):
  """(encode(x, key), decode(codes)) along the last axis, for values in [-1, 1] (int8, 4bit, 1bit) or any
  (fp32, bf16). bf16 goes as its bits in uint16 (XLA:CPU would widen a bf16 collective to fp32); 4-bit codes
  (offset by 8) go two to a byte; 1-bit codes are rounded stochastically, so that their expected value is the
  value sent: a sign where the workers agree, 0 on average where two disagree (a fixed tie-break would push
  every such parameter the same way at every sync)."""
  if comm == "fp32":
    return lambda x, key: x, lambda c: c
  if comm == "bf16":
    return (lambda x, key: jax.lax.bitcast_convert_type(x.astype(jnp.bfloat16), jnp.uint16),
            lambda c: jax.lax.bitcast_convert_type(c, jnp.bfloat16).astype(jnp.float32))
  if comm == "1bit":
    def encode(x, key):
      bits = jax.random.uniform(key, x.shape) < (1 + jnp.clip(x, -1, 1)) / 2
      return jnp.packbits(bits.astype(jnp.uint8), axis=-1)

    return encode, lambda c: jnp.unpackbits(c, axis=-1).astype(jnp.float32) * 2 - 1
  levels = 127 if comm == "int8" else 7

  def encode(x, key):
    q = jnp.round(jnp.clip(x, -1, 1) * levels)
    if levels == 127:
      return q.astype(jnp.int8)
    q = (q + 8).astype(jnp.uint8)
    return q[..., 0::2] | (q[..., 1::2] << 4)

  def decode(c):
    if levels == 127:
      return c.astype(jnp.float32) / levels
    q = jnp.stack([c & 15, c >> 4], axis=-1).reshape(c.shape[:-1] + (2 * c.shape[-1],))
    return (q.astype(jnp.float32) - 8) / levels

  return encode, decode


def _reduce_scatter_gather(flat, workers: int, encode, decode, key):
  """The encoded mean of `flat` over the workers, (workers, chunk codes): every worker sends each other
  worker that worker's chunk (all-to-all), each averages the chunks it got in fp32 and all-gathers its
  encoded mean. The bytes of a ring all-reduce of the encoded vector; no sum is taken in the narrow type."""
  length = flat.shape[0]
  chunk = 8 * math.ceil(length / (8 * workers))  # whole bytes of 1-bit codes
  chunks = jnp.pad(flat, (0, chunk * workers - length)).reshape(workers, chunk)
  sent = encode(chunks, jax.random.fold_in(key, 0))
  got = jax.lax.all_to_all(sent, AXIS, 0, 0, tiled=False)  # (workers, ...): everyone's copy of my chunk
  mine = decode(got).mean(axis=0)
  return jax.lax.all_gather(encode(mine[None], jax.random.fold_in(key, 1))[0], AXIS)
