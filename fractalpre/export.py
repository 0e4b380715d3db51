"""A trained checkpoint's weights in timm's names and layouts, for fine-tuning in PyTorch.

`fractalpre export --checkpoint WORKDIR --format timm --out FILE.safetensors` writes the parameters as a
safetensors file that `timm.create_model(architecture, **model_args).load_state_dict(...)` takes as it is,
and FILE.json in the layout of a timm hub `config.json` (architecture, model_args, pretrained_cfg with the
input size and normalisation). Layouts: PyTorch's Linear stores (out, in) and Conv2d (out, in, kh, kw);
Flax stores (in, out) and (kh, kw, in, out). timm fuses q, k and v into one (3 * width, width) matrix.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import flax
import ml_collections
import numpy as np

from fractalpre import util
from fractalpre.util import provenance
from fractalpre.data.preprocessing import MEAN, STD
from fractalpre.models import vit
from fractalpre.training import checkpoints, workdir_claim

# Our registry name -> the timm architecture it is built as (model_args give the exact sizes, so the
# CPU-sized ViT is timm's ViT-Ti class at its own width and depth).
TIMM_NAMES = {"vit_cpu": "vit_tiny_patch16_224", "vit_ti16": "vit_tiny_patch16_224",
              "vit_s16": "vit_small_patch16_224", "vit_b16": "vit_base_patch16_224",
              "resnet18": "resnet18", "resnet50": "resnet50"}
FORMATS = ("timm",)
COMMAND = "fractalpre export"
# What timm builds for each architecture name with no arguments: the hub config's model_args hold only
# what differs from it, so a stock model by name loads the weights when nothing does.
TIMM_STOCK = {name: dict(img_size=224, patch_size=16, embed_dim=width, depth=12, num_heads=heads, mlp_ratio=4.0,
                         class_token=True, global_pool="token")
              for name, width, heads in (("vit_tiny_patch16_224", 192, 3), ("vit_small_patch16_224", 384, 6),
                                         ("vit_base_patch16_224", 768, 12))}


def _linear(tree: dict) -> dict:
  return {"weight": np.asarray(tree["kernel"]).T, "bias": np.asarray(tree["bias"])}


def _conv(kernel) -> np.ndarray:
  return np.ascontiguousarray(np.asarray(kernel).transpose(3, 2, 0, 1))


def _norm(tree: dict) -> dict:
  return {"weight": np.asarray(tree["scale"]), "bias": np.asarray(tree["bias"])}


def vit_state_dict(params: dict, mup_scale: float | None = None, pool: str = "tok") -> dict[str, np.ndarray]:
  """timm VisionTransformer weights in its stock layout. Our position embeddings cover the patches only;
  timm's stock ViT adds one to the class token too, so the class token gets a zero position: the same
  function, and `timm.create_model("vit_tiny_patch16_224")` loads it with strict key and shape checks.
  `mup_scale` = base width / width (muP models; None otherwise) folds muP's forward changes into the weights:
  the readout multiplier into the head and the extra 1 / sqrt(d_head) of the attention logits into the query
  projection (also when base width = width, where the multiplier is 1 but the attention is still over d)."""
  pos = np.asarray(params["pos_embedding"])
  out = {"patch_embed.proj.weight": _conv(params["embedding"]["kernel"]),
         "patch_embed.proj.bias": np.asarray(params["embedding"]["bias"])}
  if pool == "tok":
    out["cls_token"] = np.asarray(params["cls"])
    pos = np.concatenate([np.zeros_like(pos[:, :1]), pos], axis=1)
  out["pos_embed"] = pos
  depth = sum(1 for k in params if k.startswith("block"))
  for i in range(depth):
    block, pre = params[f"block{i}"], f"blocks.{i}."
    attn = block["MultiHeadDotProductAttention_0"]
    width, heads, head_dim = attn["query"]["kernel"].shape
    q_scale = 1.0 / math.sqrt(head_dim) if mup_scale is not None else 1.0
    qkv = [np.asarray(attn[n]["kernel"]).reshape(width, heads * head_dim).T for n in ("query", "key", "value")]
    qkv_bias = [np.asarray(attn[n]["bias"]).reshape(heads * head_dim) for n in ("query", "key", "value")]
    qkv[0], qkv_bias[0] = qkv[0] * q_scale, qkv_bias[0] * q_scale
    out[pre + "attn.qkv.weight"] = np.concatenate(qkv, 0)
    out[pre + "attn.qkv.bias"] = np.concatenate(qkv_bias, 0)
    out[pre + "attn.proj.weight"] = np.asarray(attn["out"]["kernel"]).reshape(heads * head_dim, width).T
    out[pre + "attn.proj.bias"] = np.asarray(attn["out"]["bias"])
    for ours, theirs in (("LayerNorm_0", "norm1"), ("LayerNorm_1", "norm2")):
      out.update({f"{pre}{theirs}.{k}": v for k, v in _norm(block[ours]).items()})
    for ours, theirs in (("Dense_1", "fc1"), ("Dense_0", "fc2")):  # MlpBlock creates its output layer first
      out.update({f"{pre}mlp.{theirs}.{k}": v for k, v in _linear(block["MlpBlock_0"][ours]).items()})
  out.update({f"norm.{k}": v for k, v in _norm(params["encoder_norm"]).items()})
  out.update({f"head.{k}": v * (1.0 if mup_scale is None else mup_scale) for k, v in _linear(params["head"]).items()})
  return out


def _batch_norm(params: dict, stats: dict) -> dict:
  return {"weight": np.asarray(params["scale"]), "bias": np.asarray(params["bias"]),
          "running_mean": np.asarray(stats["mean"]), "running_var": np.asarray(stats["var"])}


def resnet_state_dict(params: dict, batch_stats: dict, stages: tuple[int, ...], bottleneck: bool) -> dict:
  """timm ResNet weights: stem conv1/bn1, layerS.B.convK/bnK, the projection shortcut as downsample.0/.1."""
  if np.asarray(params["stem"]["kernel"]).shape[:2] != (7, 7):
    raise util.UsageError("timm's ResNets start with a 7x7 stride-2 stem and a max-pool; this checkpoint was "
                            "trained at 64 px or less with the 3x3 CIFAR-style stem, which they do not have")
  out = {"conv1.weight": _conv(params["stem"]["kernel"])}
  out.update({f"bn1.{k}": v for k, v in _batch_norm(params["BatchNorm_0"], batch_stats["BatchNorm_0"]).items()})
  convs = 3 if bottleneck else 2
  b = 0
  for s, blocks in enumerate(stages):
    for j in range(blocks):
      p, st, pre = params[f"Block_{b}"], batch_stats[f"Block_{b}"], f"layer{s + 1}.{j}."
      for k in range(convs):
        out[f"{pre}conv{k + 1}.weight"] = _conv(p[f"Conv_{k}"]["kernel"])
        out.update({f"{pre}bn{k + 1}.{n}": v for n, v in _batch_norm(p[f"BatchNorm_{k}"], st[f"BatchNorm_{k}"]).items()})
      if f"Conv_{convs}" in p:
        out[f"{pre}downsample.0.weight"] = _conv(p[f"Conv_{convs}"]["kernel"])
        out.update({f"{pre}downsample.1.{n}": v
                    for n, v in _batch_norm(p[f"BatchNorm_{convs}"], st[f"BatchNorm_{convs}"]).items()})
      b += 1
  out.update({f"fc.{k}": v for k, v in _linear(params["head"]).items()})
  return out


def convert(config: ml_collections.ConfigDict, params: dict, batch_stats: dict) -> tuple[dict, dict]:
  """(state dict, timm hub config) of a checkpoint trained with `config`."""
  from fractalpre.models import RESNET, VIT, resnet
  from fractalpre.training import trainer
  name = config.model.name
  if name not in TIMM_NAMES:
    raise util.UsageError(f"model {name!r} has no timm counterpart; exportable: {sorted(TIMM_NAMES)}")
  num_classes = int(np.asarray(params["head"]["bias"]).shape[0])
  if name in VIT:
    arch = {**vit.VARIANTS[VIT[name]], **{k: v for k, v in config.model.items() if k in vit.VARIANTS["cpu"]}}
    pool = config.model.get("pool", "tok")
    if pool not in ("tok", "gap"):
      raise util.UsageError(f"model.pool {pool!r} has no timm counterpart; exportable: 'tok', 'gap'")
    base = trainer.mup_base_width(config)
    state = vit_state_dict(params, base / arch["width"] if base else None, pool)
    ours = dict(img_size=config.image_size, patch_size=arch["patch"], embed_dim=arch["width"], depth=arch["depth"],
                num_heads=arch["heads"], mlp_ratio=arch["mlp_dim"] / arch["width"], class_token=pool == "tok",
                global_pool="token" if pool == "tok" else "avg")
    stock = TIMM_STOCK[TIMM_NAMES[name]]
    model_args = {k: v for k, v in ours.items() if v != stock[k]}
    if pool == "gap":
      model_args["fc_norm"] = False  # timm normalises after mean pooling by default; we normalise before
  else:
    arch = resnet.VARIANTS[RESNET[name]]
    state = resnet_state_dict(params, batch_stats, arch["stages"], arch["bottleneck"])
    model_args = {}
  hub = {"architecture": TIMM_NAMES[name], "num_classes": num_classes, "model_args": model_args,
         "pretrained_cfg": {"input_size": [3, config.image_size, config.image_size], "interpolation": "bilinear",
                            "crop_pct": 1.0, "mean": [MEAN] * 3, "std": [STD] * 3, "num_classes": num_classes,
                            "source": f"fractalpre {name}"}}
  return {k: np.ascontiguousarray(v, np.float32) for k, v in state.items()}, hub


def export(checkpoint: str | Path, out: str | Path, fmt: str = "timm") -> tuple[Path, Path]:
  """Writes a training workdir's newest loadable checkpoint as OUT.safetensors and OUT.json, or, when OUT
  is a folder (no suffix), as OUT/model.safetensors and OUT/config.json: timm's own layout, which
  `timm.create_model("local-dir:OUT", pretrained=True)` loads. Returns (weights, config) paths."""
  from safetensors.numpy import save
  if fmt not in FORMATS:
    raise util.UsageError(f"--format must be one of {FORMATS}, got {fmt!r}")
  out = Path(out)
  if out.suffix == ".safetensors":
    weights_path, meta = out, out.with_suffix(".json")
    util.check_writable(out, "--out")
  elif out.is_dir() or not out.suffix:
    weights_path, meta = out / "model.safetensors", out / "config.json"
    util.check_folder(out, "--out")
  else:
    raise util.UsageError(f"--out must be FILE.safetensors or a folder, got {out}")
  config_path = Path(checkpoint) / workdir_claim.CONFIG
  if not config_path.is_file():
    raise util.UsageError(f"--checkpoint {checkpoint} holds no {workdir_claim.CONFIG} (give a training workdir)")
  folder = weights_path.parent
  if folder.resolve() in (Path(checkpoint).resolve(), (Path(checkpoint) / "checkpoints").resolve()):
    raise util.UsageError(f"--out {out} is inside the training workdir {checkpoint} (its config.json would be "
                          "replaced); export to another folder")
  owner = util.output_folder.owner(folder) if folder.is_dir() else None
  if owner and owner != f"{COMMAND}'s output":
    raise util.UsageError(f"--out {out} would write into {folder}, which holds {owner}; export to another folder")
  try:
    config = ml_collections.ConfigDict(json.loads(config_path.read_text()))
  except (OSError, ValueError) as e:
    reason = " ".join(str(e).split())[:80] or type(e).__name__
    raise util.UsageError(f"--checkpoint {checkpoint}: {workdir_claim.CONFIG} cannot be read ({reason}); it is "
                          "the training run's record of its model: restore it, or export another run") from None
  if "scale" in config:
    raise util.UsageError(f"--checkpoint {checkpoint} is a superres.train run; fractalpre export writes "
                          "classification models (ViT, ResNet) for timm")
  if config.get("linear_probe"):
    raise util.UsageError(f"--checkpoint {checkpoint} is a linear probe, which trains no weights; export the "
                          f"checkpoint it probed ({config.get('init_from') or 'none: it probed a random init'})")
  if "model" not in config or "image_size" not in config:
    raise util.UsageError(f"--checkpoint {checkpoint}: {workdir_claim.CONFIG} names no model and image_size; "
                          "give a classification training workdir")
  step, state = checkpoints.newest_state(checkpoint, "--checkpoint")
  bad = [name for name, value in flax.traverse_util.flatten_dict(dict(state["params"]), sep="/").items()
         if not np.isfinite(np.asarray(value)).all()]
  if bad:
    raise util.UsageError(f"--checkpoint {checkpoint}: step {step} holds non-finite parameters ({bad[0]}"
                          f"{f' and {len(bad) - 1} more' if len(bad) > 1 else ''}): the run diverged, and its "
                          "weights would be useless; export another run")
  tensors, hub = convert(config, flax.core.unfreeze(state["params"]), flax.core.unfreeze(state["batch_stats"] or {}))
  record = provenance.fingerprint({"format": fmt}, {"checkpoint": checkpoints.fingerprint(step, state)})
  metadata = {"format": "pt", "fractalpre": json.dumps(record, sort_keys=True)}
  if out.suffix == ".safetensors":
    folder.mkdir(parents=True, exist_ok=True)
    _write_pair(weights_path, meta, save(tensors, metadata=metadata), hub)
    return weights_path, meta
  with util.OutputFolder(out, COMMAND, record, replace=True) as target:
    target.claim(weights_path.name), target.claim(meta.name)
    target.begin()  # an export of another checkpoint here is replaced whole
    _write_pair(weights_path, meta, save(tensors, metadata=metadata), hub)
    target.finish()
  return weights_path, meta


def _write_pair(weights_path: Path, meta: Path, weights: bytes, hub: dict) -> None:
  """One unit: the old config goes first, so a kill between the renames leaves new weights without a config
  (export again), never beside another model's config."""
  meta.unlink(missing_ok=True)
  util.write_atomic(weights_path, weights)
  util.write_atomic(meta, json.dumps(hub, indent=1) + "\n")
