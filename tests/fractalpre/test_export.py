"""Exported weights against an independent NumPy forward pass written from timm's layout."""
import json

import jax
import ml_collections
import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import load_file

from fractalpre import cli, export
from fractalpre.models import get_model
from fractalpre.training import checkpoints, workdir_claim
from fractalpre.training.config_files import load_config
from tests.fractalpre import timm_reference


def _random_variables(model, size, seed=0):
  """Random values in the model's variable shapes (not its init: the zero-initialised head and last
  BatchNorm scales would hide layout mistakes), BatchNorm variances positive."""
  shapes = jax.eval_shape(model.init, jax.random.key(seed), np.zeros((1, size, size, 3), np.float32))
  rng = np.random.default_rng(seed)
  variables = jax.tree.map(lambda s: 0.2 * rng.standard_normal(s.shape).astype(np.float32), shapes)
  if "batch_stats" in variables:
    variables["batch_stats"] = jax.tree.map(lambda v: np.abs(v) + 0.5, variables["batch_stats"])
  return variables


def _config(name, size, **model):
  c = load_config("configs/pretrain_1pfrac_vit.py:runlocal")
  c.image_size = size
  c.model = ml_collections.ConfigDict({"name": name, **model})
  return c


def _compare(config, variables, forward, num_classes=5, seed=1):
  model = get_model(config.model.name, num_classes,
                    **({"mup_base_width": config.mup.base_width} if config.mup.base_width else {}),
                    **{k: v for k, v in config.model.items() if k != "name"})
  images = np.random.default_rng(seed).uniform(-1, 1, (2, config.image_size, config.image_size, 3)).astype(np.float32)
  ours = np.asarray(jax.jit(model.apply)(variables, images))
  sd, hub = export.convert(config, variables["params"], variables.get("batch_stats", {}))
  theirs = forward(images.transpose(0, 3, 1, 2).astype(np.float64), {k: v.astype(np.float64) for k, v in sd.items()})
  assert np.max(np.abs(ours - theirs)) <= 1e-4 * max(1.0, np.max(np.abs(theirs))), np.max(np.abs(ours - theirs))
  assert hub["num_classes"] == num_classes
  return hub


@pytest.mark.parametrize("pool,mup", [("tok", 0), ("gap", 0), ("tok", 48), ("tok", 96)])  # 96: base = width
def test_vit_matches_timm_layout(pool, mup):
  config = _config("vit_cpu", 32, pool=pool)
  config.mup.base_width = mup
  model = get_model("vit_cpu", 5, pool=pool, **({"mup_base_width": mup} if mup else {}))
  hub = _compare(config, _random_variables(model, 32),
                 lambda x, sd: timm_reference.vit(x, sd, 3, "token" if pool == "tok" else "avg"))
  args = hub["model_args"]  # only what differs from the stock vit_tiny_patch16_224
  built = {**export.TIMM_STOCK[hub["architecture"]], **args}
  assert (hub["architecture"], built["patch_size"], built["embed_dim"], built["depth"], built["num_heads"]) == (
      "vit_tiny_patch16_224", 4, 96, 4, 3)
  assert "no_embed_class" not in args and "mlp_ratio" not in args and "num_heads" not in args
  assert built["class_token"] == (pool == "tok")


def test_a_stock_vit_ti16_loads_by_name_with_no_model_args():
  """`timm.create_model("vit_tiny_patch16_224", num_classes=K)` + `load_state_dict(strict=True)`: the
  stock model's parameter names and shapes (pos_embed (1, 197, 192), a position for the class token)."""
  config = _config("vit_ti16", 224)
  variables = _random_variables(get_model("vit_ti16", 7), 224)
  hub = _compare(config, variables, lambda x, sd: timm_reference.vit(x, sd, 3), num_classes=7)
  sd, _ = export.convert(config, variables["params"], {})
  assert hub["architecture"] == "vit_tiny_patch16_224" and hub["model_args"] == {}
  assert sd["pos_embed"].shape == (1, 197, 192) and not sd["pos_embed"][0, 0].any()
  stock = {"cls_token": (1, 1, 192), "patch_embed.proj.weight": (192, 3, 16, 16), "head.weight": (7, 192),
           "blocks.11.attn.qkv.weight": (576, 192), "blocks.11.mlp.fc1.weight": (768, 192), "norm.weight": (192,)}
  assert {k: sd[k].shape for k in stock} == stock and len(sd) == 4 + 12 * 12 + 2 + 2


