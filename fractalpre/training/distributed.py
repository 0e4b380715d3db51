"""Starting a multi-process (multi-host) JAX job: `jax.distributed.initialize` with the pieces a user gives
(`--coordinator_address`, `--num_processes`, `--process_id`) and JAX's detection of the rest (Slurm,
Open MPI 4, TPU pods, Kubernetes), gloo collectives for CPU jobs, one line when nothing can be found or the
coordinator's address cannot work, and the check that every process runs what process 0 runs."""
from __future__ import annotations

import json
import socket

import jax

from fractalpre.util import UsageError, cpu_allocator, provenance

FLAGS_HINT = ("pass --coordinator_address HOST:PORT (process 0's address, reachable from every process), "
              "--num_processes N and --process_id I (0 .. N-1, a different one per process)")


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> None:
  """Joins this process to the job; what is None is detected by JAX from the cluster's environment."""
  if not cpu_allocator.accelerator_expected():
    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU processes talk over TCP
  try:
    jax.distributed.initialize(**plan(coordinator_address, num_processes, process_id))
  except ValueError as e:  # JAX's words for "no cluster detected and not enough given"
    raise UsageError(f"--distributed: {' '.join(str(e).split())} No cluster environment (Slurm, Open MPI, TPU, "
                     f"Kubernetes) was detected: {FLAGS_HINT}") from None


def plan(coordinator_address: str | None, num_processes: int | None, process_id: int | None) -> dict:
  """The arguments of `jax.distributed.initialize`, the flags checked. Given all three, JAX's cluster
  detection is off, so that the process drives every device it sees: which GPUs those are is the launcher's
  decision (CUDA_VISIBLE_DEVICES; scripts/slurm/train.sbatch), where JAX's Slurm detection would take only
  device SLURM_LOCALID of them."""
  if num_processes is not None and num_processes < 1:
    raise UsageError(f"--num_processes must be >= 1, got {num_processes}")
  if process_id is not None and not 0 <= process_id < (num_processes or process_id + 1):
    raise UsageError(f"--process_id must be in [0, {num_processes - 1}], got {process_id}")
  if coordinator_address is not None:
    check_address(coordinator_address, bind=process_id == 0)
  given = None not in (coordinator_address, num_processes, process_id)
  return dict(coordinator_address=coordinator_address, num_processes=num_processes, process_id=process_id,
              **({"cluster_detection_method": "deactivate"} if given else {}))


def check_address(address: str, bind: bool) -> None:
  """HOST:PORT with a port in 1..65535 (gRPC crashes the process on anything else); with `bind` (process 0,
  which will listen there), a port that is free on this host."""
  host, _, port = address.rpartition(":")
  if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
    raise UsageError(f"--coordinator_address must be HOST:PORT with a port in 1..65535, got {address!r}")
  if bind:
    with socket.socket(socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET) as s:
      s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
      try:
        s.bind(("", int(port)))
      except OSError as e:
        raise UsageError(f"--coordinator_address {address}: port {port} is taken on this host ({e.strerror}); "
                         "process 0 listens there: choose a free port (another job may hold this one)") from None


AGREE_TIMEOUT_MS = 300_000


def check_agreement(config) -> None:
  """Every process of the job must run process 0's resolved config with process 0's package version: each
  publishes its own through JAX's coordination service (its key-value store) and reads every other's, so a
  difference is the same one line on every process, naming the first differing key."""
  if jax.process_count() == 1:
    return
  from jax._src import distributed as jax_distributed
  client = jax_distributed.global_state.client
  mine = provenance.fingerprint(json.loads(config.to_json()))
  client.key_value_set(f"fractalpre/agree/{jax.process_index()}", json.dumps(mine))
  reference = json.loads(client.blocking_key_value_get("fractalpre/agree/0", AGREE_TIMEOUT_MS))
  for i in range(1, jax.process_count()):
    theirs = json.loads(client.blocking_key_value_get(f"fractalpre/agree/{i}", AGREE_TIMEOUT_MS))
    differences = provenance.differences(reference, theirs)
    if differences:
      raise UsageError(f"process {i} was started with another config or package version than process 0 "
                       f"({differences[0]}{f'; and {len(differences) - 1} more' if len(differences) > 1 else ''}); "
                       "start every process of the job with the same command and installation")
