"""Starting a multi-process (multi-host) JAX job: `jax.distributed.initialize` with the pieces a user gives
(`--coordinator_address`, `--num_processes`, `--process_id`) and JAX's detection of the rest (Slurm,
Open MPI 4, TPU pods, Kubernetes), gloo collectives for CPU jobs, and one line when nothing can be found."""
from __future__ import annotations

import jax

from fractalpre.util import UsageError, cpu_allocator

FLAGS_HINT = ("pass --coordinator_address HOST:PORT (process 0's address, reachable from every process), "
              "--num_processes N and --process_id I (0 .. N-1, a different one per process)")


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> None:
  """Joins this process to the job; what is None is detected by JAX from the cluster's environment."""
  if num_processes is not None and num_processes < 1:
    raise UsageError(f"--num_processes must be >= 1, got {num_processes}")
  if process_id is not None and not 0 <= process_id < (num_processes or process_id + 1):
    raise UsageError(f"--process_id must be in [0, {num_processes - 1}], got {process_id}")
  if coordinator_address is not None and ":" not in coordinator_address:
    raise UsageError(f"--coordinator_address must be HOST:PORT, got {coordinator_address!r}")
  if not cpu_allocator.accelerator_expected():
    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU processes talk over TCP
  try:
    jax.distributed.initialize(coordinator_address, num_processes, process_id)
  except ValueError as e:  # JAX's words for "no cluster detected and not enough given"
    raise UsageError(f"--distributed: {' '.join(str(e).split())} No cluster environment (Slurm, Open MPI, TPU, "
                     f"Kubernetes) was detected: {FLAGS_HINT}") from None
