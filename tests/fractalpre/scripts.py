"""Import a file of scripts/ as a module, for tests of the scripts' functions."""
import importlib.util
from pathlib import Path

SCRIPTS = Path(__file__).parents[2] / "scripts"


def load(name: str):
  spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module
