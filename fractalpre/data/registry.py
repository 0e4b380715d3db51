"""The one registry of sources: `get_source(data_config, split)` builds any source, fractal or real, by its
`data.kind`. A key the config leaves out takes the source's own default (one home for each)."""
from __future__ import annotations

import ml_collections

from fractalpre import fractals
from fractalpre.data.sources import Digits, ImageFolder, LfwSubset, TfdsSource

BUNDLED = {"digits": Digits, "lfw": LfwSubset}
KINDS = ("1p-frac", "fractaldb", "1p-img", *BUNDLED, "folder", "tfds")


def _given(cfg: ml_collections.ConfigDict, **names: str) -> dict:
  """{parameter: cfg[key]} for each `parameter=key` the config sets (not None)."""
  return {param: cfg[key] for param, key in names.items() if cfg.get(key) is not None}


def get_source(cfg: ml_collections.ConfigDict, split: str = "train"):
  """The source a data config names: 1p-frac, fractaldb, 1p-img, digits, lfw, folder or tfds."""
  kind = cfg.kind
  if kind == "1p-frac":
    return fractals.OnePFrac(**_given(cfg, num_classes="num_classes", delta="delta", sigma="sigma",
                                      size="render_size", points="points", seed="seed"))
  if kind == "fractaldb":
    return fractals.FractalDB(**_given(cfg, num_classes="num_classes", instances_per_class="instances_per_class",
                                       size="render_size", points="points", seed="seed"))
  if kind == "1p-img":
    return fractals.SingleImage(**_given(cfg, image="image", num_classes="num_classes", delta="delta",
                                         size="render_size", seed="seed", rendering="rendering"))
  if kind in BUNDLED:
    return BUNDLED[kind](split, cfg.get("labels_per_class") if split == "train" else None,
                         **_given(cfg, seed="seed"))
  if kind == "tfds":
    return TfdsSource(cfg.name, cfg.get(f"{split}_split", split), cfg.get("data_dir"))
  if kind == "folder":
    return ImageFolder(cfg.path, cfg.get(f"{split}_split", split), **_given(cfg, test_fraction="test_fraction",
                                                                            skip_bad="skip_bad_images",
                                                                            max_pixels="max_pixels"))
  raise ValueError(f"data.kind must be one of {KINDS}, got {kind!r}")
