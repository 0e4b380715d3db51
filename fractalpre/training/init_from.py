"""Loads pretrained parameters into a new model: a new head, position embeddings resampled when the
token grid changes, and every other parameter copied. A checkpoint of another architecture (a shape that
differs, or none of the model's parameters) is refused in one line naming both models."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import flax
import numpy as np

from fractalpre.models.vit import resample_posemb
from fractalpre.util import UsageError

FRESH = ("head",)


def checkpoint_model(workdir: str | Path) -> str:
  """The model name in a training workdir's config.json ('an unknown model' when it cannot be read)."""
  for folder in (Path(workdir), Path(workdir).parent):  # a workdir or its checkpoints/ folder
    try:
      return json.loads((folder / "config.json").read_text())["model"]["name"]
    except (OSError, ValueError, KeyError, TypeError):
      continue
  return "an unknown model"


def merge_pretrained(init_params: dict, pretrained: dict, model: str = "the model",
                     source: str = "the checkpoint") -> dict:
  """init_params with each parameter replaced by its pretrained value, except the head (kept fresh).
  `model` and `source` name the two sides in errors ("vit_ti16", "init_from runs/pre (vit_cpu)")."""
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
      raise UsageError(f"{source} does not fit {model}: {'/'.join(key)} has shape {tuple(loaded[key].shape)} "
                       f"there and {tuple(value.shape)} here; use a checkpoint of the same architecture")
    else:
      out[key] = np.asarray(loaded[key]).astype(value.dtype)
  copied = sum(1 for key in init if key[0] not in FRESH and key in loaded)
  if not copied:
    raise UsageError(f"{source} holds none of {model}'s parameters (another architecture): fine-tuning would "
                     "start from scratch; use a checkpoint of the same architecture, or no init_from")
  if missing:
    logging.warning("not in the pretrained checkpoint, left at init: %s", ", ".join(missing))
  return flax.traverse_util.unflatten_dict(out)
