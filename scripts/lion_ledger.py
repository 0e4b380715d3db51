"""Bytes on the wire per step, read from the compiled program, and a link cost model.

  python scripts/lion_ledger.py --model vit_ti16 --devices 8 [--json]

For each comm mode the trainer's sharded step is compiled on `--devices` CPU devices and the collectives
of the optimized HLO are listed (operation, dtype, shape). The bytes each device sends follow the usual
bandwidth-optimal algorithms for a buffer of B bytes over n devices: all-reduce (ring) 2 (n-1)/n B,
all-gather (B = output) (n-1)/n B, all-to-all (n-1)/n B, reduce-scatter (B = input) (n-1)/n B. The
cost model adds a latency alpha per algorithm step (all-reduce 2 (n-1), the others n-1) to bytes /
bandwidth, and predicts communication and end-to-end step time for other device counts from the same
buffers (they do not depend on n, except for padding).
"""
from __future__ import annotations

import json
import math
import re
import sys

import numpy as np

from fractalpre import util

DTYPE_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2, "s32": 4, "u32": 4,
               "f32": 4, "s64": 8, "u64": 8, "f64": 8}
COLLECTIVES = ("all-reduce", "all-gather", "all-to-all", "reduce-scatter", "collective-permute")
LINKS = {"10 Gb/s Ethernet": (10e9 / 8, 25e-6), "100 Gb/s InfiniBand": (100e9 / 8, 3e-6)}  # (bytes/s, latency s)
PARAMS = {"vit_ti16": 5.7e6, "vit_s16": 22.1e6, "vit_b16": 86.6e6}

