"""Starting a multi-process (multi-host) JAX job: `jax.distributed.initialize` with the pieces a user gives
(`--coordinator_address`, `--num_processes`, `--process_id`) and JAX's detection of the rest (Slurm,
Open MPI 4, TPU pods, Kubernetes), gloo collectives for CPU jobs, one line when nothing can be found or the
coordinator's address cannot work, one line when a process of a running job ends before it finishes, and the
check that every process runs what process 0 runs."""
from __future__ import annotations

import json
import os
import select
import socket
import sys
import threading
import time

import jax

from fractalpre.util import UsageError, cpu_allocator, provenance

FLAGS_HINT = ("pass --coordinator_address HOST:PORT (process 0's address, reachable from every process), "
              "--num_processes N and --process_id I (0 .. N-1, a different one per process)")


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, timeout_s: float = 300.0) -> None:
  """Joins this process to the job; what is None is detected by JAX from the cluster's environment. Given all
  three, the processes first meet in `rendezvous` (`timeout_s`), so that a missing peer is one line, and keep
  its connections open for `watch`, so that a process that ends mid-run is one line on the others."""
  if not timeout_s > 0 or timeout_s == float("inf"):
    raise UsageError(f"--coordinator_timeout must be a number of seconds > 0, got {timeout_s}")
  if not cpu_allocator.accelerator_expected():
    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU processes talk over TCP
  kwargs = plan(coordinator_address, num_processes, process_id)
  peers = {}
  if kwargs.get("cluster_detection_method") == "deactivate" and num_processes > 1:
    peers = rendezvous(coordinator_address, num_processes, process_id, timeout_s)
  try:
    jax.distributed.initialize(**kwargs, initialization_timeout=max(int(timeout_s), 1))
  except ValueError as e:  # JAX's words for "no cluster detected and not enough given"
    raise UsageError(f"--distributed: {' '.join(str(e).split())} No cluster environment (Slurm, Open MPI, TPU, "
                     f"Kubernetes) was detected: {FLAGS_HINT}") from None
  if peers:
    watch(peers, process_id)


LOST_EXIT = 1
GRACE_S = 3.0  # a peer that ends with the error this process is about to raise too is not a lost process
KEEPALIVE = (10, 5, 4)  # TCP: probe an idle connection after 10 s, every 5 s; 4 unanswered probes: gone
_peers: dict[int, socket.socket] = {}
_leaving = threading.Event()


def leave(clean: bool, settle: bool = False) -> None:
  """This process is about to end. `clean` (it finished, or stops where every process stops at the same step:
  a preemption, a diverged loss) says goodbye to its peers; otherwise its connections are closed now (the
  process itself may not end for minutes: JAX's exit handler waits for every process at a shutdown
  barrier), and a peer still running stops with the lost line. `settle` (an unexpected error, which a lost
  peer also causes by breaking the collectives this one waits in) first gives `watch` the moment it needs
  to end this process with that line instead of a traceback that hides the cause."""
  if not _peers:
    return
  if settle:
    time.sleep(GRACE_S + 2)
  _leaving.set()
  for conn in _peers.values():
    try:
      if clean:
        conn.sendall(b"bye\n")
      else:
        conn.shutdown(socket.SHUT_RDWR)
        conn.close()
    except OSError:
      pass


