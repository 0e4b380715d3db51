"""Lion Cub on a real link: bytes on the wire and step times, measured with real processes.

  sudo python scripts/lion_wire.py --processes 2 [--rate 1gbit] [--comms allreduce,mavo_1bit]
      [--momentum-sync every:2] [--hierarchy node --local-devices 2] [--json]

Starts `--processes` processes, one CPU device each (`jax.distributed`, gloo collectives over TCP), each
in its own network namespace (or, with `--hierarchy node`, `--local-devices` of them per namespace: a
"node"), all joined by a bridge, so every byte a node sends to another crosses its one interface `eth0`.
Each process runs the trainer's compiled step (`lion_ledger.step_config`) on a constant batch and reads
its namespace's kernel byte counters (/sys/class/net/eth0/statistics) around every step. The bytes are
put next to the ledger's prediction, parsed from that same compiled program, for non-sync and sync steps
of the momentum schedule. `--rate` shapes each node's egress with `tc tbf`; then the step times are put
next to the cost model's, computed from the measured compute time of each kind of step (the same step on
one device, no collective, run by all processes at once) and each collective's cost per instruction and
per operand, measured on the same link.
Needs root (network namespaces).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fractalpre import util
from fractalpre.util import cpu_allocator

HERE = Path(__file__).resolve().parent
PREFIX = "fpw"
SUBNET = "10.231.0"
PORT = 47611


# ----------------------------------------------------------------------------------------- network
def _ip(*args, ns=None):
  cmd = (["ip", "netns", "exec", ns] if ns else []) + list(args)
  result = subprocess.run(cmd, capture_output=True, text=True)
  if result.returncode:
    raise RuntimeError(f"{' '.join(cmd)}: {result.stderr.strip()}")
  return result.stdout


def namespaces_usable() -> str | None:
  """None when this process may create network namespaces, else why not."""
  if os.geteuid() != 0:
    return "network namespaces need root (run as root, or with sudo)"
  if subprocess.run(["which", "ip", "tc"], capture_output=True).returncode:
    return "the `ip` and `tc` commands (iproute2) are missing"
  probe = f"{PREFIX}-probe-{os.getpid()}"
  made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
  if made.returncode:
    return f"cannot create a network namespace: {made.stderr.strip()}"
  subprocess.run(["ip", "netns", "del", probe], capture_output=True)
  return None


def _remove_all():
  for line in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.splitlines():
    name = line.split()[0] if line.split() else ""
    if name.startswith(PREFIX + "-"):
      subprocess.run(["ip", "netns", "del", name], capture_output=True)
      subprocess.run(["rm", "-rf", f"/etc/netns/{name}"], capture_output=True)


@contextlib.contextmanager
def network(nodes: int, rate: str | None):
  """`nodes` namespaces fpw-0.. with eth0 at 10.231.0.(i+1), bridged in fpw-sw; egress shaped to `rate`.
  The machine's hostname resolves to the node's own address inside each (gloo binds to it)."""
  _remove_all()
  host = socket.gethostname()
  try:
    _ip("ip", "netns", "add", f"{PREFIX}-sw")
    _ip("ip", "link", "add", "br0", "type", "bridge", ns=f"{PREFIX}-sw")
    _ip("ip", "link", "set", "br0", "up", ns=f"{PREFIX}-sw")
    for i in range(nodes):
      ns = f"{PREFIX}-{i}"
      _ip("ip", "netns", "add", ns)
      _ip("ip", "link", "add", f"{PREFIX}{i}a", "type", "veth", "peer", "name", f"{PREFIX}{i}b")
      _ip("ip", "link", "set", f"{PREFIX}{i}a", "netns", ns)
      _ip("ip", "link", "set", f"{PREFIX}{i}b", "netns", f"{PREFIX}-sw")
      _ip("ip", "link", "set", f"{PREFIX}{i}b", "master", "br0", ns=f"{PREFIX}-sw")
      _ip("ip", "link", "set", f"{PREFIX}{i}b", "up", ns=f"{PREFIX}-sw")
      _ip("ip", "link", "set", f"{PREFIX}{i}a", "name", "eth0", ns=ns)
      _ip("ip", "addr", "add", f"{SUBNET}.{i + 1}/24", "dev", "eth0", ns=ns)
      _ip("ip", "link", "set", "eth0", "up", ns=ns)
      _ip("ip", "link", "set", "lo", "up", ns=ns)
      if rate:
        burst = max(256 * 1024, int(_rate_bits(rate) / 8 / 1000))  # 1 ms of the rate, and whole GSO packets
        _ip("tc", "qdisc", "add", "dev", "eth0", "root", "tbf", "rate", rate, "burst", str(burst), "latency", "200ms",
            ns=ns)
      os.makedirs(f"/etc/netns/{ns}", exist_ok=True)
      Path(f"/etc/netns/{ns}/hosts").write_text(f"127.0.0.1 localhost\n{SUBNET}.{i + 1} {host}\n")
    yield
  finally:
    _remove_all()


def _rate_bits(rate: str) -> float:
  m = re.fullmatch(r"(\d+(?:\.\d+)?)([kmg]?)bit", rate.lower())
  if not m:
    raise ValueError(f"--rate must look like 1gbit, 10gbit or 500mbit, got {rate!r}")
  return float(m.group(1)) * {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}[m.group(2)]


def goodput(nodes: int, nbytes: int = 64 << 20) -> float:
  """Bytes per second that TCP moves from each node to the next (a ring, every link loaded in both
  directions at once, as a collective loads it); the slowest node's rate."""
  script = ("import socket,sys,threading,time\nme,peer,n=sys.argv[1],sys.argv[2],int(sys.argv[3])\n"
            "s=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);s.bind((me,%d));s.listen(1)\n"
            "def rx():\n c,_=s.accept()\n while c.recv(1<<20):pass\n"
            "t=threading.Thread(target=rx);t.start();time.sleep(1)\n"
            "c=socket.create_connection((peer,%d));d=b'x'*(1<<20);a=time.perf_counter()\n"
            "for _ in range(n>>20):c.sendall(d)\n"
            "c.close();t.join();print(n/(time.perf_counter()-a))") % (PORT + 2, PORT + 2)
  procs = [subprocess.Popen(["ip", "netns", "exec", f"{PREFIX}-{i}", sys.executable, "-c", script, f"{SUBNET}.{i + 1}",
                             f"{SUBNET}.{(i + 1) % nodes + 1}", str(nbytes)], stdout=subprocess.PIPE, text=True)
           for i in range(nodes)]
  return min(float(p.communicate()[0]) for p in procs)


