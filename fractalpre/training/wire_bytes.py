"""The bytes a compiled step sends, read from its optimized HLO: every collective (each operand of a
combined one), its replica groups, whether it sits in a conditional's branch (sync steps only), and the bytes
one device sends for it under the usual bandwidth-optimal algorithms. The trainer records the mean per step
in its metrics (`comm_bytes_per_step`); the ledger and the wire harness (scripts/) put it beside a cost model
and the kernel's byte counters."""
from __future__ import annotations

import math
import re

import numpy as np

DTYPE_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2, "s32": 4, "u32": 4,
               "f32": 4, "s64": 8, "u64": 8, "f64": 8}
COLLECTIVES = ("all-reduce", "all-gather", "all-to-all", "reduce-scatter", "collective-permute")

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


def step_bytes(ops: list[dict], conditionals: int = 1) -> dict:
  """Bytes one device sends on a non-sync and on a sync step, in all and per mesh axis. A step holds
  `conditionals` conditionals of about equal bytes, one sending on a sync step (Streaming DiLoCo's
  fragments, synced on distinct steps)."""
  out = {"every": 0.0, "sync": 0.0, "axes": {}}
  for o in ops:
    sent = sent_bytes(o["op"], o["bytes"], o["group"])
    axis = out["axes"].setdefault(o["axis"], {"every": 0.0, "sync": 0.0})
    if o["when"] == "sync":
      sent /= conditionals
    for when in ("every", "sync") if o["when"] == "every" else ("sync",):
      out[when] += sent
      axis[when] += sent
  return out


def per_step(row: dict, sync_share: float, axis: str | None = None) -> float:
  """The mean bytes per step of a `step_bytes` row (of one mesh axis), averaged over the sync schedule:
  `sync_share` is the fraction of steps that are sync steps."""
  part = row if axis is None else row["axes"].get(axis, {"every": 0.0, "sync": 0.0})
  return part["every"] + sync_share * (part["sync"] - part["every"])


def node_link(row: dict, sync_share: float, local: int) -> float:
  """Mean bytes per step over one node's link, the node `local` consecutive devices: each of them sends
  its share across the nodes (the `node` axis); a ring over all devices (or a flat mesh's) leaves the node
  once; traffic within the node stays off it."""
  return max(local, 1) * per_step(row, sync_share, "node") + sum(per_step(row, sync_share, a) for a in ("all", "data"))
