import pytest

from fractalpre import models, optim
from fractalpre.configs import common
from fractalpre.training import config_files


@pytest.mark.parametrize("name,arg", [
    ("pretrain_1pfrac_vit", None), ("pretrain_1pfrac_vit", "runlocal"), ("pretrain_1pfrac_vit", "delta=0.05,sigma=4.0"),
    ("pretrain_fractaldb_vit", None), ("pretrain_fractaldb_vit", "runlocal"),
    ("pretrain_1pimg_vit", None), ("pretrain_1pimg_vit", "runlocal,image=camera,rendering=gray"),
    ("finetune", "dataset=digits,labels_per_class=10"), ("finetune", "dataset=cifar100,data_dir=/data"),
    ("linear_probe", "dataset=digits"),
])
def test_every_config_loads_and_names_known_parts(name, arg):
  config = config_files.load_config(f"configs/{name}.py" + (f":{arg}" if arg else ""))
  assert config.model.name in models.NAMES
  assert config.optim.optimizer in optim.OPTIMIZERS
  assert config.batch_size > 0 and config.total_steps > 0
  for key in ("log_every", "checkpoint_every", "image_size", "seed"):
    assert key in config
  if arg and "runlocal" in arg:
    assert config.image_size == 32 and config.model.name == "vit_cpu"


def test_config_arguments_are_typed_and_checked():
  a = common.parse_arg("runlocal,delta=0.05,classes=64", runlocal=False, delta=0.1, classes=1000)
  assert a.runlocal is True and a.delta == 0.05 and a.classes == 64
  with pytest.raises(ValueError, match="unknown config argument 'detla'"):
    common.parse_arg("detla=1", delta=0.1)
  assert config_files.load_config("configs/linear_probe.py:dataset=digits").linear_probe is True


@pytest.mark.parametrize("name", ["adamw", "lion"])
def test_first_moment_can_be_kept_in_bf16(name):
  import jax
  import jax.numpy as jnp
  import ml_collections
  params = {"w": jnp.ones((3, 4)), "b": jnp.zeros(4)}
  cfg = ml_collections.ConfigDict(dict(optimizer=name, lr=1e-3, warmup_steps=0, mu_dtype="bfloat16"))
  state = optim.make(cfg, 10).init(params)
  mu = [leaf for path, leaf in jax.tree_util.tree_leaves_with_path(state) if "mu" in jax.tree_util.keystr(path)]
  assert mu and all(leaf.dtype == jnp.bfloat16 for leaf in mu)
  cfg.mu_dtype = "float16"
  with pytest.raises(ValueError, match="optim.mu_dtype must be"):
    optim.make(cfg, 10)


def test_a_packaged_config_loads_by_name_from_any_folder(tmp_path, monkeypatch):
  by_path = config_files.load_config("configs/pretrain_1pfrac_vit.py:runlocal,delta=0.2")
  monkeypatch.chdir(tmp_path)  # no configs/ folder here: the installed package's is used
  for spec in ("pretrain_1pfrac_vit:runlocal,delta=0.2", "configs/pretrain_1pfrac_vit.py:runlocal,delta=0.2"):
    assert config_files.load_config(spec).to_dict() == by_path.to_dict()
  with pytest.raises(ValueError, match=r"--config pretrain_nope is not a file or a packaged config \(finetune, "):
    config_files.load_config("pretrain_nope")
  (tmp_path / "finetune").write_text("a user's file that happens to share a packaged config's name")
  assert config_files.load_config("finetune:dataset=lfw").data.kind == "lfw"


def test_generated_dataset_config_needs_a_folder_and_finds_its_format(tmp_path):
  with pytest.raises(ValueError, match="needs :path=FOLDER"):
    config_files.load_config("configs/pretrain_generated_vit.py")
  with pytest.raises(ValueError, match="is not a folder"):
    config_files.load_config(f"configs/pretrain_generated_vit.py:path={tmp_path / 'none'}")
  (tmp_path / "test").mkdir()
  config = config_files.load_config(f"configs/pretrain_generated_vit.py:path={tmp_path},runlocal")
  assert config.data.kind == "folder" and config.eval_every == config.total_steps


def test_an_argument_not_given_is_none_and_any_given_value_is_kept():
  """"Not set" is None, never a number that a user could also mean: a given value equal to the old
  sentinels (300_000 steps with runlocal, lr 2e-4, delta -1) is the value the run gets."""
  a = common.parse_arg(None, steps=int, lr=float, runlocal=False)
  assert a.steps is None and a.lr is None
  a = common.parse_arg("steps=0,lr=none", steps=int, lr=0.1)
  assert a.steps == 0 and a.lr is None
  with pytest.raises(ValueError, match="config argument steps='x' is not a int"):
    common.parse_arg("steps=x", steps=int)
  sr = config_files.load_config("configs/sr_edsr.py:runlocal,steps=300000,lr=0.0002")
  assert sr.total_steps == 300_000 and sr.optim.lr == 2e-4
  assert config_files.load_config("configs/sr_edsr.py:runlocal").total_steps == 300
  default = config_files.load_config("configs/pretrain_1pfrac_vit.py")
  assert (default.data.num_classes, default.data.delta) == (1000, 0.1)
  local = config_files.load_config("configs/pretrain_1pfrac_vit.py:runlocal,classes=1000")
  assert (local.data.num_classes, local.data.delta) == (1000, 0.3)
  assert config_files.load_config("configs/finetune.py:lr=0.5").optim.lr == 0.5
  assert config_files.load_config("configs/finetune.py:optimizer=ivon,ess=none").optim.ess is None


def test_augmentation_settings_have_one_home():
  """The config's keys, the device and host paths' defaults, and the recipe all come from one dataclass."""
  import dataclasses

  from fractalpre.data import augment, host_pipeline
  from fractalpre.data.preprocessing import AugmentSettings
  recipe = AugmentSettings.from_config(common.augment())
  assert (recipe.crop_scale, recipe.hflip, recipe.mixup) == ((0.08, 1.0), 0.5, 0.8)
  assert AugmentSettings.from_config(common.augment(recipe=False)) == AugmentSettings()
  device = augment.DeviceAugment(8, 2)
  host, mix = host_pipeline.Augment(8), host_pipeline.MixBatch(2)
  for field in dataclasses.fields(AugmentSettings):
    default = getattr(AugmentSettings(), field.name)
    assert getattr(device, field.name) == default
    assert getattr(host if hasattr(host, field.name) else mix, field.name) == default
  with pytest.raises(ValueError, match=r"data.augment has unknown keys \['hlfip'\]"):
    AugmentSettings.from_config({"hlfip": 0.5})
