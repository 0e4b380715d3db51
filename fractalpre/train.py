"""The trainer's command line: `python -m fractalpre.train --config configs/NAME.py[:arg] --workdir DIR
[--restart] [--distributed] [--config.k=v]` (config loading, near-match key errors, one-line mistakes)."""
from __future__ import annotations

import sys
from pathlib import Path

import jax
import ml_collections

from fractalpre import cpu_allocator, fileio
from fractalpre.classification import train_and_evaluate
from fractalpre.trainer import NonFiniteLoss


def config_path(spec: str) -> str:
  """'FILE.py[:arg]' or a packaged config's name ('pretrain_1pfrac_vit[:arg]', from the installed `configs`
  package) -> 'FILE.py[:arg]'; anything else is a UsageError naming the packaged configs."""
  import importlib.util
  path, colon, arg = spec.partition(":")
  if Path(path).is_file():
    return spec
  package = importlib.util.find_spec("configs")
  folder = Path(next(iter(package.submodule_search_locations))) if package else None
  packaged = sorted(p.stem for p in folder.glob("*.py") if p.stem not in ("__init__", "common")) if folder else []
  if path.removesuffix(".py").removeprefix("configs/") in packaged:
    return f"{folder / (path.removesuffix('.py').removeprefix('configs/') + '.py')}{colon}{arg}"
  raise fileio.UsageError(f"--config {path} is not a file or a packaged config ({', '.join(packaged)})")


def load_config(spec: str) -> ml_collections.ConfigDict:
  """'configs/x.py:arg' (or a packaged config's name) -> get_config(arg) of that file; a missing file or a
  bad argument is a UsageError."""
  import importlib.util
  path, _, arg = config_path(spec).partition(":")
  module_spec = importlib.util.spec_from_file_location("fractalpre_config", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  with fileio.usage_errors(f"--config {spec}: "):
    return module.get_config(arg or None)


def _config_spec(argv: list[str]) -> str | None:
  spec = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
  if spec is None and "--config" in argv[:-1]:
    spec = argv[argv.index("--config") + 1]
  return spec


def unknown_override(argv: list[str], prog: str = "fractalpre.train") -> str | None:
  """A one-line error for the first `--config.key` that the config lacks, naming near matches."""
  import difflib
  spec = _config_spec(argv)
  if spec is None:
    return None
  keys = set(flatten_keys(load_config(spec)))
  for a in argv:
    if a.startswith("--config."):
      key = a[len("--config."):].split("=", 1)[0]
      if key not in keys:
        near = difflib.get_close_matches(key, sorted(keys), n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(near)}?" if near else f"; known keys: {', '.join(sorted(keys))}"
        return f"{prog}: error: unknown config key {key!r}{hint}"
  return None


def flatten_keys(config, prefix=""):
  for k, v in config.items():
    if isinstance(v, ml_collections.ConfigDict):
      yield from flatten_keys(v, f"{prefix}{k}.")
    else:
      yield f"{prefix}{k}"


def _parse_flags(argv: list[str], prog: str):
  """absl's flags parsed from argv, or one line and exit 2 for a bad flag, config, argument or value. A
  packaged config's name is replaced by its file before absl reads it."""
  from absl import flags
  try:
    spec = _config_spec(argv[1:])
    if spec is not None:
      argv = [a.replace(spec, config_path(spec)) if a in (spec, f"--config={spec}") else a for a in argv]
    error = unknown_override(argv[1:], prog)
    if error:
      raise SystemExit(fileio.fail(error))
    flags.FLAGS(argv)
  except fileio.UsageError as e:
    raise SystemExit(fileio.fail(f"{prog}: error: {e}")) from None
  except flags.Error as e:
    raise SystemExit(fileio.fail(f"{prog}: error: {str(e).splitlines()[0]}")) from None
  return flags.FLAGS


def run(train_fn=train_and_evaluate, prog: str = "fractalpre.train", argv: list[str] | None = None):
  """The command line of a trainer: `--config FILE[:arg] --workdir DIR [--restart] [--distributed]
  [--config.k=v]`. A user's mistake (bad flag, config, value, folder) is one line and exit 2; a diverged
  run is one line and exit 1; anything else is a bug and keeps its traceback."""
  from absl import flags
  from absl import logging as absl_logging
  from ml_collections import config_flags
  config_flags.DEFINE_config_file("config", None, "config file, e.g. configs/pretrain_1pfrac_vit.py:runlocal",
                                  lock_config=True)
  flags.DEFINE_string("workdir", None, "checkpoints, metrics.jsonl, config.json and TensorBoard events go here")
  flags.DEFINE_bool("restart", False, "the workdir holds a run of another config: move it to "
                    "WORKDIR/replaced_runs/N and start over")
  flags.DEFINE_bool("distributed", False, "call jax.distributed.initialize() (multi-host GPU / TPU pods)")
  flags.mark_flags_as_required(["config", "workdir"])
  FLAGS = _parse_flags(sys.argv if argv is None else argv, prog)
  # a real command line (not a test's call): CPU runs re-execute under tcmalloc
  hint = cpu_allocator.preload() if argv is None else None
  absl_logging.use_absl_handler()
  absl_logging.set_verbosity(absl_logging.WARNING)  # orbax logs every save at INFO
  if FLAGS.distributed:
    jax.distributed.initialize()
  try:
    metrics = train_fn(FLAGS.config, FLAGS.workdir, restart=FLAGS.restart)
  except fileio.UsageError as e:
    raise SystemExit(fileio.fail(f"{prog}: error: {e}")) from None
  except NonFiniteLoss as e:
    print(f"{prog}: error: {e}", file=sys.stderr)
    raise SystemExit(1) from None
  if jax.process_index() == 0:
    print(" ".join(f"{k}={v:.4f}" if v is not None else f"{k}=null" for k, v in metrics.items()))
  if hint:
    print(hint, file=sys.stderr)


if __name__ == "__main__":
  run()
