"""IVON (Shen et al., "Variational Learning is Effective for Large Deep Networks", ICML 2024): Adam-like
steps on the mean of a diagonal Gaussian posterior, whose precision is a running curvature estimate; each
gradient is taken at a weight sample (`ivon_sample`), one per update."""
from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax


class IvonState(NamedTuple):
  count: jnp.ndarray  # steps taken
  momentum: Any  # g: averaged gradient
  hess: Any  # h: diagonal curvature estimate (the posterior precision is ess (h + weight_decay))
  noise: Any  # theta - m of the last `ivon_sample`, which the next `update` uses


def ivon(learning_rate, ess: float, hess_init: float = 1.0, b1: float = 0.9, b2: float = 0.99999,
         weight_decay: float = 1e-4, clip_radius: float = float("inf")) -> optax.GradientTransformation:
  """IVON, the variational learning rule of Shen et al., "Variational Learning is Effective for Large
  Deep Networks" (ICML 2024), as an optax transformation.

  Use: `theta, state = ivon_sample(key, params, state)`, take the gradient at theta, then
  `updates, state = tx.update(grads, state, params)` (params = the mean m). Under data parallelism,
  average the gradients over devices before `update` (the noise is the same on every device when the
  key is), which averages the noise-weighted gradient too.
  """
  if ess <= 0:
    raise ValueError(f"ess must be > 0, got {ess}")
  if hess_init <= 0:
    raise ValueError(f"hess_init must be > 0, got {hess_init}")
  schedule = learning_rate if callable(learning_rate) else (lambda _: learning_rate)

  def init_fn(params):
    zeros = jax.tree.map(jnp.zeros_like, params)
    return IvonState(jnp.zeros((), jnp.int32), zeros, jax.tree.map(lambda p: jnp.full_like(p, hess_init), params), zeros)

  def update_fn(grads, state, params):
    if params is None:
      raise ValueError("ivon needs params (the mean) in update()")
    count = state.count + 1
    lr = schedule(state.count) * (hess_init + weight_decay)

    def one(g_hat, m, g, h, noise):
      sigma2 = 1.0 / (ess * (h + weight_decay))
      h_hat = g_hat * noise / sigma2
      g = b1 * g + (1 - b1) * g_hat
      h = b2 * h + (1 - b2) * h_hat + 0.5 * (1 - b2) ** 2 * (h - h_hat) ** 2 / (h + weight_decay)
      step = jnp.clip((g / (1 - b1 ** count) + weight_decay * m) / (h + weight_decay), -clip_radius, clip_radius)
      return -lr * step, g, h

    out = jax.tree.map(one, grads, params, state.momentum, state.hess, state.noise)
    pick = lambda i: jax.tree.map(lambda _, o: o[i], grads, out)
    return pick(0), IvonState(count, pick(1), pick(2), state.noise)

  return optax.GradientTransformation(init_fn, update_fn)


def ivon_sample(key, params, opt_state: IvonState, ess: float, weight_decay: float = 1e-4):
  """theta = m + sigma * eps, sigma = 1 / sqrt(ess (h + weight_decay)), eps ~ N(0, 1); returns theta and
  the state holding theta - m for the next update. `ess` and `weight_decay` are the optimizer's."""
  leaves, tree = jax.tree.flatten(params)
  keys = jax.tree.unflatten(tree, list(jax.random.split(key, len(leaves))))
  noise = jax.tree.map(lambda k, p, h: jax.random.normal(k, p.shape, p.dtype) / jnp.sqrt(ess * (h + weight_decay)),
                       keys, params, opt_state.hess)
  return jax.tree.map(jnp.add, params, noise), opt_state._replace(noise=noise)
