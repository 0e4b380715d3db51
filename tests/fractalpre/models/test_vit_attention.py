"""The ViT's attention through jax.nn.dot_product_attention (cuDNN's fused kernel on GPUs) computes what
Flax's einsum-softmax attention computed, muP's 1/d_head scale included."""
import jax
import jax.numpy as jnp
import pytest

from fractalpre.models import get_model, vit

# Measured on CPU in fp32 (vit_cpu, random weights of std 0.3): 3.8e-7 relative, 4.5e-7 with muP.
TOLERANCE = 1e-5


@pytest.mark.parametrize("kwargs", [{}, {"mup_base_width": 48}, {"pool": "gap"}])
def test_fused_attention_gives_the_einsum_attention_s_logits(kwargs, monkeypatch):
  model = get_model("vit_cpu", 10, **kwargs)
  images = jax.random.uniform(jax.random.key(0), (4, 32, 32, 3))
  leaves, tree = jax.tree.flatten(model.init(jax.random.key(1), images))
  variables = jax.tree.unflatten(tree, [0.3 * jax.random.normal(jax.random.key(i), x.shape)
                                        for i, x in enumerate(leaves)])
  fused = model.apply(variables, images)
  monkeypatch.setattr(vit, "attention", vit.einsum_attention)
  reference = model.apply(variables, images)
  assert float(jnp.max(jnp.abs(fused - reference)) / jnp.max(jnp.abs(reference))) < TOLERANCE
  assert float(jnp.max(jnp.abs(reference))) > 0.1  # logits of a size that would show a wrong scale
