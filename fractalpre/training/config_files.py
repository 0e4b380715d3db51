"""Configs by file or by packaged name: `FILE.py[:arg]` or `NAME[:arg]` -> `get_config(arg)` (big_vision's
idiom), and one-line errors for a missing file, a bad argument or an unknown `--config.key` override."""
from __future__ import annotations

from pathlib import Path

import ml_collections

from fractalpre.util import UsageError, usage_errors
from fractalpre.util.provenance import flatten


def config_path(spec: str) -> str:
  """'FILE.py[:arg]' or a packaged config's name ('pretrain_1pfrac_vit[:arg]', from `fractalpre.configs`,
  which installs the repository's configs/ folder) -> 'FILE.py[:arg]'; anything else is a UsageError naming
  the packaged configs."""
  path, colon, arg = spec.partition(":")
  if path.endswith(".py") and Path(path).is_file():  # a file named like a packaged config is not a config
    return spec
  packaged = packaged_configs()
  name = path.removesuffix(".py").removeprefix("configs/")
  if name in packaged:
    return f"{packaged[name]}{colon}{arg}"
  raise UsageError(f"--config {path} is not a file or a packaged config ({', '.join(packaged)})")


def packaged_configs() -> dict[str, Path]:
  """{name: file} of the configs installed with the package (common.py holds helpers, not a run)."""
  import fractalpre.configs
  folder = Path(next(iter(fractalpre.configs.__path__)))
  return {p.stem: p for p in sorted(folder.glob("*.py")) if p.stem not in ("__init__", "common")}


def load_config(spec: str) -> ml_collections.ConfigDict:
  """'configs/x.py:arg' (or a packaged config's name) -> get_config(arg) of that file; a missing file or a
  bad argument is a UsageError."""
  import importlib.util
  path, _, arg = config_path(spec).partition(":")
  module_spec = importlib.util.spec_from_file_location("fractalpre_config", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  with usage_errors(f"--config {spec}: "):
    return module.get_config(arg or None)


def config_spec(argv: list[str]) -> str | None:
  """The value of --config in argv (as `--config=X` or `--config X`), or None."""
  spec = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
  if spec is None and "--config" in argv[:-1]:
    spec = argv[argv.index("--config") + 1]
  return spec


def unknown_override(argv: list[str], prog: str = "fractalpre.train") -> str | None:
  """A one-line error for the first `--config.key` that the config lacks, naming near matches."""
  import difflib
  spec = config_spec(argv)
  if spec is None:
    return None
  keys = set(flatten(load_config(spec)))
  for a in argv:
    if a.startswith("--config."):
      key = a[len("--config."):].split("=", 1)[0]
      if key not in keys:
        near = difflib.get_close_matches(key, sorted(keys), n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(near)}?" if near else f"; known keys: {', '.join(sorted(keys))}"
        return f"{prog}: error: unknown config key {key!r}{hint}"
  return None
