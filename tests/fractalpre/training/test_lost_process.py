"""Who stops, with which line, when a process of a job ends early: small processes that meet and watch each
other as the trainer's do (`distributed.rendezvous` and `watch`) but train nothing, so every way of ending
is cheap to try. The trainer's own case (a SIGKILLed process mid-run) is in test_multiprocess_cli.py."""
import os
import socket
import subprocess
import sys
import time
import uuid

import pytest

# A process waits (as in a collective), fails (`leave(clean=False)`, exit 3, like a traceback), lingers
# (fails, then waits 30 s at exit, as JAX's exit handler does at its shutdown barrier for the processes still
# running), settles (fails after `leave`'s settling pause: an error that a lost peer caused) or finishes
# (`leave(clean=True)`, exit 0) at the given second after every process is watching.
PROCESS = """
import atexit, sys, time
from fractalpre.training import distributed
distributed.KEEPALIVE = (1, 1, 2)
address, n, i, plan = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
distributed.watch(distributed.rendezvous(address, n, i, 60), i)
print("watching", flush=True)
action, _, at = plan.partition("@")
time.sleep(float(at or 60))
distributed.leave(clean=action == "finish", settle=action == "settle")
if action == "linger":
  atexit.register(time.sleep, 30)
sys.exit(0 if action == "finish" else 3)
"""
LINE = ("fractalpre.train: error: process {lost} of the job ended before it finished; this process ({me}) stops "
        "too. The last checkpoint is kept: start the job again with the same command to resume")


def _port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _job(plans, host="127.0.0.1", prefixes=None):
  port = _port()
  return [subprocess.Popen([*(prefixes[i] if prefixes else []), sys.executable, "-c", PROCESS, f"{host}:{port}",
                            str(len(plans)), str(i), plan], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
          for i, plan in enumerate(plans)]


def _ends(procs, timeout=60):
  try:
    outs = [p.communicate(timeout=timeout) for p in procs]
  finally:
    for p in procs:
      p.kill()
  return [p.returncode for p in procs], [err.strip() for _, err in outs]


@pytest.mark.parametrize("lost,others", [(2, "wait"), (0, "wait"), (2, "settle@0.6")])
def test_a_process_that_fails_alone_stops_every_other_one_naming_it(lost, others):
  """Also while the failing process lingers at exit, and while the others settle after an error of their
  own (a broken collective); process 0 passes the name on: process 1, which talks to process 0 only, names
  the lost process too."""
  plans = [others] * 3
  plans[lost] = "linger@0.5"
  procs = _job(plans)
  assert all(p.stdout.readline() == "watching\n" for p in procs), _ends(procs, 5)
  start = time.monotonic()  # the plans' clocks start about now
  waiting = [p for i, p in enumerate(procs) if i != lost]
  codes, errs = _ends(waiting)
  assert time.monotonic() - start < 20  # not 30 (the lost one's exit) or 60 (the wait)
  assert codes == [1, 1], errs
  for i, err in zip(sorted(set(range(3)) - {lost}), errs):
    assert err == LINE.format(lost=lost, me=i), errs
  procs[lost].kill()


def test_the_same_error_on_every_process_and_a_finished_job_alarm_nobody():
  symmetric, finished = _job(["fail@1"] * 3), _job(["finish@2", "finish@0.2", "finish@3"])
  assert _ends(symmetric) == ([3, 3, 3], ["", "", ""])
  assert _ends(finished) == ([0, 0, 0], ["", "", ""])


def test_a_node_that_vanishes_without_closing_its_connection_is_noticed_by_tcp_keepalive():
  """Two network namespaces joined by a veth pair; process 1's end of the link goes down, so nothing it
  sends or answers arrives (a power cut or a partition): process 0 hears no FIN or reset, only silence."""
  if os.geteuid() != 0 or subprocess.run(["which", "ip"], capture_output=True).returncode:
    pytest.skip("network namespaces need root and iproute2")
  tag = uuid.uuid4().hex[:6]
  names = [f"fpl{tag}a", f"fpl{tag}b"]

  def ip(*args, ns=None):
    subprocess.run([*(["ip", "netns", "exec", ns] if ns else []), "ip", *args], check=True, capture_output=True)

  try:
    if subprocess.run(["ip", "netns", "add", names[0]], capture_output=True).returncode:
      pytest.skip("this machine does not let the tests create network namespaces")
    ip("netns", "add", names[1])
    ip("link", "add", "v0", "netns", names[0], "type", "veth", "peer", "name", "v1", "netns", names[1])
    for i, ns in enumerate(names):
      ip("addr", "add", f"10.233.7.{i + 1}/24", "dev", f"v{i}", ns=ns)
      ip("link", "set", f"v{i}", "up", ns=ns)
    procs = _job(["wait", "wait"], host="10.233.7.1", prefixes=[["ip", "netns", "exec", ns] for ns in names])
    assert all(p.stdout.readline() == "watching\n" for p in procs), _ends(procs, 5)
    ip("link", "set", "v1", "down", ns=names[1])
    start = time.monotonic()
    procs[0].wait(timeout=40)
    took = time.monotonic() - start
    procs[1].kill()
    codes, errs = _ends(procs)
    assert codes[0] == 1 and errs[0] == LINE.format(lost=1, me=0), errs
    assert took < 20  # keepalive (1 s idle, 2 probes 1 s apart) and the grace, not the 60 s wait
  finally:
    for ns in names:
      subprocess.run(["ip", "netns", "del", ns], capture_output=True)
