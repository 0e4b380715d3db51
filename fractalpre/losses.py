"""Losses. LPCE (1p-frac's locally perturbed cross-entropy) is, as in the released training code, the
L-way cross-entropy over the perturbation classes with soft (smoothed, mixed) targets."""
import jax.numpy as jnp
import optax


def soft_cross_entropy(logits: jnp.ndarray, targets: jnp.ndarray) -> jnp.ndarray:
  """Mean cross-entropy of logits (B, L) against probability targets (B, L)."""
  return optax.softmax_cross_entropy(logits.astype(jnp.float32), targets).mean()