@pytest.mark.parametrize("name,layers,bottleneck", [("resnet18", (2, 2, 2, 2), False), ("resnet50", (3, 4, 6, 3), True)])
def test_resnet_matches_timm_layout(name, layers, bottleneck):
  config = _config(name, 72)
  hub = _compare(config, _random_variables(get_model(name, 5), 72),
                 lambda x, sd: timm_reference.resnet(x, sd, layers, bottleneck))
  assert hub["architecture"] == name and hub["pretrained_cfg"]["input_size"] == [3, 72, 72]


def test_small_stem_resnet_is_refused():
  config = _config("resnet18", 32)
  variables = _random_variables(get_model("resnet18", 5), 32)
  with pytest.raises(ValueError, match="7x7 stride-2 stem"):
    export.convert(config, variables["params"], variables["batch_stats"])


def _workdir(tmp_path, config, variables):
  run = tmp_path / "run"
  run.mkdir()
  (run / workdir_claim.CONFIG).write_text(config.to_json())
  ckpt = checkpoints.Checkpoints(run)
  ckpt.save(7, {"step": np.asarray(7, np.int32), "params": variables["params"],
                "batch_stats": variables.get("batch_stats", {}), "opt_state": {}}, {"position": 0})
  ckpt.wait()
  ckpt.close()
  return run


def test_export_cli_writes_safetensors_and_hub_config(tmp_path, capsys):
  config = _config("vit_cpu", 32)
  model = get_model("vit_cpu", 5)
  variables = _random_variables(model, 32)
  run = _workdir(tmp_path, config, variables)
  out = tmp_path / "w" / "vit.safetensors"
  assert cli.main(["export", "--checkpoint", str(run), "--format", "timm", "--out", str(out)]) == 0
  sd = load_file(out)
  hub = json.loads(out.with_suffix(".json").read_text())
  assert hub["pretrained_cfg"]["mean"] == [0.5] * 3 and hub["model_args"]["img_size"] == 32
  images = np.random.default_rng(3).uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
  ours = np.asarray(model.apply(variables, images, train=False))
  theirs = timm_reference.vit(images.transpose(0, 3, 1, 2).astype(np.float64), sd, 3)
  np.testing.assert_allclose(theirs, ours, atol=1e-4 * max(1.0, np.abs(ours).max()))
  assert "vit.safetensors" in capsys.readouterr().out


@pytest.mark.parametrize("args,message", [
    (["--out", "x.pt"], "--out must be FILE.safetensors or a folder"),
    (["--format", "onnx"], "invalid choice: 'onnx'"),
    ([], "holds no config.json"),
])
def test_export_cli_bad_input_is_one_line(tmp_path, capsys, args, message):
  flags = {"--checkpoint": str(tmp_path), "--format": "timm", "--out": str(tmp_path / "x.safetensors"),
           **dict(zip(args[::2], args[1::2]))}
  try:
    code = cli.main(["export"] + [t for kv in flags.items() for t in kv])
  except SystemExit as e:  # argparse's own checks exit from inside parse_args
    code = e.code
  err = capsys.readouterr().err.strip()
  assert code == 2 and message in err and "\n" not in err
  assert not list(tmp_path.glob("*.safetensors"))


def test_a_damaged_config_json_is_one_line(tmp_path, capsys):
  run = _workdir(tmp_path, _config("vit_cpu", 32), _random_variables(get_model("vit_cpu", 5), 32))
  (run / "config.json").write_text('{"model": {"name": "vit_cpu"')  # cut mid-write
  code = cli.main(["export", "--checkpoint", str(run), "--out", str(tmp_path / "x.safetensors")])
  err = capsys.readouterr().err.strip()
  assert code == 2 and "\n" not in err and f"--checkpoint {run}: config.json cannot be read (" in err


