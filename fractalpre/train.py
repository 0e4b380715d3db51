"""The trainer's command line, flags only: `python -m fractalpre.train --config NAME[:arg] --workdir DIR
[--restart] [--distributed] [--config.k=v]`. A user's mistake is one line and exit 2; the training itself
is `fractalpre.training.train_and_evaluate`, which tests call directly."""
from __future__ import annotations

import logging
import os
import sys

import jax

from fractalpre import util
from fractalpre.training import STOPS, NonFiniteLoss, OutOfSpace, Preempted, distributed, train_and_evaluate
from fractalpre.training.config_files import config_path, config_spec, unknown_override
from fractalpre.util import cpu_allocator


def _parse_flags(argv: list[str], prog: str):
  """absl's flags parsed from argv, or one line and exit 2 for a bad flag, config, argument or value. A
  packaged config's name is replaced by its file before absl reads it."""
  from absl import flags
  try:
    spec = config_spec(argv[1:])
    if spec is not None:
      argv = [a.replace(spec, config_path(spec)) if a in (spec, f"--config={spec}") else a for a in argv]
    error = unknown_override(argv[1:], prog)
    if error:
      raise SystemExit(util.fail(error))
    flags.FLAGS(argv)
  except util.UsageError as e:
    raise SystemExit(util.fail(f"{prog}: error: {e}")) from None
  except flags.Error as e:
    raise SystemExit(util.fail(f"{prog}: error: {str(e).splitlines()[0]}")) from None
  return flags.FLAGS


def run(train_fn=train_and_evaluate, prog: str = "fractalpre.train", argv: list[str] | None = None):
  """The command line of a trainer: `--config FILE[:arg] --workdir DIR [--restart] [--distributed]
  [--config.k=v]`. A user's mistake (bad flag, config, value, folder) is one line and exit 2; a diverged
  run is one line and exit 1, Ctrl-C one line and exit 130, a preemption (SIGTERM) one line and exit 143;
  anything else is a bug and keeps its traceback."""
  from absl import flags
  from absl import logging as absl_logging
  from ml_collections import config_flags
  config_flags.DEFINE_config_file("config", None, "config file, e.g. configs/pretrain_1pfrac_vit.py:runlocal",
                                  lock_config=True)
  flags.DEFINE_string("workdir", None, "checkpoints, metrics.jsonl, config.json and TensorBoard events go here")
  flags.DEFINE_bool("restart", False, "the workdir holds a run of another config: move it to "
                    "WORKDIR/replaced_runs/N and start over")
  flags.DEFINE_bool("distributed", False, "join a multi-process job (jax.distributed.initialize): several hosts, "
                    "or one process per GPU; the cluster's environment is detected (Slurm, Open MPI, TPU pods, "
                    "Kubernetes) unless the three flags below give it")
  flags.DEFINE_string("coordinator_address", None, "with --distributed: HOST:PORT of process 0")
  flags.DEFINE_integer("num_processes", None, "with --distributed: how many processes the job has")
  flags.DEFINE_integer("process_id", None, "with --distributed: this process's index, 0 .. num_processes-1")
  flags.DEFINE_float("coordinator_timeout", 300.0, "with --distributed: seconds to wait for every process to "
                     "join before giving up in one line naming the ones that did not")
  flags.mark_flags_as_required(["config", "workdir"])
  FLAGS = _parse_flags(sys.argv if argv is None else argv, prog)
  # a real command line (not a test's call): CPU runs re-execute under tcmalloc
  hint = cpu_allocator.preload() if argv is None else None
  absl_logging.use_absl_handler()
  absl_logging.set_verbosity(absl_logging.WARNING)  # orbax logs every save at INFO
  # orbax logs each process's arrival at a preemption sync point as a warning: the run's own line says it
  logging.getLogger("absl").addFilter(lambda record: "Reached preemption sync point" not in record.getMessage())
  given = [f"--{k}" for k in ("coordinator_address", "num_processes", "process_id") if FLAGS[k].value is not None]
  if given and not FLAGS.distributed:
    raise SystemExit(util.fail(f"{prog}: error: {', '.join(given)} need --distributed"))
  try:
    with util.one_line_exits(prog, STOPS, resumes=True):
      if FLAGS.distributed:
        distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id,
                               FLAGS.coordinator_timeout)
      try:
        distributed.check_agreement(FLAGS.config)
        metrics = train_fn(FLAGS.config, FLAGS.workdir, restart=FLAGS.restart)
      except BaseException as e:
        # goodbye only where every process stops at the same step (a diverged loss, a preemption), not on a
        # second Ctrl-C (this process alone); pause first only for an error that a lost peer may have caused
        ends = (util.UsageError, OutOfSpace, KeyboardInterrupt, SystemExit, *(kind for kind, _ in STOPS))
        distributed.leave(clean=isinstance(e, (NonFiniteLoss, Preempted)), settle=not isinstance(e, ends))
        raise
      distributed.leave(clean=True)
  except OutOfSpace as e:
    print(f"{prog}: error: {e}", file=sys.stderr, flush=True)
    os._exit(1)  # orbax's writer threads would each print their failure again while Python shuts down
  if jax.process_index() == 0:
    print(" ".join(f"{k}={v:.4f}" if v is not None else f"{k}=null" for k, v in metrics.items()))
  if hint:
    print(hint, file=sys.stderr)


if __name__ == "__main__":
  run()
