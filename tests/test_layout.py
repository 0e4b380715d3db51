"""The package's shape: subpackages by job whose imports point one way, and an install that adds no
top-level `configs` module while the packaged configs still load by name."""
import ast
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Each layer may import the ones listed (and itself); `studies` is imported by nothing in the package.
ALLOWED = {
    "util": set(),
    "fractals": {"util"},
    "data": {"util", "fractals"},
    "models": set(),
    "optim": {"util"},
    "training": {"util", "fractals", "data", "models", "optim", "configs"},  # configs: to find them by name
    "export": {"util", "data", "models", "training"},
    "studies": {"util", "fractals", "data", "models", "optim", "training", "configs"},
    "cli": {"util", "fractals", "export"},
    "train": {"util", "training"},
}


def _imports(path: Path, package: str = "fractalpre") -> set[str]:
  """Every `package.X...` module a file imports (at any depth: lazy imports count too)."""
  out = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == package:
      out.add(node.module)
      if node.module == package:
        out.update(f"{package}.{a.name}" for a in node.names)
    elif isinstance(node, ast.Import):
      out.update(a.name for a in node.names if a.name.split(".")[0] == package)
  return out - {package}


def _layer(module: str) -> str | None:
  """The subpackage or top module a module belongs to; the package's version is the root's, no layer."""
  parts = module.split(".")
  return parts[1] if len(parts) > 1 and parts[1] != "__version__" else None


def test_each_layer_imports_only_the_layers_below_it():
  wrong = []
  for path in sorted((ROOT / "fractalpre").rglob("*.py")):
    own = path.relative_to(ROOT / "fractalpre").parts[0].removesuffix(".py")
    if own in ("__init__", "__main__"):
      continue
    for module in _imports(path):
      layer = _layer(module)
      if layer and layer != own and layer not in ALLOWED[own]:
        wrong.append(f"{path.relative_to(ROOT)} imports {module}")
  assert not wrong, wrong


def test_superres_builds_on_fractalpre_and_never_the_reverse():
  used = {_layer(m) for p in (ROOT / "superres").rglob("*.py") for m in _imports(p)}
  assert used <= {"util", "fractals", "data", "models", "training", "train"}, used  # fractals: the TFDS writer
  reverse = [p for p in (ROOT / "fractalpre").rglob("*.py") if _imports(p, "superres")]
  assert not reverse, reverse


def test_a_handful_of_top_level_modules_and_every_subpackage_says_what_it_holds():
  top = sorted(p.name for p in (ROOT / "fractalpre").glob("*.py"))
  assert len(top) <= 8, top
  for init in list((ROOT / "fractalpre").glob("*/__init__.py")) + list((ROOT / "superres").glob("*/__init__.py")):
    assert ast.get_docstring(ast.parse(init.read_text())), f"{init} has no docstring"


def test_generation_starts_without_jax():
  code = ("import sys, fractalpre.cli, fractalpre.fractals, fractalpre.fractals.writers; "
          "print(sorted(m for m in ('jax', 'tensorflow', 'flax') if m in sys.modules))")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
  assert out.stdout.strip() == "[]"


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
  """The package as a non-editable install: a wheel built from the checkout, unpacked into a folder."""
  tmp = tmp_path_factory.mktemp("wheel")
  subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp),
                  str(ROOT)], check=True, capture_output=True)
  site = tmp / "site"
  with zipfile.ZipFile(next(tmp.glob("fractalpre-*.whl"))) as wheel:
    wheel.extractall(site)
  empty = tmp / "elsewhere"
  empty.mkdir()
  # PYTHONPATH comes before the editable install's finder, so the unpacked wheel is what imports
  env = {**os.environ, "PYTHONPATH": str(site)}
  return site, empty, env


def test_an_install_adds_no_configs_module_and_trains_a_packaged_config_from_any_folder(installed):
  site, empty, env = installed
  assert sorted(p.name for p in site.iterdir() if not p.name.endswith(".dist-info")) == ["fractalpre", "superres"]
  probe = ("import importlib.util, fractalpre; print(fractalpre.__file__); "
           "print(importlib.util.find_spec('configs'))")
  out = subprocess.run([sys.executable, "-c", probe], cwd=empty, env=env, capture_output=True, text=True, check=True)
  assert out.stdout.split() == [str(site / "fractalpre" / "__init__.py"), "None"]
  run = subprocess.run([sys.executable, "-m", "fractalpre.train", "--config", "pretrain_1pfrac_vit:runlocal",
                        "--workdir", "w", "--config.total_steps=2", "--config.log_every=1", "--config.tensorboard=False"],
                       cwd=empty, env={**env, "FRACTALPRE_TCMALLOC": "0"}, capture_output=True, text=True)
  assert run.returncode == 0, run.stderr[-2000:]
  assert "loss=" in run.stdout and (empty / "w" / "checkpoints" / "2").is_dir()
  bad = subprocess.run([sys.executable, "-m", "fractalpre.train", "--config", "no_such_config", "--workdir", "w2"],
                       cwd=empty, env=env, capture_output=True, text=True)
  assert bad.returncode == 2 and "pretrain_1pfrac_vit" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