def test_weights_and_their_config_are_written_as_one_unit(tmp_path, monkeypatch):
  """A kill between the two files leaves new weights without a config, never beside an older model's."""
  from fractalpre import export, util
  out = tmp_path / "m.safetensors"
  (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
  small = _workdir(tmp_path / "a", _config("vit_cpu", 32), _random_variables(get_model("vit_cpu", 5), 32))
  export.export(small, out)
  assert json.loads(out.with_suffix(".json").read_text())["num_classes"] == 5
  other = _workdir(tmp_path / "b", _config("vit_cpu", 32), _random_variables(get_model("vit_cpu", 7), 32))
  real = util.write_atomic

  def killed_before_the_config(path, data):
    if path.suffix == ".json":
      raise KeyboardInterrupt  # the process dies here
    real(path, data)
  monkeypatch.setattr(util, "write_atomic", killed_before_the_config)
  with pytest.raises(KeyboardInterrupt):
    export.export(other, out)
  assert load_file(out)["head.weight"].shape[0] == 7 and not out.with_suffix(".json").exists()


def test_export_to_a_folder_writes_timm_s_local_dir_layout(tmp_path):
  """OUT/model.safetensors + OUT/config.json: what `timm.create_model("local-dir:OUT")` reads."""
  from fractalpre import export
  run = _workdir(tmp_path, _config("vit_cpu", 32), _random_variables(get_model("vit_cpu", 5), 32))
  weights, meta = export.export(run, tmp_path / "timm_model")
  assert (weights, meta) == (tmp_path / "timm_model" / "model.safetensors", tmp_path / "timm_model" / "config.json")
  config = json.loads(meta.read_text())
  assert config["architecture"] == "vit_tiny_patch16_224" and config["num_classes"] == 5
  assert set(config["pretrained_cfg"]) >= {"input_size", "mean", "std", "num_classes"}
  assert load_file(weights)["head.weight"].shape == (5, 96)


def test_export_into_the_training_workdir_is_refused(tmp_path, capsys):
  run = _workdir(tmp_path, _config("vit_cpu", 32), _random_variables(get_model("vit_cpu", 5), 32))
  before = (run / "config.json").read_text()
  for out in (run, run / "w.safetensors"):
    assert cli.main(["export", "--checkpoint", str(run), "--out", str(out)]) == 2
    assert "is inside the training workdir" in capsys.readouterr().err
  assert (run / "config.json").read_text() == before


def test_export_into_another_run_s_workdir_is_refused_and_its_own_folder_is_rewritten(tmp_path, capsys):
  (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
  variables = _random_variables(get_model("vit_cpu", 5), 32)
  run = _workdir(tmp_path / "a", _config("vit_cpu", 32), variables)
  other = _workdir(tmp_path / "b", _config("vit_cpu", 32), variables)
  before = {p: p.read_bytes() for p in other.rglob("*") if p.is_file()}
  for out in (other, other / "w.safetensors"):
    assert cli.main(["export", "--checkpoint", str(run), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert f"would write into {other}, which holds a training workdir; export to another folder" in err, err
  assert {p: p.read_bytes() for p in other.rglob("*") if p.is_file()} == before
  # its own folder: a second export replaces the first, and the weights record what made them
  for _ in range(2):
    assert cli.main(["export", "--checkpoint", str(run), "--out", str(tmp_path / "timm")]) == 0
  with safe_open(tmp_path / "timm" / "model.safetensors", "np") as f:
    record = json.loads(f.metadata()["fractalpre"])
  assert record["inputs"]["checkpoint"].startswith("step 7, parameters ")


def test_runs_that_are_not_classifiers_and_non_finite_weights_are_one_line(tmp_path, capsys):
  variables = _random_variables(get_model("vit_cpu", 5), 32)
  cases = {"sr": ({"scale": 2}, "is a superres.train run; fractalpre export writes classification models"),
           "probe": ({"linear_probe": True, "init_from": "runs/pre"},
                     "is a linear probe, which trains no weights; export the checkpoint it probed (runs/pre)")}
  for name, (extra, message) in cases.items():
    (tmp_path / name).mkdir()
    config = _config("vit_cpu", 32)
    config.update(extra)
    run = _workdir(tmp_path / name, config, variables)
    assert cli.main(["export", "--checkpoint", str(run), "--out", str(tmp_path / f"{name}.safetensors")]) == 2
    err = capsys.readouterr().err.strip()
    assert f"--checkpoint {run} {message}" in err and "\n" not in err, err
  (tmp_path / "nan").mkdir()
  bad = jax.tree.map(lambda x: np.full_like(x, np.nan), variables)
  run = _workdir(tmp_path / "nan", _config("vit_cpu", 32), bad)
  assert cli.main(["export", "--checkpoint", str(run), "--out", str(tmp_path / "nan.safetensors")]) == 2
  err = capsys.readouterr().err.strip()
  assert f"--checkpoint {run}: step 7 holds non-finite parameters (" in err and "\n" not in err
  assert not list(tmp_path.glob("*.safetensors"))
