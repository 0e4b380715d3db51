"""muP's coordinate check (Yang et al., Tensor Programs V): how much the logits move after a few steps,
width by width; under muP the spread stays flat as the model widens (scripts/mup_coord_check.py)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from fractalpre.optim.mup import init_params


def logit_update_spread(make_model, widths, batch, tx_for, steps: int = 3, params_for=None) -> dict[int, float]:
  """The coordinate check: for each width, the std over the batch's logits of their change after `steps`
  optimizer steps on the same batch (cross-entropy). `make_model(width)` builds the model, `tx_for(width,
  params)` its optimizer, and `params_for(width)` its initial parameters (default: `init_params`)."""
  images, labels = batch
  out = {}
  for width in widths:
    model = make_model(width)
    params = params_for(width) if params_for else init_params(model, images)
    tx = tx_for(width, params)
    opt_state = tx.init(params)

    def loss_fn(p):
      logits = model.apply({"params": p}, images)
      return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    @jax.jit
    def run(p, s):
      before = model.apply({"params": p}, images)
      for _ in range(steps):
        updates, s = tx.update(jax.grad(loss_fn)(p), s, p)
        p = optax.apply_updates(p, updates)
      return jnp.std(model.apply({"params": p}, images) - before)

    out[width] = float(run(params, opt_state))
  return out
