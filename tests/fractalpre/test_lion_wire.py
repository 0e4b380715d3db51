"""Bytes on the wire between two processes in network namespaces, against the ledger (needs root)."""
import json
import subprocess
import sys

import pytest

from tests.fractalpre import scripts

SCRIPT = scripts.SCRIPTS / "lion_wire.py"


def load_wire():
  return scripts.load("lion_wire")


def test_two_processes_send_what_the_ledger_predicts():
  why = load_wire().namespaces_usable()
  if why:
    pytest.skip(why)
  out = subprocess.run([sys.executable, str(SCRIPT), "--processes", "2", "--comms", "allreduce,mavo_1bit",
                        "--momentum-sync", "every:2", "--outer", "2:int8", "--steps", "3", "--warmup", "1", "--json"],
                       capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  modes = {(m["comm"], m["momentum_sync"]): m for m in json.loads(out.stdout)["modes"]}
  for mode in modes.values():
    for kind in ("every", "sync"):
      if kind in mode and mode[kind]["predicted_bytes"]:  # TCP/IP headers, ACKs and gloo's framing: a few percent
        assert 0 <= mode[kind]["overhead"] < 0.15, (mode, kind)
  fp32, vote = modes["allreduce", ""]["every"], modes["mavo_1bit", ""]["every"]
  ratio = fp32["measured_bytes"] / vote["measured_bytes"]
  assert ratio > 20 and abs(ratio / (fp32["predicted_bytes"] / vote["predicted_bytes"]) - 1) < 0.15
  diloco = modes["outer 2:int8", ""]  # one worker a node: a non-sync step sends nothing across the link
  assert diloco["every"]["predicted_bytes"] == 0 and diloco["every"]["measured_bytes"] < 20_000
  assert 0 <= diloco["sync"]["overhead"] < 0.15  # int8 codes, a quarter of the fp32 all-reduce
  assert abs(diloco["sync"]["measured_bytes"] / fp32["measured_bytes"] - 1 / 4) < 0.05
  synced = modes["mavo_1bit", "every:2"]
  # a non-sync step of the sync configuration sends the vote alone, no momentum bytes
  assert synced["every"]["measured_bytes"] < 1.15 * vote["predicted_bytes"]
  assert synced["sync"]["measured_bytes"] > 0.9 * fp32["predicted_bytes"]  # the fp32 momentum mean, once


def test_refuses_to_run_without_root(monkeypatch, capsys):
  wire = load_wire()
  monkeypatch.setattr(wire.os, "geteuid", lambda: 1000)
  with pytest.raises(SystemExit) as exit_info:
    wire.main(["--processes", "2"])
  assert exit_info.value.code == 2
  assert capsys.readouterr().err == "lion_wire.py: error: network namespaces need root (run as root, or with sudo)\n"


@pytest.mark.parametrize("argv,message", [
    (["--processes", "1"], "--processes must be >= 2, got 1"),
    (["--comms", "allreduce,mavo_2bit"], "--comms: unknown mode 'mavo_2bit'"),
    (["--processes", "4", "--hierarchy", "node", "--local-devices", "3"], "--local-devices must divide --processes 4"),
    (["--rate", "fast"], "--rate must look like 1gbit"),
    (["--outer", "50:int4"], "--outer: outer.comm must be one of fp32, bf16, int8, 4bit, 1bit, got 'int4'"),
    (["--outer", "0:int8"], "--outer: outer.every must be an integer >= 1, got 0"),
    (["--outer", "50"], "--outer: an outer mode is H:COMM or H:COMM:F"),
])
def test_bad_arguments_get_one_line(argv, message, capsys):
  with pytest.raises(SystemExit) as exit_info:
    load_wire().main(argv)
  assert exit_info.value.code == 2
  err = capsys.readouterr().err
  assert message in err and err.count("\n") == 1