def round_trip_seconds(samples: int = 200) -> float:
  """Median TCP round trip of one byte between node 0 and node 1 (the link's latency is half of it)."""
  server = ("import socket;s=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);"
            f"s.bind(('{SUBNET}.2',{PORT + 1}));s.listen(1);c,_=s.accept();"
            "c.setsockopt(socket.IPPROTO_TCP,socket.TCP_NODELAY,1)\nwhile (b:=c.recv(1)):c.sendall(b)")
  client = ("import socket,time,statistics;c=socket.create_connection(('" + SUBNET + f".2',{PORT + 1}));"
            "c.setsockopt(socket.IPPROTO_TCP,socket.TCP_NODELAY,1);t=[]\n"
            f"for _ in range({samples}):\n a=time.perf_counter();c.sendall(b'x');c.recv(1);t.append(time.perf_counter()-a)\n"
            "print(statistics.median(t))")
  srv = subprocess.Popen(["ip", "netns", "exec", f"{PREFIX}-1", sys.executable, "-c", server])
  try:
    for _ in range(50):
      out = subprocess.run(["ip", "netns", "exec", f"{PREFIX}-0", sys.executable, "-c", client],
                           capture_output=True, text=True)
      if out.returncode == 0:
        return float(out.stdout)
      time.sleep(0.1)
    raise RuntimeError(f"latency probe failed: {out.stderr.strip()[-300:]}")
  finally:
    srv.kill()


