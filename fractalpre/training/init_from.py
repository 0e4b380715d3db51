"""Loads pretrained parameters into a new model: a new head, position embeddings resampled when the
token grid changes, and every other parameter copied (shapes must match)."""
from __future__ import annotations

import logging

import flax
import numpy as np

from fractalpre.models.vit import resample_posemb

FRESH = ("head",)


def merge_pretrained(init_params: dict, pretrained: dict) -> dict:
  """init_params with each parameter replaced by its pretrained value, except the head (kept fresh)."""
  init, loaded = flax.traverse_util.flatten_dict(init_params), flax.traverse_util.flatten_dict(pretrained)
  out, missing = {}, []
  for key, value in init.items():
    if key[0] in FRESH:
      out[key] = value
    elif key not in loaded:
      missing.append("/".join(key))
      out[key] = value
    elif key[-1] == "pos_embedding" and loaded[key].shape != value.shape:
      out[key] = resample_posemb(np.asarray(loaded[key]), value.shape[1]).astype(value.dtype)
    elif loaded[key].shape != value.shape:
      raise ValueError(f"pretrained {'/'.join(key)} has shape {loaded[key].shape}, the model wants {value.shape}")
    else:
      out[key] = np.asarray(loaded[key]).astype(value.dtype)
  if missing:
    logging.warning("not in the pretrained checkpoint, left at init: %s", ", ".join(missing))
  return flax.traverse_util.unflatten_dict(out)
