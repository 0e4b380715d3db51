import pytest

from configs import common
from fractalpre import models, optim, train


@pytest.mark.parametrize("name,arg", [
    ("pretrain_1pfrac_vit", None), ("pretrain_1pfrac_vit", "runlocal"), ("pretrain_1pfrac_vit", "delta=0.05,sigma=4.0"),
    ("pretrain_fractaldb_vit", None), ("pretrain_fractaldb_vit", "runlocal"),
    ("pretrain_1pimg_vit", None), ("pretrain_1pimg_vit", "runlocal,image=camera,rendering=gray"),
    ("finetune", "dataset=digits,labels_per_class=10"), ("finetune", "dataset=cifar100,data_dir=/data"),
    ("linear_probe", "dataset=digits"),
])
def test_every_config_loads_and_names_known_parts(name, arg):
  config = train.load_config(f"configs/{name}.py" + (f":{arg}" if arg else ""))
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
  assert train.load_config("configs/linear_probe.py:dataset=digits").linear_probe is True


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
  by_path = train.load_config("configs/pretrain_1pfrac_vit.py:runlocal,delta=0.2")
  monkeypatch.chdir(tmp_path)  # no configs/ folder here: the installed package's is used
  for spec in ("pretrain_1pfrac_vit:runlocal,delta=0.2", "configs/pretrain_1pfrac_vit.py:runlocal,delta=0.2"):
    assert train.load_config(spec).to_dict() == by_path.to_dict()
  with pytest.raises(ValueError, match=r"--config pretrain_nope is not a file or a packaged config \(finetune, "):
    train.load_config("pretrain_nope")


def test_generated_dataset_config_needs_a_folder_and_finds_its_format(tmp_path):
  with pytest.raises(ValueError, match="needs :path=FOLDER"):
    train.load_config("configs/pretrain_generated_vit.py")
  with pytest.raises(ValueError, match="is not a folder"):
    train.load_config(f"configs/pretrain_generated_vit.py:path={tmp_path / 'none'}")
  (tmp_path / "test").mkdir()
  config = train.load_config(f"configs/pretrain_generated_vit.py:path={tmp_path},runlocal")
  assert config.data.kind == "folder" and config.eval_every == config.total_steps
