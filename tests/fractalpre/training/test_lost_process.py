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

# A process waits (as in a collective), fails (`leave(clean=False)`, exit 3, like a traceback) or finishes
# (`leave(clean=True)`, exit 0) at the given second after every process is watching.
PROCESS = """
import sys, time
from fractalpre.training import distributed
distributed.KEEPALIVE = (1, 1, 2)
address, n, i, plan = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
distributed.watch(distributed.rendezvous(address, n, i, 60), i)
print("watching", flush=True)
action, _, at = plan.partition("@")
time.sleep(float(at or 60))
distributed.leave(clean=action == "finish")
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
  outs = [p.communicate(timeout=timeout) for p in procs]
  return [p.returncode for p in procs], [err.strip() for _, err in outs]


@pytest.mark.parametrize("lost", [2, 0])
def test_a_process_that_fails_alone_stops_every_other_one_naming_it(lost):
  """Process 0 passes the name on: process 1, which talks to process 0 only, names the lost process too."""
  plans = ["wait"] * 3
  plans[lost] = "fail@0.5"
  start = time.monotonic()
  codes, errs = _ends(_job(plans))
  assert codes == [3 if i == lost else 1 for i in range(3)], errs
  for i in set(range(3)) - {lost}:
    assert errs[i] == LINE.format(lost=lost, me=i), errs
  assert time.monotonic() - start < 30  # not 60: the watchers ended the waiting processes


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
    codes, errs = _ends(procs)
    assert codes[0] == 1 and errs[0] == LINE.format(lost=1, me=0), errs
    assert took < 20  # keepalive (1 s idle, 2 probes 1 s apart) and the grace, not the 60 s wait
  finally:
    for ns in names:
      subprocess.run(["ip", "netns", "del", ns], capture_output=True)
