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

import argparse
import json
import math
import re
import sys

DTYPE_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2, "s32": 4, "u32": 4,
               "f32": 4, "s64": 8, "u64": 8, "f64": 8}
COLLECTIVES = ("all-reduce", "all-gather", "all-to-all", "reduce-scatter", "collective-permute")
LINKS = {"10 Gb/s Ethernet": (10e9 / 8, 25e-6), "100 Gb/s InfiniBand": (100e9 / 8, 3e-6)}  # (bytes/s, latency s)
PARAMS = {"vit_ti16": 5.7e6, "vit_s16": 22.1e6, "vit_b16": 86.6e6}

_OP = re.compile(r"^\s*(?:ROOT\s+)?%?[\w.\-]+\s*=\s*(.*?)\s(" + "|".join(COLLECTIVES) + r")(-start)?\(")
_SHAPE = re.compile(r"(\w+)\[([\d,]*)\]")


def collectives(hlo_text: str) -> list[dict]:
  """[{op, dtype, shape, bytes}] for each collective instruction of an HLO module's text."""
  out = []
  for line in hlo_text.splitlines():
    m = _OP.search(line)
    if not m:
      continue
    shapes = _SHAPE.findall(m.group(1))
    if m.group(3) and m.group(2) != "all-reduce":  # async start ops list (operand, result): keep the result
      shapes = shapes[-1:]
    for dtype, dims in shapes:
      if dtype not in DTYPE_BYTES:
        continue
      shape = [int(d) for d in dims.split(",") if d]
      out.append({"op": m.group(2), "dtype": dtype, "shape": shape,
                  "bytes": math.prod(shape) * DTYPE_BYTES[dtype]})
  return out


def sent_bytes(op: str, buffer: int, n: int) -> float:
  """Bytes one device sends for a collective on a buffer of `buffer` bytes over n devices."""
  if n <= 1:
    return 0.0
  return (2 if op == "all-reduce" else 1) * (n - 1) / n * buffer


def comm_seconds(ops: list[dict], n: int, bandwidth: float, latency: float) -> float:
  """Latency + bytes / bandwidth. Collectives of one kind and dtype are charged latency once: XLA on GPU
  and TPU combines them (XLA:CPU, which compiled the program, leaves per-tensor all-reduces apart)."""
  total, kinds = 0.0, set()
  for o in ops:
    if (o["op"], o["dtype"]) not in kinds:
      kinds.add((o["op"], o["dtype"]))
      total += (2 * (n - 1) if o["op"] == "all-reduce" else (n - 1)) * latency
    total += sent_bytes(o["op"], o["bytes"], n) / bandwidth
  return total


def feasible(comm: str, n: int) -> bool:
  if comm in ("mavo_int8", "l1_int8", "l0_int8", "linf_int8"):
    return n <= 127
  return not (comm == "mavo_4bit" and n > 15)


def compute_seconds(model: str, batch_per_device: int = 64, tokens: int = 197, flops: float = 150e12) -> float:
  """Assumed compute time of one step: 6 x params x tokens x batch FLOPs at `flops` FLOP/s (an
  H100-class GPU at a realistic utilisation). An assumption, not a measurement."""
  return 6 * PARAMS[model] * tokens * batch_per_device / flops


def compiled_ops(model_name: str, comm: str, image_size: int = 224) -> list[dict]:
  """The collectives of the trainer's compiled step for `comm` ('allreduce' = fp32 Lion)."""
  import jax
  import jax.numpy as jnp
  import ml_collections

  from fractalpre import classification, trainer
  n = jax.device_count()
  config = ml_collections.ConfigDict(dict(
      optim=dict(optimizer="lion", lr=1e-4, weight_decay=0.1, warmup_steps=0), total_steps=10, seed=0,
      lion=dict(comm=comm, momentum_sync="", sync_pattern=""), model=dict(name=model_name), precision="fp32",
      image_size=image_size))
  model = classification.model_from_config(config, 1000)
  state, _, step = trainer.build(config, trainer.make_mesh(), model, (1, image_size, image_size, 3),
                                 classification.classification_loss)
  batch = {"image": jax.ShapeDtypeStruct((n, image_size, image_size, 3), jnp.float32),
           "label": jax.ShapeDtypeStruct((n, 1000), jnp.float32)}
  return collectives(step.lower(state, batch).compile().as_text())


def ledger(model_name: str, comms, devices: int, image_size: int = 224) -> dict:
  rows = {}
  for comm in comms:
    ops = compiled_ops(model_name, comm, image_size)
    rows[comm] = {"ops": ops, "sent_bytes": sum(sent_bytes(o["op"], o["bytes"], devices) for o in ops)}
  return rows


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--model", default="vit_ti16", choices=tuple(PARAMS) + ("vit_cpu",))
  parser.add_argument("--devices", type=int, default=8)
  parser.add_argument("--image_size", type=int, default=224)
  parser.add_argument("--json", action="store_true")
  args = parser.parse_args(argv)
  if args.devices < 2:
    parser.error(f"--devices must be >= 2, got {args.devices}")
  import jax
  jax.config.update("jax_num_cpu_devices", args.devices)
  jax.config.update("jax_platforms", "cpu")
  from fractalpre.parallel.lion import COMMS
  rows = ledger(args.model, COMMS, args.devices, args.image_size)
  base = rows["allreduce"]["sent_bytes"]
  predictions = {}
  for comm, row in rows.items():
    for n in (8, 64, 256):
      for link, (bw, lat) in LINKS.items():
        if not feasible(comm, n):
          continue
        comm_s = comm_seconds(row["ops"], n, bw, lat)
        compute = compute_seconds(args.model) if args.model in PARAMS else 0.0
        predictions.setdefault(comm, []).append({"devices": n, "link": link, "comm_ms": 1e3 * comm_s,
                                                 "step_ms": 1e3 * (compute + comm_s)})
  if args.json:
    print(json.dumps({"model": args.model, "devices": args.devices, "rows": rows, "predictions": predictions}))
    return 0
  print(f"# {args.model}: bytes each device sends per step, from the compiled program on {args.devices} devices")
  print("| comm | collectives (op dtype[shape]) | sent MB | vs fp32 all-reduce |\n|---|---|---:|---:|")
  for comm, row in rows.items():
    ops = ", ".join(f"{o['op']} {o['dtype']}[{','.join(map(str, o['shape']))}]" for o in row["ops"][:4])
    more = f" (+{len(row['ops']) - 4})" if len(row["ops"]) > 4 else ""
    print(f"| {comm} | {ops}{more} | {row['sent_bytes'] / 1e6:.2f} | {base / max(row['sent_bytes'], 1):.1f}x |")
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
  sys.exit(main())
