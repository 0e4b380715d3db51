"""muP (Tensor Programs V) for ViTs trained with Adam-like optimizers (AdamW, Lion).

`config.mup.base_width = B` (0 = off) makes a ViT of width W behave like its width-B base as W grows:
the readout is multiplied by B / W (the head stays zero-initialised), attention logits are scaled by
1 / d_head instead of 1 / sqrt(d_head), and every update of a hidden weight is scaled by B / W. A weight is
hidden when two or more of its dimensions change between the base and the target model (the shapes decide,
not names): the patch embedding, biases, norms, position embeddings and the head keep the base learning
rate. Because the scale multiplies the whole update, decoupled weight decay scales with it, as in the
`mup` package's MuAdamW. Initialisations already have variance ~ 1 / fan_in (LeCun / Xavier).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def base_model(model, base_width: int):
  """The width-`base_width` model of a ViT: width and MLP width scaled down, heads kept (the head
  dimension shrinks), muP switched on in both."""
  if not hasattr(model, "mup_base_width"):
    raise ValueError(f"mup.base_width is supported for ViT models, got {type(model).__name__}")
  if not 0 < base_width <= model.width or model.mlp_dim * base_width % model.width:
    raise ValueError(f"mup.base_width must be in (0, {model.width}] and divide the MLP width evenly, got {base_width}")
  return model.clone(width=base_width, mlp_dim=model.mlp_dim * base_width // model.width)


def scales_for(model, base_width: int, input_shape) -> dict:
  """Per-parameter update scales of a muP model against its base, from the two models' shapes."""
  shapes = lambda m: jax.eval_shape(lambda: m.init(jax.random.key(0), jnp.zeros(input_shape))["params"])
  return lr_scales(shapes(model), shapes(base_model(model, base_width)), model.width / base_width)


def lr_scales(target_shapes, base_shapes, mult: float):
  """1 / mult for hidden weights (>= 2 dimensions that differ from the base), 1 for the rest."""
  def one(target, base):
    changed = sum(a != b for a, b in zip(target.shape, base.shape))
    return 1.0 / mult if changed >= 2 else 1.0
  return jax.tree.map(one, target_shapes, base_shapes)


def scale_updates(scales) -> optax.GradientTransformation:
  """Multiplies each parameter's update by its fixed scale."""
  def update_fn(updates, state, params=None):
    del params
    return jax.tree.map(lambda u, s: u * jnp.asarray(s, u.dtype), updates, scales), state
  return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)


def init_params(model, images, seed: int = 0):
  return jax.jit(model.init)(jax.random.key(seed), images[:1])["params"]
