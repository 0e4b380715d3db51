"""Import a file of scripts/ as a module, for tests of the scripts' functions."""
import importlib.util
from pathlib import Path

SCRIPTS = Path(__file__).parents[2] / "scripts"


def load(name: str):
  return load_file(SCRIPTS / f"{name}.py")


def load_file(path: Path):
  spec = importlib.util.spec_from_file_location(path.stem, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module