# ----------------------------------------------------------------------------------------- worker
def _counters(quiet: float = 0.0):
  """(tx_bytes, rx_bytes) of eth0; with `quiet`, once they have not moved for that many seconds (at most
  one second): a step is done when its last receive completes, while its own last sends may still sit in the
  socket buffer and the queue."""
  base = "/sys/class/net/eth0/statistics/"
  read = lambda: tuple(int(Path(base + name).read_text()) for name in ("tx_bytes", "rx_bytes"))
  last, since, deadline = read(), time.perf_counter(), time.perf_counter() + 1.0
  while time.perf_counter() - since < quiet and time.perf_counter() < deadline:
    time.sleep(quiet / 5)
    now = read()
    if now != last:
      last, since = now, time.perf_counter()
  return last


def worker(args) -> None:
  """One process: compile each mode, then time it alone on this device (compute), then run it on the
  cluster with the byte counters read around every step. Prints one JSON line."""
  import jax
  jax.config.update("jax_platforms", "cpu")
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.config.update("jax_num_cpu_devices", 1)
  jax.distributed.initialize(f"{SUBNET}.1:{PORT}", num_processes=args.processes, process_id=args.process_id)
  import numpy as np
  from jax.sharding import NamedSharding
  from jax.sharding import PartitionSpec as P
  sys.path.insert(0, str(HERE))
  import lion_ledger

  from fractalpre.training import trainer
  rows, costs = [], None
  for comm, sync, spec in _modes(args):
    config = lion_ledger.step_config(args.model, comm, args.image_size, sync, args.hierarchy, args.local_devices,
                                     args.batch_per_device, args.model_args, spec, _nodes(args))
    state, step, batch = lion_ledger.build_step(config, args.classes)
    if args.timing and costs is None:
      costs = _collective_costs(jax.tree.leaves(state["opt_state"])[0].sharding.mesh)
    mesh = trainer.make_mesh()
    sharding = NamedSharding(mesh, P("data"))
    rng = np.random.default_rng(args.process_id)
    local = {"image": rng.normal(size=(args.batch_per_device,) + batch["image"].shape[1:]).astype(np.float32),
             "label": np.eye(args.classes, dtype=np.float32)[rng.integers(0, args.classes, args.batch_per_device)]}
    inputs = {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local.items()}
    compute = _compute_seconds(args, comm, sync, spec, local) if args.timing else None
    for _ in range(max(args.warmup, 1)):  # the first call compiles the program whose collectives are read
      state, _ = step(state, inputs)
    jax.block_until_ready(state)
    ops = lion_ledger.collectives(step.compiled.as_text(), jax.device_count(), lion_ledger.devices_per_node(config))
    predicted = lion_ledger.step_bytes(ops, config.outer.fragments if spec else 1)
    start = int(jax.device_get(state["step"]))
    sent, received, seconds = [], [], []
    # back-to-back windows, so a step's last sends that leave after it ends count in the next one; the
    # warm-up's are let out before the first, the last step's waited for after it (no waits in between,
    # which would stagger the processes' steps)
    tx, rx = _counters(quiet=0.05)
    for i in range(args.steps):
      t = time.perf_counter()
      state, metrics = step(state, inputs)
      jax.block_until_ready(state)
      seconds.append(time.perf_counter() - t)
      tx2, rx2 = _counters(quiet=0.05 if i == args.steps - 1 else 0.0)
      sent.append(tx2 - tx)
      received.append(rx2 - rx)
      tx, rx = tx2, rx2
    kinds = _step_kinds(config, start, args.steps)
    rows.append({"comm": f"outer {spec}" if spec else comm, "momentum_sync": sync, "kinds": kinds, "sent": sent,
                 "fragments": config.outer.fragments if spec else 1, "received": received,
                 "seconds": seconds, "compute": compute, "predicted": predicted, "ops": ops,
                 "loss": float(trainer.scalar_metrics(metrics)["loss"])})
  print("RESULT " + json.dumps({"process": args.process_id, "rows": rows, "costs": costs}), flush=True)
  jax.distributed.shutdown()


GRID = ((64, 128), (4 << 10, 64), (64 << 10, 32), (256 << 10, 16), (1 << 20, 8), (4 << 20, 4),
        (16 << 20, 1))  # (bytes, operands)