_OP = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(.*?)\s(" + "|".join(COLLECTIVES) + r")(-start)?\(")
_SHAPE = re.compile(r"(\w+)\[([\d,]*)\]")
_HEADER = re.compile(r"^(ENTRY\s+)?%?([\w.\-]+)\s*\(.*\{\s*$")
_CALLS = re.compile(r"\b(?:calls|to_apply|body|condition)=%?([\w.\-]+)")
_BRANCHES = re.compile(r"\b(?:branch_computations=\{([^}]*)\}|(?:true|false)_computation=%?([\w.\-]+))")
_GROUPS = re.compile(r"replica_groups=(\{\{[\d,{}]*\}\}|\[[\d,]+\]<=\[[\d,]+\](?:T\([\d,]+\))?)")


def _computations(hlo_text: str) -> tuple[dict[str, list[str]], str]:
  """{computation name: its instruction lines} and the entry computation's name."""
  comps, entry, current = {}, None, None
  for line in hlo_text.splitlines():
    header = _HEADER.match(line)
    if header:
      current = header.group(2)
      comps[current] = []
      entry = current if header.group(1) else entry
    elif line.strip() == "}":
      current = None
    elif current is not None:
      comps[current].append(line)
  return comps, entry


def replica_groups(line: str, devices: int) -> list[list[int]]:
  """The device groups of one collective: explicit {{0,1},{2,3}}, or iota [G,S]<=[dims]T(perm)."""
  m = _GROUPS.search(line)
  if not m:
    return [list(range(devices))]
  spec = m.group(1)
  if spec.startswith("{"):
    return [[int(d) for d in g.split(",") if d] for g in re.findall(r"\{([\d,]*)\}", spec[1:-1])] or [list(range(devices))]
  shape, dims, perm = re.fullmatch(r"\[([\d,]+)\]<=\[([\d,]+)\](?:T\(([\d,]+)\))?", spec).groups()
  ids = np.arange(math.prod(int(d) for d in dims.split(","))).reshape([int(d) for d in dims.split(",")])
  if perm:
    ids = ids.transpose([int(p) for p in perm.split(",")])
  return ids.reshape([int(d) for d in shape.split(",")]).tolist()


def collectives(hlo_text: str, devices: int | None = None, local_devices: int = 0) -> list[dict]:
  """[{op, dtype, shape, bytes, group, when, axis, name}] for each collective (each operand of a combined
  one; `name` identifies the instruction) of an optimized HLO module:
  `group` = devices per replica group, `when` = 'sync' inside a conditional's branch (momentum sync runs
  on sync steps only) else 'every', `axis` = 'local' when a group stays within a node of
  `local_devices` consecutive devices, 'node' when it holds one device of each node, else 'all' (and
  'data' on a flat mesh)."""
  comps, entry = _computations(hlo_text)
  out, seen = [], set()

  def visit(comp, in_branch):
    if (comp, in_branch) in seen or comp not in comps:
      return
    seen.add((comp, in_branch))
    for line in comps[comp]:
      for m in _BRANCHES.finditer(line):
        for child in re.findall(r"%?([\w.\-]+)", m.group(1) or m.group(2)):
          visit(child, True)
      for child in _CALLS.findall(line):
        visit(child, in_branch)
      m = _OP.search(line)
      if not m:
        continue
      groups = replica_groups(line, devices or 1)
      axis = "data"
      if local_devices:
        nodes = [{d // local_devices for d in g} for g in groups]
        if all(len(x) == 1 for x in nodes):
          axis = "local"
        elif all(len(x) == len(g) and len({d % local_devices for d in g}) == 1 for x, g in zip(nodes, groups)):
          axis = "node"
        else:
          axis = "all"
      name, types, op, start = m.groups()
      shapes = _SHAPE.findall(types)
      if start and op != "all-reduce":  # async start ops list (operand, result): keep the result
        shapes = shapes[-1:]
      for dtype, dims in shapes:
        if dtype not in DTYPE_BYTES:
          continue
        shape = [int(d) for d in dims.split(",") if d]
        out.append({"op": op, "dtype": dtype, "shape": shape, "bytes": math.prod(shape) * DTYPE_BYTES[dtype],
                    "group": len(groups[0]), "when": "sync" if in_branch else "every", "axis": axis,
                    "name": f"{comp}/{name}"})

  visit(entry, False)
  return out


def sent_bytes(op: str, buffer: int, n: int) -> float:
  """Bytes one device sends for a collective on a buffer of `buffer` bytes over n devices."""
  if n <= 1:
    return 0.0
  return (2 if op == "all-reduce" else 1) * (n - 1) / n * buffer


def cost_key(o: dict) -> str:
  """The kind of collective a measured cost is looked up by: all-reduces of floats and of integers reduce
  at different speeds, the others only move bytes."""
  if o["op"] == "all-reduce":
    return "all-reduce:" + ("float" if o["dtype"][0] in "fb" else "int")
  return o["op"]


def operand_seconds(curve: list, nbytes: float) -> float:
  """Seconds one operand of `nbytes` bytes adds to a collective, from a measured curve [[bytes, seconds]]:
  linear between the points, the smallest point's cost below them, the last segment's slope above."""
  xs, ys = zip(*sorted(curve))
  if nbytes <= xs[-1] or len(xs) == 1:
    return float(np.interp(nbytes, xs, ys))
  return ys[-1] + (nbytes - xs[-1]) * (ys[-1] - ys[-2]) / (xs[-1] - xs[-2])


def comm_seconds(ops: list[dict], n: int, bandwidth: float, latency: float, momentum_sync: str = "",
                 steps: int = 1, measured: dict | None = None) -> float:
  """Communication time per step over n devices, sync-step collectives weighted by how often the schedule
  syncs in `steps` steps: latency + bytes / bandwidth, collectives of one kind and dtype charged latency
  once (XLA on GPU and TPU combines them). With `measured` ({axis: {cost_key: {"alpha": s, "curve":
  [[bytes, s]]}}}, measured on the link) each collective instruction costs alpha and each of its operands
  its own point on the curve: XLA:CPU runs a combined collective as one gloo call per operand."""
  from fractalpre.optim.lion import momentum_sync_steps
  share = len(momentum_sync_steps(momentum_sync, steps)) / steps if momentum_sync else 0.0
  total = 0.0
  for when, weight in (("every", 1.0), ("sync", share)):
    kinds = set()
    for o in ops:
      if o["when"] != when or not weight:
        continue
      if measured:
        cost = measured[o["axis"]][cost_key(o)]
        total += weight * (cost["alpha"] * (o["name"] not in kinds) + operand_seconds(cost["curve"], o["bytes"]))
        kinds.add(o["name"])
        continue
      if (o["op"], o["dtype"]) not in kinds:
        kinds.add((o["op"], o["dtype"]))
        total += weight * (2 * (n - 1) if o["op"] == "all-reduce" else (n - 1)) * latency
      total += weight * sent_bytes(o["op"], o["bytes"], n) / bandwidth
  return total


def feasible(comm: str, n: int) -> bool:
  if comm in ("mavo_int8", "l1_int8", "l0_int8", "linf_int8"):
    return n <= 127
  return not (comm == "mavo_4bit" and n > 15)


def compute_seconds(model: str, batch_per_device: int = 64, tokens: int = 197, flops: float = 150e12) -> float:
  """Assumed compute time of one step: 6 x params x tokens x batch FLOPs at `flops` FLOP/s (an
  H100-class GPU at a realistic utilisation). An assumption, not a measurement."""
  return 6 * PARAMS[model] * tokens * batch_per_device / flops


def step_config(model: str, comm: str, image_size: int = 224, momentum_sync: str = "", hierarchy: str = "flat",
                local_devices: int = 0, batch_per_device: int = 1, model_args: dict | None = None):
  """The trainer config of the step the ledger compiles and the wire harness runs (`model_args` override
  the model variant: width, depth, ...)."""
  import ml_collections
  import jax
  return ml_collections.ConfigDict(dict(
      optim=dict(optimizer="lion", lr=1e-4, weight_decay=0.1, warmup_steps=0), total_steps=1000, seed=0,
      lion=dict(comm=comm, momentum_sync=momentum_sync, sync_pattern="", hierarchy=hierarchy,
                local_devices=local_devices),
      model=dict(name=model, **(model_args or {})), precision="fp32", image_size=image_size,
      batch_size=batch_per_device * jax.device_count()))


def build_step(config, num_classes: int = 1000, mesh=None):
  """(state, jitted step, abstract batch) of the trainer for a `step_config` (on all devices by default)."""
  import jax
  import jax.numpy as jnp

  from fractalpre.training import classification, trainer
  size = config.image_size
  model = classification.model_from_config(config, num_classes)
  state, _, step = trainer.build(config, mesh or trainer.make_mesh(), model, (1, size, size, 3),
                                 classification.classification_loss)
  batch = {"image": jax.ShapeDtypeStruct((config.batch_size, size, size, 3), jnp.float32),
           "label": jax.ShapeDtypeStruct((config.batch_size, num_classes), jnp.float32)}
  return state, step, batch


def compiled_ops(config) -> list[dict]:
  """The collectives of the trainer's compiled step for a `step_config`."""
  import jax
  state, step, batch = build_step(config)
  local = config.lion.local_devices if config.lion.hierarchy == "node" else 0
  return collectives(step.lower(state, batch).compile().as_text(), jax.device_count(), local)


def step_bytes(ops: list[dict]) -> dict:
  """Bytes one device sends on a non-sync and on a sync step, in all and per mesh axis."""
  out = {"every": 0.0, "sync": 0.0, "axes": {}}
  for o in ops:
    sent = sent_bytes(o["op"], o["bytes"], o["group"])
    axis = out["axes"].setdefault(o["axis"], {"every": 0.0, "sync": 0.0})
    for when in ("every", "sync") if o["when"] == "every" else ("sync",):
      out[when] += sent
      axis[when] += sent
  return out


def mean_bytes(row: dict, momentum_sync: str, steps: int) -> float:
  """Bytes per step averaged over `steps` steps of the momentum-sync schedule."""
  from fractalpre.optim.lion import momentum_sync_steps
  syncs = len(momentum_sync_steps(momentum_sync, steps))
  return ((steps - syncs) * row["every"] + syncs * row["sync"]) / steps


def ledger(model_name: str, comms, image_size: int = 224, momentum_sync: str = "", hierarchy: str = "flat",
           local_devices: int = 0, steps: int = 1000) -> dict:
  rows = {}
  for comm in comms:
    sync = "" if comm == "allreduce" else momentum_sync
    ops = compiled_ops(step_config(model_name, comm, image_size, sync, hierarchy, local_devices))
    row = {"ops": ops, **step_bytes(ops)}
    row["sent_bytes"] = mean_bytes(row, sync, steps)
    rows[comm] = row
  return rows


def _axis_text(row):
  if set(row["axes"]) == {"data"}:
    return ""
  return " (" + ", ".join(f"{a} {v['every'] / 1e6:.2f}" for a, v in sorted(row["axes"].items())) + ")"


def main(argv=None):
  parser = util.ArgumentParser(description=__doc__)
  parser.add_argument("--model", default="vit_ti16", help="model registry name (default: %(default)s)")
  parser.add_argument("--devices", type=int, default=8, help="CPU devices to compile for (default: %(default)s)")
  parser.add_argument("--image-size", type=int, default=224, help="input size in pixels (default: %(default)s)")
  parser.add_argument("--momentum-sync", default="", help="'every:K' or 'exp:K' for the vote modes (default: none)")
  parser.add_argument("--steps", type=int, default=1000, help="run length the sync bytes are averaged over "
                      "(default: %(default)s)")
  parser.add_argument("--hierarchy", default="flat", help="'flat' or 'node' (default: %(default)s)")
  parser.add_argument("--local-devices", type=int, default=0, help="devices per node for --hierarchy node")
  parser.add_argument("--json", action="store_true", help="print the rows as JSON")
  args = parser.parse_args(argv)
  if args.devices < 2:
    parser.error(f"--devices must be >= 2, got {args.devices}")
  if args.steps < 1:
    parser.error(f"--steps must be >= 1, got {args.steps}")
  import jax
  jax.config.update("jax_num_cpu_devices", args.devices)
  jax.config.update("jax_platforms", "cpu")
  from fractalpre.optim.lion import COMMS
  try:
    with util.usage_errors("lion_ledger.py: error: "):
      rows = ledger(args.model, COMMS, args.image_size, args.momentum_sync, args.hierarchy, args.local_devices,
                    args.steps)
  except util.UsageError as e:
    parser.exit(2, f"{e}\n")
  base = rows["allreduce"]["sent_bytes"]
  predictions = {}
  for comm, row in rows.items():
    for n in (8, 64, 256):
      for link, (bw, lat) in LINKS.items():
        if not feasible(comm, n):
          continue
        comm_s = comm_seconds(row["ops"], n, bw, lat, args.momentum_sync, args.steps)
        compute = compute_seconds(args.model) if args.model in PARAMS else 0.0
        predictions.setdefault(comm, []).append({"devices": n, "link": link, "comm_ms": 1e3 * comm_s,
                                                 "step_ms": 1e3 * (compute + comm_s)})
  if args.json:
    print(json.dumps({"model": args.model, "devices": args.devices, "rows": rows, "predictions": predictions}))
    return 0
  sync = f", momentum sync {args.momentum_sync} averaged over {args.steps} steps" if args.momentum_sync else ""
  print(f"# {args.model}: bytes each device sends per step, from the compiled program on {args.devices} devices{sync}")
  print("| comm | collectives (op dtype[shape]) | non-sync step MB | sync step MB | mean MB / step | vs fp32 all-reduce |")
  print("|---|---|---:|---:|---:|---:|")
  for comm, row in rows.items():
    every = [o for o in row["ops"] if o["when"] == "every"]
    ops = ", ".join(f"{o['op']} {o['dtype']}[{','.join(map(str, o['shape']))}]" for o in every[:4])
    more = f" (+{len(every) - 4})" if len(every) > 4 else ""
    synced = sum(o["when"] == "sync" for o in row["ops"])
    ops += f"; on sync steps {synced} more" if synced else ""
    print(f"| {comm} | {ops}{more} | {row['every'] / 1e6:.3f}{_axis_text(row)} | {row['sync'] / 1e6:.3f} | "
          f"{row['sent_bytes'] / 1e6:.3f} | {base / max(row['sent_bytes'], 1):.1f}x |")
  if args.model in PARAMS:
    print(f"\n# predicted step time (ms): assumed compute {1e3 * compute_seconds(args.model):.1f} ms "
          f"+ communication, no overlap")
    header = [(n, link) for n in (8, 64, 256) for link in LINKS]
    print("| comm | " + " | ".join(f"n={n} {link.split()[0]} {link.split()[-1]}" for n, link in header) + " |")
    print("|---|" + "---:|" * len(header))
    for comm, preds in predictions.items():
      cell = {(p["devices"], p["link"]): p["step_ms"] for p in preds}
      print(f"| {comm} | " + " | ".join(f"{cell[h]:.1f}" if h in cell else "n/a" for h in header) + " |")
  return 0


if __name__ == "__main__":
  with util.one_line_exits("lion_ledger.py"):
    sys.exit(main())