def watch(peers: dict[int, socket.socket], process_id: int) -> None:
  """Watches the rendezvous connections (process 0: one to each process; the others: one to process 0) on a
  daemon thread. A connection that closes without a goodbye (`leave`), or goes silent past TCP's keepalive
  probes (a node that vanished), is a lost process: unless this process is ending too within `GRACE_S` (the
  same error everywhere), it prints one line naming the lost process and exits 1, where JAX would abort it
  with a C++ stack once the missed heartbeats are noticed (100 s). Process 0 first passes the name on, so
  every process names the one that was lost."""
  _peers.update(peers)
  for conn in peers.values():
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for option, value in zip(("TCP_KEEPIDLE", "TCP_KEEPINTVL", "TCP_KEEPCNT"), KEEPALIVE):
      if hasattr(socket, option):  # Linux; elsewhere the system's keepalive (hours) applies
        conn.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)

  def stop(lost: int) -> None:
    for conn in (_peers.values() if process_id == 0 else ()):
      try:
        conn.sendall(f"lost {lost}\n".encode())
      except OSError:
        pass
    print(f"\nfractalpre.train: error: process {lost} of the job ended before it finished; this process "
          f"({process_id}) stops too. The last checkpoint is kept: start the job again with the same command to "
          "resume", file=sys.stderr, flush=True)
    os._exit(LOST_EXIT)

  def loop():
    open_, heard = dict(peers), {i: b"" for i in peers}
    while open_ and not _leaving.is_set():
      try:
        ready, _, _ = select.select(list(open_.values()), [], [], 1.0)
      except (OSError, ValueError):  # `leave` closed them
        return
      for conn in ready:
        peer = next(i for i, c in open_.items() if c is conn)
        try:
          data = conn.recv(64)
        except OSError:  # a keepalive that went unanswered, or a reset
          data = b""
        heard[peer] += data  # a message may come in pieces
        if b"bye\n" in heard[peer]:
          del open_[peer]
        elif b"\n" in heard[peer].partition(b"lost ")[2]:  # process 0 names the one that was lost
          if not _leaving.is_set():
            lost = heard[peer].partition(b"lost ")[2].split(b"\n")[0]
            stop(int(lost) if lost.isdigit() else peer)
          return
        elif not data:
          if not _leaving.wait(GRACE_S):
            stop(peer)
          return

  threading.Thread(target=loop, name="fractalpre-peers", daemon=True).start()


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


def rendezvous(address: str, num_processes: int, process_id: int, timeout_s: float) -> dict[int, socket.socket]:
  """Every process reports to process 0 on the port after the coordinator's, and waits for its answer, before
  JAX's own start: that one aborts the process with a C++ stack when a peer never comes. Process 0 answers
  once all have reported; after `timeout_s` it names the processes that never did, in one line, and the
  others end with one line too (the UsageError each raises). Returns the open connections ({peer: socket})
  for `watch`."""
  host, _, port = address.rpartition(":")
  host, port = host.strip("[]"), int(port) + 1
  hint = ("start every process with the same --coordinator_address and --num_processes, check that they reach "
          f"{address}, or wait longer (--coordinator_timeout)")
  deadline = time.monotonic() + timeout_s
  if process_id == 0:
    try:
      server = socket.create_server(("", port), family=socket.AF_INET6 if ":" in host else socket.AF_INET)
    except OSError as e:
      raise UsageError(f"--coordinator_address {address}: port {port} (the one after it, where the processes "
                       f"meet first) is taken on this host ({e.strerror}); choose another port") from None
    peers: dict[int, socket.socket] = {}
    with server:
      while len(peers) < num_processes - 1:
        server.settimeout(max(deadline - time.monotonic(), 0.01))
        try:
          conn, _ = server.accept()
          conn.settimeout(5)
          peers[int(conn.recv(32).decode().strip())] = conn
        except (OSError, ValueError):  # the deadline, or a stranger on the port
          if time.monotonic() >= deadline:
            missing = sorted(set(range(1, num_processes)) - set(peers))
            for conn in peers.values():
              conn.close()
            raise UsageError(f"process{'es' if len(missing) > 1 else ''} {', '.join(map(str, missing))} of "
                             f"{num_processes} never joined within {timeout_s:g} s; {hint}") from None
      for conn in peers.values():
        conn.sendall(b"go\n")
        conn.settimeout(None)
    return peers
  while True:
    try:
      conn = socket.create_connection((host, port), timeout=max(min(deadline - time.monotonic(), 5), 0.01))
      break
    except OSError:
      if time.monotonic() >= deadline:
        raise UsageError(f"process 0 at {address} never answered within {timeout_s:g} s; {hint}") from None
      time.sleep(0.2)
  conn.sendall(f"{process_id}\n".encode())
  conn.settimeout(max(deadline - time.monotonic(), 0.01) + 5)
  try:
    answer = conn.recv(3)
  except OSError:
    answer = b""
  if answer != b"go\n":
    conn.close()
    raise UsageError(f"process 0 at {address} gave up waiting for the other processes (its own line names "
                     f"them); {hint}")
  conn.settimeout(None)
  return {0: conn}


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