def _collective_costs(step_mesh, calls: int = 20, repeats: int = 5) -> dict:
  """{axis: {kind: {"alpha": s, "curve": [[bytes, s]]}}} of each collective kind on each axis of the step's
  mesh (and over all of them, 'all'). alpha, the fixed cost of an instruction, from a chain of `calls`
  dependent tiny ones (XLA cannot combine them); the curve, the cost of one operand of a given size, from
  one program of `GRID` operands of that size less alpha per instruction in it, since XLA:CPU runs a
  combined collective as one gloo call per operand and gloo's cost per call depends on the size (its
  reduction, not the link, limits a large fp32 all-reduce above about 1 Gbit/s). Medians of `repeats`.
  Every group of an axis runs at once, as in the step, so a node's devices share its link here too."""
  import jax
  import jax.numpy as jnp
  from jax.sharding import NamedSharding
  from jax.sharding import PartitionSpec as P
  sys.path.insert(0, str(HERE))
  import lion_ledger
  names = tuple(step_mesh.axis_names)
  axes = {"data": ("data",)} if names == ("data",) else {"node": ("node",), "local": ("local",), "all": names}
  everything = NamedSharding(step_mesh, P(names))

  def timed(f, xs):
    jax.block_until_ready(f(*xs))
    times = []
    for _ in range(repeats):
      t = time.perf_counter()
      jax.block_until_ready(f(*xs))
      times.append(time.perf_counter() - t)
    return statistics.median(times)

  def program(fn):
    return jax.jit(jax.shard_map(fn, mesh=step_mesh, in_specs=P(names), out_specs=P(names), check_vma=False))

  out = {}
  for axis, over in axes.items():
    g = math.prod(step_mesh.shape[a] for a in over)
    ops = {"all-reduce:float": (jnp.float32, lambda xs: [y / g for y in jax.lax.psum(xs, over)]),
           "all-reduce:int": (jnp.int8, lambda xs: [y // g for y in jax.lax.psum(xs, over)]),
           "all-to-all": (jnp.uint8, lambda xs: [jax.lax.all_to_all(x, over, 0, 0, tiled=True) for x in xs]),
           "all-gather": (jnp.uint8, lambda xs: jax.lax.all_gather(xs, over, tiled=True))}
    out[axis] = {}
    for kind, (dtype, op) in ops.items():
      gather = kind == "all-gather"
      itemsize = jnp.dtype(dtype).itemsize
      local = lambda m, dtype=dtype: jax.make_array_from_process_local_data(
          everything, jnp.ones(m * jax.local_device_count(), dtype))  # m elements a device

      def chain(x, op=op, k=calls, gather=gather):
        for _ in range(k):
          x = op([x])[0][:x.shape[0]] if gather else op([x])[0]
        return x
      alpha = timed(program(chain), [local(8 * g)]) / calls
      f, curve = program(lambda *xs, op=op: tuple(op(list(xs)))), []
      for size, k in GRID:
        m = size // itemsize // g * g // (g if gather else 1)  # elements a device; all-gather: `size` gathered
        xs = [local(m) for _ in range(k)]  # distinct, so nothing is merged
        instructions = len({o["name"] for o in lion_ledger.collectives(f.lower(*xs).compile().as_text(),
                                                                          jax.device_count())})
        buffer = m * itemsize * (g if gather else 1)
        curve.append([buffer, max(timed(f, xs) - alpha * instructions, 0.0) / k])
      out[axis][kind] = {"alpha": alpha, "curve": curve}
    out[axis]["reduce-scatter"] = out[axis]["all-reduce:float"]
    out[axis]["collective-permute"] = out[axis]["all-to-all"]
  return out


def _compute_seconds(args, comm, sync, spec, local) -> dict:
  """{kind: median step time} of the same mode on this process's device alone (no collective), for
  non-sync ('every') and sync steps of its schedule: what the step costs besides communication, with every
  process computing at the same time. A sync step's branch does work of its own (the momentum mean and the
  conditional's buffers), so the two kinds are timed apart. An outer mode runs as one worker."""
  import jax
  import lion_ledger
  mesh = jax.make_mesh((1,), ("data",), devices=jax.local_devices()[:1], axis_types=(jax.sharding.AxisType.Auto,))
  config = lion_ledger.step_config(args.model, comm, args.image_size, sync, "flat", 0, args.batch_per_device,
                                   args.model_args, spec, 1)
  config.batch_size = args.batch_per_device
  state, step, _ = lion_ledger.build_step(config, args.classes, mesh)
  inputs = jax.device_put(local, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data")))
  times = {"every": [], "sync": []}
  for i, kind in enumerate(_step_kinds(config, 0, args.warmup + args.steps)):
    t = time.perf_counter()
    state, _ = step(state, inputs)
    jax.block_until_ready(state)
    if i >= args.warmup:
      times[kind].append(time.perf_counter() - t)
  return {kind: statistics.median(ts) for kind, ts in times.items() if ts}


def _step_kinds(config, start: int, count: int) -> list[str]:
  """'sync' or 'every' for each of the `count` steps after step `start` of a `step_config`: whether a
  momentum sync or an outer sync runs on it."""
  import lion_ledger
  syncs = set(lion_ledger.sync_steps(config, start + count))
  return ["sync" if start + i + 1 in syncs else "every" for i in range(count)]


def _modes(args):
  """(Lion comm, momentum sync, outer spec) of each mode measured."""
  for comm in args.comms:
    yield comm, "", ""
    if args.momentum_sync and comm != "allreduce":
      yield comm, args.momentum_sync, ""
  for spec in args.outer:
    yield "", "", spec


def _nodes(args) -> int:
  return args.processes // (args.local_devices if args.hierarchy == "node" else 1)


# ----------------------------------------------------------------------------------------- driver
def run(args) -> dict:
  nodes = _nodes(args)
  env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")]),
         "XLA_FLAGS": ""}
  with network(nodes, args.rate):
    rtt = round_trip_seconds()
    link = goodput(nodes) if args.timing else None
    procs = []
    for i in range(args.processes):
      node = i // (args.processes // nodes)
      cmd = ["ip", "netns", "exec", f"{PREFIX}-{node}", sys.executable, str(Path(__file__).resolve()), "--worker",
             "--process-id", str(i), *args.argv]
      logs = (tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+"))  # no pipe to fill up while we wait
      procs.append((subprocess.Popen(cmd, env=env, stdout=logs[0], stderr=logs[1], text=True), logs))
    outs = _wait(procs, args.timeout)
  results = []
  for i, (out, err) in enumerate(outs):
    line = next((l for l in out.splitlines() if l.startswith("RESULT ")), None)
    if line is None:
      raise RuntimeError(f"worker {i} ended without a result:\n{err[-3000:]}")
    results.append(json.loads(line[len("RESULT "):]))
  return summarise(args, results, rtt, link, nodes)


def _wait(procs, timeout):
  """Every worker's (stdout, stderr); the first failure (or the timeout) stops the others."""
  deadline = time.monotonic() + timeout

  def text(f):
    f.seek(0)
    return f.read()

  while any(p.poll() is None for p, _ in procs):
    failed = [(p, logs) for p, logs in procs if p.poll() not in (None, 0)]
    if failed or time.monotonic() > deadline:
      for p, _ in procs:
        p.kill()
      raise RuntimeError("a worker failed:\n" + (text(failed[0][1][1])[-3000:] if failed else "timed out"))
    time.sleep(0.2)
  return [(text(out), text(err)) for _, (out, err) in procs]


def summarise(args, results, rtt, link, nodes) -> dict:
  """Per mode: measured bytes a node sends per non-sync and sync step (mean over nodes; the node's
  processes summed), the ledger's, their ratio; with timing, measured and predicted step times."""
  sys.path.insert(0, str(HERE))
  import lion_ledger
  per_node = args.processes // nodes
  out = {"processes": args.processes, "nodes": nodes, "rate": args.rate, "rtt_ms": 1e3 * rtt, "modes": [],
         "goodput_MBps": link / 1e6 if link else None, "costs": None}
  for m, row in enumerate(results[0]["rows"]):
    entry = {"comm": row["comm"], "momentum_sync": row["momentum_sync"]}
    for kind in ("every", "sync"):
      idx = [i for i, k in enumerate(row["kinds"]) if k == kind]
      if not idx:
        continue
      # node j's interface carries what its processes send to other nodes; processes of a node share eth0
      node_bytes = [statistics.mean(results[j * per_node]["rows"][m]["sent"][i] for i in idx) for j in range(nodes)]
      # a node's devices each send their share of a vote across the nodes; a ring over all devices leaves
      # a node once, from its last device (a sync step of F outer fragments: one fragment's conditional)
      predicted = lion_ledger.node_link(row["predicted"], 1.0 if kind == "sync" else 0.0, per_node)
      measured = statistics.mean(node_bytes)
      entry[kind] = {"measured_bytes": measured, "predicted_bytes": predicted,
                     "overhead": measured / predicted - 1 if predicted else None,
                     "seconds": statistics.median(statistics.median(r["rows"][m]["seconds"][i] for i in idx)
                                                  for r in results)}
    if args.timing:
      for kind in ("every", "sync"):
        if kind in entry:
          entry[kind]["compute_seconds"] = statistics.median(r["rows"][m]["compute"][kind] for r in results)
    out["modes"].append(entry)
  if args.timing:  # the step's collectives on that kind of step, at the costs measured on the link
    costs = {axis: {k: {"alpha": statistics.median(r["costs"][axis][k]["alpha"] for r in results),
                        "curve": [[b, statistics.median(r["costs"][axis][k]["curve"][i][1] for r in results)]
                                  for i, (b, _) in enumerate(c["curve"])]}
                    for k, c in kinds.items()} for axis, kinds in results[0]["costs"].items()}
    out["costs"] = costs
    for entry, row in zip(out["modes"], results[0]["rows"]):
      for kind in ("every", "sync"):
        if kind in entry:
          share = 1.0 / row["fragments"] if kind == "sync" else 0.0  # one fragment's conditional a sync step
          entry[kind]["predicted_seconds"] = entry[kind]["compute_seconds"] + lion_ledger.comm_seconds(
              row["ops"], 0, 0.0, 0.0, share, measured=costs)
  return out


def _size(nbytes: float) -> str:
  for unit, scale in (("MB", 1 << 20), ("KB", 1 << 10)):
    if nbytes >= scale:
      return f"{nbytes / scale:g} {unit}"
  return f"{nbytes:g} B"


def print_table(out) -> None:
  print(f"# {out['processes']} processes in {out['nodes']} network namespaces, link "
        f"{out['rate'] or 'unshaped veth'}, TCP round trip {out['rtt_ms']:.3f} ms")
  if out["costs"]:
    print(f"# measured: TCP goodput {out['goodput_MBps']:.1f} MB/s per node (a raw socket, both directions)")
    for axis, kinds in out["costs"].items():
      print(f"# measured collectives over {axis}: ms an instruction + ms an operand of "
            + ", ".join(_size(b) for b, _ in next(iter(kinds.values()))["curve"]))
      for k, c in kinds.items():
        if k not in ("reduce-scatter", "collective-permute"):
          print(f"#   {k}: {1e3 * c['alpha']:.2f} + " + ", ".join(f"{1e3 * t:.2f}" for _, t in c["curve"]))
  timed = out["costs"] is not None
  base = next((e["every"] for e in out["modes"] if e["comm"] == "allreduce"), None)
  print("| comm | momentum sync | step | MB sent / node, measured | ledger | overhead |"
        + (" step s, measured | predicted | compute s | speed-up over fp32, measured | predicted |" if timed else "")
        + "\n|---|---|---|---:|---:|---:|" + ("---:|" * 5 if timed else ""))
  for e in out["modes"]:
    for kind in ("every", "sync"):
      if kind not in e:
        continue
      k = e[kind]
      over = f"{100 * k['overhead']:+.1f}%" if k["overhead"] is not None else ""
      cells = [e["comm"], e["momentum_sync"] or "none", "sync" if kind == "sync" else "non-sync",
               f"{k['measured_bytes'] / 1e6:.3f}", f"{k['predicted_bytes'] / 1e6:.3f}", over]
      if timed:
        cells += [f"{k['seconds']:.3f}", f"{k['predicted_seconds']:.3f}", f"{k['compute_seconds']:.3f}"]
        cells += ([f"{base['seconds'] / k['seconds']:.2f}x", f"{base['predicted_seconds'] / k['predicted_seconds']:.2f}x"]
                  if base else ["", ""])
      print("| " + " | ".join(cells) + " |")


def parse(argv=None):
  from fractalpre import util
  from fractalpre.optim.lion import COMMS, HIERARCHIES
  parser = util.ArgumentParser(prog="lion_wire.py", description=__doc__)
  parser.add_argument("--processes", type=int, default=2, help="processes, one CPU device each (default: %(default)s)")
  parser.add_argument("--model", default="vit_cpu", help="model registry name (default: %(default)s)")
  parser.add_argument("--model-args", default="", help="model variant overrides, e.g. width=32,depth=1 (integers)")
  parser.add_argument("--image-size", type=int, default=32, help="input size in pixels (default: %(default)s)")
  parser.add_argument("--batch-per-device", type=int, default=2, help="images per process (default: %(default)s)")
  parser.add_argument("--classes", type=int, default=10, help="classifier outputs (default: %(default)s)")
  parser.add_argument("--comms", default=",".join(COMMS), help="comma-separated comm modes (default: all)")
  parser.add_argument("--momentum-sync", default="every:2", help="schedule measured beside 'none' for the vote "
                      "modes, '' for none (default: %(default)s)")
  parser.add_argument("--outer", default="", help="outer (DiLoCo) modes H:COMM or H:COMM:F, comma-separated, one "
                      "worker a node, Lion inside (default: none)")
  parser.add_argument("--hierarchy", default="flat", choices=HIERARCHIES, help="(default: %(default)s)")
  parser.add_argument("--local-devices", type=int, default=0, help="processes per node for --hierarchy node")
  parser.add_argument("--steps", type=int, default=10, help="measured steps per mode (default: %(default)s)")
  parser.add_argument("--warmup", type=int, default=2, help="unmeasured steps first, at least one (it compiles) (default: %(default)s)")
  parser.add_argument("--rate", default=None, help="shape each node's egress with tc tbf, e.g. 1gbit (default: unshaped)")
  parser.add_argument("--timing", action="store_true", help="also time each mode alone (compute) and predict step times")
  parser.add_argument("--timeout", type=int, default=1800, help="seconds before the workers are given up (default: %(default)s)")
  parser.add_argument("--json", action="store_true", help="print the result as JSON")
  parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
  parser.add_argument("--process-id", type=int, default=0, help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  args.argv = [a for a in (argv if argv is not None else sys.argv[1:]) if a != "--worker"]
  args.comms = [c for c in args.comms.split(",") if c]
  args.outer = [spec for spec in args.outer.split(",") if spec]
  sys.path.insert(0, str(HERE))
  import lion_ledger
  from fractalpre.optim import outer
  import ml_collections
  for spec in args.outer:
    try:
      outer.settings(ml_collections.ConfigDict(lion_ledger.parse_outer(spec, 1)), 1)
    except ValueError as e:
      parser.error(f"--outer: {e}")
  try:
    args.model_args = {k: int(v) for k, v in (item.split("=") for item in args.model_args.split(",") if item)}
  except ValueError:
    parser.error(f"--model-args must be KEY=INTEGER pairs separated by commas, got {args.model_args!r}")
  for c in args.comms:
    if c not in COMMS:
      parser.error(f"--comms: unknown mode {c!r}; choose from {', '.join(COMMS)}")
  if args.processes < 2:
    parser.error(f"--processes must be >= 2, got {args.processes}")
  if args.hierarchy == "node" and (args.local_devices < 1 or args.processes % args.local_devices
                                   or args.processes // args.local_devices < 2):
    parser.error(f"--local-devices must divide --processes {args.processes} into at least two nodes, "
                 f"got {args.local_devices}")
  if args.rate:
    try:
      _rate_bits(args.rate)
    except ValueError as e:
      parser.error(str(e))
  if not args.worker and (why := namespaces_usable()):
    parser.error(why)
  return args


def main(argv=None):
  args = parse(argv)
  if args.worker:
    worker(args)
    return 0
  # the workers inherit the allocator: they time the trainer's step as its CPU runs do (with tcmalloc)
  hint = cpu_allocator.preload() if argv is None else None
  out = run(args)
  if args.json:
    print(json.dumps(out))
  else:
    print_table(out)
  if hint:
    print(hint, file=sys.stderr)
  return 0


if __name__ == "__main__":
  with util.one_line_exits("lion_wire.py"):
    sys.exit(main())
