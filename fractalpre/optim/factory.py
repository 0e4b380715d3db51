"""The optimizer a config names, as one optax transformation: adamw, lion (plain or compressed), sgd or
IVON, with warm-up + cosine or step decay, weight decay on matrices only, clipping and muP's per-parameter
update scales."""
from __future__ import annotations

import math

import jax
import ml_collections
import optax

from fractalpre.optim import lion
from fractalpre.optim.ivon import ivon, ivon_sample

OPTIMIZERS = ("adamw", "lion", "sgd", "ivon")


SCHEDULES = ("cosine", "step")


def schedule(cfg: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
  """Linear warm-up from 0 to `lr` over `warmup_steps`, then (`schedule`) cosine decay to
  lr * `min_lr_ratio`, or step decay: times `decay_factor` every `decay_every` steps (EDSR's halving)."""
  kind = cfg.get("schedule", "cosine")
  if kind not in SCHEDULES:
    raise ValueError(f"optim.schedule must be one of {SCHEDULES}, got {kind!r}")
  warmup = min(cfg.get("warmup_steps", 0), max(total_steps - 1, 0))
  if kind == "cosine":
    return optax.warmup_cosine_decay_schedule(0.0, cfg.lr, warmup, max(total_steps, warmup + 1),
                                              end_value=cfg.lr * cfg.get("min_lr_ratio", 0.0))
  every = cfg.get("decay_every", 0)
  if every < 1:
    raise ValueError(f"optim.decay_every must be >= 1 for the step schedule, got {every}")
  decay = optax.exponential_decay(cfg.lr, every, cfg.get("decay_factor", 0.5), staircase=True)
  return optax.join_schedules([optax.linear_schedule(0.0, cfg.lr, warmup), decay], [warmup])


def _decay_mask(params):
  """Weight decay on matrices and kernels only, not on biases, norms, or embeddings of shape (1, n, d)."""
  return jax.tree.map(lambda p: p.ndim >= 2 and p.shape[0] != 1, params)


def make(cfg: ml_collections.ConfigDict, total_steps: int, update_scales=None,
         transport=None) -> optax.GradientTransformation:
  """The optimizer that `cfg.optimizer` names. `update_scales` (a tree like the params) multiplies each final
  update (muP); `transport` (fractalpre.optim.lion.Transport) makes Lion's step compressed-data-parallel."""
  name = cfg.optimizer
  if name not in OPTIMIZERS:
    raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")
  if transport is not None and (name != "lion" or update_scales is not None):
    raise ValueError("lion.comm needs optim.optimizer=lion and does not support mup")
  if not (isinstance(cfg.lr, (int, float)) and math.isfinite(cfg.lr) and cfg.lr >= 0):
    raise ValueError(f"optim.lr must be a finite number >= 0, got {cfg.lr!r}")
  lr = schedule(cfg, total_steps)
  wd = cfg.get("weight_decay", 0.0)
  mu_dtype = cfg.get("mu_dtype") or None  # "bfloat16": the first moment in bf16 (adamw, lion)
  if mu_dtype not in (None, "bfloat16", "float32"):
    raise ValueError(f"optim.mu_dtype must be 'bfloat16' or 'float32', got {mu_dtype!r}")
  if name == "ivon":
    if cfg.get("grad_clip_norm"):
      raise ValueError("ivon takes no optim.grad_clip_norm (use optim.clip_radius)")
    return ivon(lr, cfg.ess, cfg.get("hess_init", 1.0), cfg.get("b1", 0.9), cfg.get("b2", 0.99999), wd,
                cfg.get("clip_radius", float("inf")))
  if name == "adamw":
    opt = optax.adamw(lr, b1=cfg.get("b1", 0.9), b2=cfg.get("b2", 0.999), weight_decay=wd, mask=_decay_mask,
                      mu_dtype=mu_dtype)
  elif name == "lion":  # Lion's chain clips itself, after the gradients are averaged
    opt = lion.lion(lr, cfg.get("b1", 0.9), cfg.get("b2", 0.99), wd, _decay_mask, mu_dtype,
                    cfg.get("grad_clip_norm", 0.0), transport)
  else:
    opt = optax.chain(optax.add_decayed_weights(wd, mask=_decay_mask),
                      optax.sgd(lr, momentum=cfg.get("momentum", 0.9)))
  if cfg.get("grad_clip_norm") and name != "lion":
    opt = optax.chain(optax.clip_by_global_norm(cfg.grad_clip_norm), opt)
  if update_scales is not None:
    if name not in ("adamw", "lion"):
      raise ValueError(f"muP scaling is defined here for Adam-like optimizers (adamw, lion), got {name!r}")
    from fractalpre.optim import mup
    opt = optax.chain(opt, mup.scale_updates(update_scales))
  return opt


def sampler(cfg: ml_collections.ConfigDict):
  """For IVON, `sample(key, params, opt_state) -> (theta, opt_state)` with the config's ess and weight
  decay (the trainer takes each gradient at a sample); None for the other optimizers."""
  if cfg.optimizer != "ivon":
    return None
  return lambda key, params, opt_state: ivon_sample(key, params, opt_state, cfg.ess, cfg.get("weight_decay", 0.0))
