"""Bytes on the wire per step, read from the compiled program, and a link cost model.

  python scripts/lion_ledger.py --model vit_ti16 --devices 8 [--json]

For each Lion comm mode and each outer (DiLoCo) mode the trainer's sharded step is compiled on `--devices`
CPU devices and the collectives of the optimized HLO are listed (operation, dtype, shape); the bytes of the
steps that sync (momentum, or a fragment's outer step) are averaged over a run of `--steps` steps. The bytes each device sends follow the usual
bandwidth-optimal algorithms for a buffer of B bytes over n devices: all-reduce (ring) 2 (n-1)/n B,
all-gather (B = output) (n-1)/n B, all-to-all (n-1)/n B, reduce-scatter (B = input) (n-1)/n B. The
cost model adds a latency alpha per algorithm step (all-reduce 2 (n-1), the others n-1) to bytes /
bandwidth, and predicts communication and end-to-end step time for other device counts from the same
buffers (they do not depend on n, except for padding).
"""
from __future__ import annotations

import json
import sys

import numpy as np

from fractalpre import util
from fractalpre.training.wire_bytes import collectives, node_link, per_step, sent_bytes, step_bytes  # noqa: F401 (its API)

LINKS = {"10 Gb/s Ethernet": (10e9 / 8, 25e-6), "100 Gb/s InfiniBand": (100e9 / 8, 3e-6)}  # (bytes/s, latency s)
PARAMS = {"vit_ti16": 5.7e6, "vit_s16": 22.1e6, "vit_b16": 86.6e6}


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


def comm_seconds(ops: list[dict], n: int, bandwidth: float, latency: float, share: float = 0.0,
                 measured: dict | None = None) -> float:
  """Communication time per step over n devices, the conditionals' collectives weighted by `share`, the
  fraction of steps on which they send (`sync_share`): latency + bytes / bandwidth, collectives of one kind
  and dtype charged latency once (XLA on GPU and TPU combines them). With `measured` ({axis: {cost_key:
  {"alpha": s, "curve": [[bytes, s]]}}}, measured on the link) each collective instruction costs alpha and
  each of its operands its own point on the curve: XLA:CPU runs a combined collective as one gloo call per
  operand."""
  total = 0.0
  for when, weight in (("every", 1.0), ("sync", share)):
    kinds = set()
    for o in ops:
      if o["when"] != when or not weight:
        continue
      if o["group"] <= 1:  # a group of one device sends nothing
        continue
      if measured:  # costs measured on a flat mesh serve an axis of one device a node (the outer sync's)
        cost = measured.get(o["axis"], measured.get("data"))[cost_key(o)]
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
                local_devices: int = 0, batch_per_device: int = 1, model_args: dict | None = None, outer: str = "",
                workers: int = 2):
  """The trainer config of the step the ledger compiles and the wire harness runs (`model_args` override
  the model variant: width, depth, ...). `outer` ('H:COMM' or 'H:COMM:F'): DiLoCo with `workers` workers
  and plain Lion inside (`comm` is then ignored)."""
  import ml_collections
  import jax
  return ml_collections.ConfigDict(dict(
      optim=dict(optimizer="lion", lr=1e-4, weight_decay=0.1, warmup_steps=0), total_steps=1000, seed=0,
      lion=dict(comm="" if outer else comm, momentum_sync="" if outer else momentum_sync, sync_pattern="",
                hierarchy="flat" if outer else hierarchy, local_devices=0 if outer else local_devices),
      outer=parse_outer(outer, workers), model=dict(name=model, **(model_args or {})), precision="fp32",
      image_size=image_size, batch_size=batch_per_device * jax.device_count()))


OUTER_OPTIONS = {"lr": "lr", "m": "momentum"}


def parse_outer(spec: str, workers: int) -> dict:
  """'H:COMM' or 'H:COMM:F' (F fragments: Streaming DiLoCo), then optionally ':lr=X' and ':m=Y' (the outer
  lr and Nesterov momentum; by default the configs', DiLoCo's) -> the trainer's `outer` config; '' -> off."""
  from fractalpre.configs import common
  if not spec:
    return dict(common.OUTER)
  items = spec.split(":")
  parts = [p for p in items if "=" not in p]
  named = [p.split("=", 1) for p in items[len(parts):] if "=" in p]  # after the positional parts only
  options = dict(named)
  if (len(parts) not in (2, 3) or not all(p.isdigit() for p in parts[:1] + parts[2:]) or
      len(parts) + len(named) < len(items) or len(options) < len(named) or set(options) - set(OUTER_OPTIONS)):
    raise ValueError(f"an outer mode is H:COMM or H:COMM:F, optionally followed by :lr=X and :m=Y (the outer lr and "
                     f"momentum), e.g. 50:int8, 50:4bit:5 or 10:fp32:lr=1:m=0; got {spec!r}")
  try:
    values = {OUTER_OPTIONS[k]: float(v) for k, v in options.items()}
  except ValueError:
    raise ValueError(f"the outer lr and m must be numbers, got {spec!r}") from None
  return {**common.OUTER, "workers": workers, "every": int(parts[0]), "comm": parts[1],
          "fragments": int(parts[2]) if len(parts) == 3 else 1, **values}


def sync_steps(config, last_step: int) -> list[int]:
  """The steps up to `last_step` of a `step_config`'s run on which its conditionals send: momentum syncs,
  or any fragment's outer sync."""
  from fractalpre.optim import lion, outer
  if config.outer.workers:
    s = outer.settings(config.outer, config.outer.workers)
    run = {t for f in range(s.fragments) for t in outer.sync_steps(f, s, config.total_steps)}
    return sorted(t for t in run if t <= last_step)
  return lion.momentum_sync_steps(config.lion.momentum_sync, last_step)


def sync_share(config, steps: int) -> float:
  """The fraction of a run of `steps` steps that syncs (the trainer's `sync_share`)."""
  from fractalpre.training import trainer
  config = config.copy_and_resolve_references()
  config.total_steps = steps
  return trainer.sync_share(config)


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


def devices_per_node(config) -> int:
  """Devices per node of a `step_config`'s mesh (0: flat), for labelling collectives by axis."""
  import jax
  if config.outer.workers:
    return jax.device_count() // config.outer.workers
  return config.lion.local_devices if config.lion.hierarchy == "node" else 0


def compiled_ops(config) -> list[dict]:
  """The collectives of the trainer's compiled step for a `step_config`."""
  import jax
  state, step, batch = build_step(config)
  return collectives(step.lower(state, batch).compile().as_text(), jax.device_count(), devices_per_node(config))


def ledger(model_name: str, comms, image_size: int = 224, momentum_sync: str = "", hierarchy: str = "flat",
           local_devices: int = 0, steps: int = 1000, outers=(), workers: int = 2) -> dict:
  """{label: {ops, every, sync, axes, share, sent_bytes}} for each Lion comm mode and each outer mode."""
  modes = [(comm, step_config(model_name, comm, image_size, "" if comm == "allreduce" else momentum_sync, hierarchy,
                              local_devices)) for comm in comms]
  modes += [(f"outer {spec}", step_config(model_name, "", image_size, outer=spec, workers=workers)) for spec in outers]
  rows = {}
  for label, config in modes:
    ops = compiled_ops(config)
    share = sync_share(config, steps)
    row = {"ops": ops, **step_bytes(ops, config.outer.fragments if config.outer.workers else 1), "share": share}
    row["sent_bytes"] = per_step(row, share)
    row["node_link_bytes"] = node_link(row, share, devices_per_node(config))
    rows[label] = row
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
  parser.add_argument("--outer", default="10:fp32,50:fp32,50:int8,50:1bit,50:4bit:5",
                      help="outer (DiLoCo) modes H:COMM or H:COMM:F, comma-separated, '' for none (default: %(default)s)")
  parser.add_argument("--workers", type=int, default=2, help="outer workers of --devices / --workers devices each "
                      "(default: %(default)s)")
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
                    args.steps, [spec for spec in args.outer.split(",") if spec], args.workers)
  except util.UsageError as e:
    parser.exit(2, f"{e}\n")
  base = rows["allreduce"]["sent_bytes"]
  predictions = {}
  for comm, row in rows.items():
    for n in (8, 64, 256):
      for link, (bw, lat) in LINKS.items():
        if comm.startswith("outer") or not feasible(comm, n):  # the outer sync spans workers, not n devices
          continue
        comm_s = comm_seconds(row["ops"], n, bw, lat, row["share"])
        compute = compute_seconds(args.model) if args.model in PARAMS else 0.0
        predictions.setdefault(comm, []).append({"devices": n, "link": link, "comm_ms": 1e3 * comm_s,
                                                 "step_ms": 1e3 * (compute + comm_s)})
  if args.json:
    print(json.dumps({"model": args.model, "devices": args.devices, "rows": rows, "predictions": predictions}))
    return 0
  sync = f", momentum sync {args.momentum_sync}" if args.momentum_sync else ""
  print(f"# {args.model}: bytes each device sends per step, from the compiled program on {args.devices} devices{sync}; "
        f"outer H:COMM[:F]: {args.workers} workers of {args.devices // args.workers} devices, Lion inside; sync steps "
        f"averaged over {args.steps} steps")
  print("| comm | collectives (op dtype[shape]) | non-sync step MB | sync step MB | mean MB / step | vs fp32 all-reduce "
        "| mean MB / step over a node's link |")
  print("|---|---|---:|---:|---:|---:|---:|")
  for comm, row in rows.items():
    every = [o for o in row["ops"] if o["when"] == "every"]
    ops = ", ".join(f"{o['op']} {o['dtype']}[{','.join(map(str, o['shape']))}]" for o in every[:4])
    more = f" (+{len(every) - 4})" if len(every) > 4 else ""
    synced = sum(o["when"] == "sync" for o in row["ops"])
    ops += f"; on sync steps {synced} more" if synced else ""
    print(f"| {comm} | {ops}{more} | {row['every'] / 1e6:.3f}{_axis_text(row)} | {row['sync'] / 1e6:.3f} | "
          f"{row['sent_bytes'] / 1e6:.3f} | {base / max(row['sent_bytes'], 1):.1f}x | {row['node_link_bytes'] / 1e6:.3f} |")
  if args.model in PARAMS:
    print(f"\n# predicted step time (ms): assumed compute {1e3 * compute_seconds(args.model):.1f} ms "
          f"+ communication, no overlap")
    header = [(n, link) for n in (8, 64, 256) for link in LINKS]
    print("| comm | " + " | ".join(f"n={n} {link.split()[0]} {link.split()[-1]}" for n, link in header) + " |")
    print("|---|" + "---:|" * len(header))
    for comm, preds in predictions.items():  # the outer modes' sync spans workers, not n devices: not modelled
      cell = {(p["devices"], p["link"]): p["step_ms"] for p in preds}
      print(f"| {comm} | " + " | ".join(f"{cell[h]:.1f}" if h in cell else "n/a" for h in header) + " |")
  return 0


if __name__ == "__main__":
  with util.one_line_exits("lion_ledger.py"):
    sys.exit(main())
