"""Per-step compression (Lion Cub) against infrequent synchronisation (DiLoCo) on one slow link: steps to a
target loss, bytes a step sends, step times on shaped links, and the time each mode takes to reach the target.

  python scripts/slow_link_comparison.py --workdir runs/slow_link [--steps 1000] [--seeds 3]       # training
  sudo python scripts/slow_link_comparison.py --workdir runs/slow_link --link [--rates 1gbit,100mbit]  # + links

The setting: 2 nodes of 4 devices (8 CPU devices) joined by one link. Training: the runlocal 1p-frac ViT
pretraining of docs/lion_cub.md (batch 64, Lion lr 3e-4, weight decay 0.1), `--seeds` seeds (init, data
order, augmentation) of each mode:

  lion             fp32 Lion: every step all-reduces the fp32 gradients over all devices
  cub, cub/exp:4   Lion Cub: gradients averaged exactly inside a node, the update's sign voted across the
                   nodes in 1 bit (lion.hierarchy=node); momenta averaged on the exp:4 schedule
  outer:H:COMM     DiLoCo: each node a worker taking H Lion steps alone, then the pseudo-gradients averaged
                   across the nodes in COMM (fp32, bf16, int8, 4bit, 1bit) for an outer Nesterov step (0.7, 0.9)
  outer:H:COMM:F   Streaming DiLoCo: the same in F fragments synced at staggered steps
  ...:lr=X:m=Y     either outer mode with another outer lr and momentum (e.g. outer:10:fp32:lr=1:m=0, plain
                   averaging of the workers' parameters every 10 steps)

The target is the loss fp32 Lion ends at (the mean over its seeds of the mean of its last 10% of logged
steps); a run reaches it at the first logged step where the mean of its last 10% of logged steps (the same
window, trailing) is at or below it. With `--link` (root: network namespaces), scripts/lion_wire.py measures
each mode with one process a node on a link shaped to each of `--rates`: the bytes crossing the link (kernel
counters) and the step times, beside the cost model's; the time to target is the steps to target times the
mean measured step time over the run's sync schedule. Prints a Markdown table (and the machine); writes
results.json and a plot of loss against time on the slowest link to the workdir. Runs and link measurements
are reused while what made them is unchanged; killed runs resume.
"""
from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

from fractalpre import util  # noqa: E402
from fractalpre.training import STOPS  # noqa: E402

HERE = Path(__file__).resolve().parent
MODES = ("lion,cub,cub/exp:4,outer:10:fp32,outer:10:int8,outer:10:1bit,outer:50:fp32,outer:50:int8,outer:50:1bit,"
         "outer:50:4bit:5")
NODES, LOCAL = 2, 4
QUICK_MODEL = dict(name="vit_cpu", patch=8, width=32, depth=1, mlp_dim=64, heads=2)


def _sibling(name: str):
  """A script beside this one (lion_ledger, lion_wire), imported once."""
  if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
  return importlib.import_module(name)


def label(mode: str) -> str:
  if mode == "lion":
    return "fp32 Lion"
  if mode.startswith("cub"):
    return "Lion Cub 1-bit" + (f", momentum sync {mode.partition('/')[2]}" if "/" in mode else "")
  _, every, comm, *rest = mode.split(":")
  fragments = [p for p in rest if "=" not in p]
  options = "".join(f", outer {'lr' if k == 'lr' else 'momentum'} {float(v):g}" for k, v in (p.split("=", 1) for p in rest
                                                                                          if "=" in p))
  if fragments:
    return f"Streaming DiLoCo H={every} F={fragments[0]} {comm}{options}"
  return f"DiLoCo H={every} {comm}{options}"


def check_mode(mode: str) -> str | None:
  """None for a valid mode, else why not."""
  import ml_collections

  from fractalpre.optim import outer
  if mode in ("lion", "cub", "cub/exp:4") or (mode.startswith("cub/") and _valid_sync(mode.partition("/")[2])):
    return None
  if not mode.startswith("outer:"):
    return f"unknown mode {mode!r}; a mode is lion, cub, cub/SYNC, outer:H:COMM or outer:H:COMM:F (then optionally :lr=X:m=Y)"
  lion_ledger = _sibling("lion_ledger")
  try:
    outer.settings(ml_collections.ConfigDict(lion_ledger.parse_outer(mode[len("outer:"):], NODES)), NODES * LOCAL)
  except ValueError as e:
    return f"{mode}: {e}"
  return None


def canonical(mode: str) -> str:
  """A valid mode as one spelling, so that equal modes share one run folder and one table row: numbers as
  the trainer reads them (lr=1.0 is lr=1, H=010 is H=10, exp:04 is exp:4), and a fragment count, outer lr
  or momentum equal to the default left out."""
  if mode.startswith("cub/"):
    from fractalpre.optim import lion
    return "cub/{}:{}".format(*lion.parse_momentum_sync(mode.partition("/")[2]))
  if not mode.startswith("outer:"):
    return mode
  from fractalpre.configs import common
  lion_ledger = _sibling("lion_ledger")
  cfg = lion_ledger.parse_outer(mode[len("outer:"):], NODES)
  text = f"outer:{cfg['every']}:{cfg['comm']}" + (f":{cfg['fragments']}" if cfg["fragments"] != 1 else "")
  number = lambda v: repr(float(v)).removesuffix(".0")  # the shortest text that reads back as the same float
  return text + "".join(f":{short}={number(cfg[key])}" for short, key in lion_ledger.OUTER_OPTIONS.items()
                        if cfg[key] != common.OUTER[key])


def _valid_sync(spec: str) -> bool:
  from fractalpre.optim import lion
  try:
    return lion.parse_momentum_sync(spec) is not None
  except ValueError:
    return False


def run_config(mode: str, seed: int, steps: int, quick: bool):
  """The trainer config of one run of `mode`."""
  import ml_collections

  from fractalpre.configs import pretrain_1pfrac_vit
  config = pretrain_1pfrac_vit.get_config("runlocal")
  config.update(total_steps=steps, checkpoint_every=max(steps // 4, 1), log_every=10 if steps >= 100 else 1,
                eval_every=0, seed=seed)
  config.optim.update(optimizer="lion", lr=3e-4, weight_decay=0.1)
  if quick:  # a model that compiles in seconds, for the tests
    config.model = ml_collections.ConfigDict(QUICK_MODEL)
    config.update(image_size=16, batch_size=16)
    config.data.update(render_size=16, points=400, workers=0)
    config.optim.warmup_steps = 1
  if mode == "lion":
    config.lion.comm = "allreduce"
  elif mode.startswith("cub"):
    config.lion.update(comm="mavo_1bit", momentum_sync=mode.partition("/")[2], hierarchy="node", local_devices=LOCAL)
  else:
    lion_ledger = _sibling("lion_ledger")
    config.outer.update(lion_ledger.parse_outer(mode[len("outer:"):], NODES))
  return config


def train(root: Path, mode: str, seed: int, steps: int, quick: bool) -> list[dict]:
  from fractalpre.studies import transfer
  from fractalpre.training import metric_writer
  workdir = root / "runs" / mode.replace(":", "_").replace("/", "_") / f"seed{seed}"
  transfer.run(run_config(mode, seed, steps, quick), workdir, f"{label(mode)} seed {seed}")
  return [r for r in metric_writer.read(workdir) if "loss" in r]


def trailing(records: list[dict]) -> tuple[list[int], list[float]]:
  """(steps, mean loss of the last 10% of logged steps up to each), from the first full window on."""
  import numpy as np
  window = max(len(records) // 10, 1)
  losses = np.array([r["loss"] for r in records])
  means = np.convolve(losses, np.ones(window) / window, mode="valid")
  return [r["step"] for r in records[window - 1:]], means.tolist()


def steps_to(target: float, records: list[dict]) -> int | None:
  steps, means = trailing(records)
  return next((s for s, m in zip(steps, means) if m <= target), None)


# ----------------------------------------------------------------------------------------- the link
def wire_argv(modes, rate: str, steps: int, quick: bool) -> list[str]:
  """lion_wire.py's arguments measuring `modes` with one process a node (the link's bytes and times)."""
  comms = ["allreduce"] * ("lion" in modes) + ["mavo_1bit"] * any(m.startswith("cub") for m in modes)
  syncs = {m.partition("/")[2] for m in modes if m.startswith("cub/")}
  outers = [m[len("outer:"):] for m in modes if m.startswith("outer:")]
  size, batch, model_args = (16, 8, "patch=8,width=32,depth=1,mlp_dim=64,heads=2") if quick else (32, 32, "")
  return ["--processes", str(NODES), "--model", "vit_cpu", "--image-size", str(size), "--batch-per-device", str(batch),
          "--classes", "16", "--model-args", model_args, "--comms", ",".join(comms) or "allreduce",
          "--momentum-sync", next(iter(syncs), ""), "--outer", ",".join(outers), "--rate", rate, "--timing",
          "--steps", str(steps), "--warmup", "2", "--json"]


def measure_link(root: Path, modes, rate: str, steps: int, quick: bool) -> dict:
  """lion_wire.py's result for one rate, reused while its arguments and the package are unchanged."""
  from fractalpre.util import provenance
  argv = wire_argv(modes, rate, steps, quick)
  print_ = lambda text: print(text, file=sys.stderr, flush=True)
  path = root / f"link_{rate}.json"
  fingerprint = provenance.fingerprint({"argv": argv}, {})
  if path.exists():
    kept = json.loads(path.read_text())
    if kept.get("fingerprint") == fingerprint:
      print_(f"  link {rate}: reused {path}")
      return kept["result"]
  print_(f"  link {rate}: measuring {len(modes)} modes with scripts/lion_wire.py ...")
  out = subprocess.run([sys.executable, str(HERE / "lion_wire.py"), *argv], capture_output=True, text=True)
  if out.returncode:
    raise RuntimeError(f"lion_wire.py failed at {rate}:\n{out.stderr[-3000:]}")
  result = json.loads(out.stdout)
  util.write_atomic(path, json.dumps({"fingerprint": fingerprint, "result": result}) + "\n")
  return result


def link_entry(result: dict, mode: str) -> dict:
  comm, sync = ("allreduce", "") if mode == "lion" else ("mavo_1bit", mode.partition("/")[2]) \
      if mode.startswith("cub") else (f"outer {mode[len('outer:'):]}", "")
  return next(e for e in result["modes"] if e["comm"] == comm and e["momentum_sync"] == sync)


def per_step(entry: dict, share: float, key: str) -> float:
  """A run's mean per step of `key` (bytes or seconds), non-sync and sync steps weighted by the share of
  sync steps in the run."""
  every = entry["every"][key]
  return every if "sync" not in entry else (1 - share) * every + share * entry["sync"][key]


# ----------------------------------------------------------------------------------------- report
def report(root: Path, modes, seeds: int, steps: int, runs: dict, links: dict, quick: bool) -> dict:
  import numpy as np

  from fractalpre.studies import machine
  from fractalpre.studies.transfer import spread
  lion_ledger = _sibling("lion_ledger")
  final = {m: [trailing(r)[1][-1] for r in runs[m].values()] for m in modes}
  target = float(np.mean(final[modes[0]]))
  slowest = min(links, key=lambda r: rate_bits(r)) if links else None
  out = {"target": target, "baseline": modes[0], "modes": {}}
  for mode in modes:
    reached = [steps_to(target, r) for r in runs[mode].values()]
    done = [s for s in reached if s is not None]
    config = run_config(mode, 0, steps, quick)
    share = lion_ledger.sync_share(config, steps)
    compiled = runs[mode][0][-1].get("comm_bytes_per_step")
    row = {"steps_to_target": reached, "final_loss": final[mode], "compiled_bytes": compiled, "links": {}}
    for rate, result in links.items():
      entry = link_entry(result, mode)
      row["links"][rate] = {"link_bytes": per_step(entry, share, "measured_bytes"),
                            "model_bytes": per_step(entry, share, "predicted_bytes"),
                            "seconds": per_step(entry, share, "seconds"),
                            "model_seconds": per_step(entry, share, "predicted_seconds")}
      row["links"][rate]["time_to_target"] = [s * row["links"][rate]["seconds"] for s in done]
    out["modes"][mode] = row
  rates = sorted(links, key=rate_bits, reverse=True)
  import lion_wire
  for rate in rates:  # the link harness's own table: each kind of step, measured beside the model
    print(f"\nOn the link at {rate}, one process a node (scripts/lion_wire.py):\n")
    lion_wire.print_table(links[rate])
  base = out["modes"][modes[0]]
  print(f"\nTarget: {target:.4f}, the final train loss of {label(modes[0])} (mean of {seeds} seeds); "
        f"{steps} steps, {NODES} nodes of {LOCAL} devices; mean ± std over seeds\n")
  head = ["mode", "steps to target", "final loss", "bytes / device / step (compiled)"]
  for rate in rates:
    head += [f"link bytes / step at {rate} (measured; model)", f"step s at {rate} (measured; model)",
             f"time to target at {rate}, s", f"speed-up at {rate}"]
  print("| " + " | ".join(head) + " |\n|---|" + "---:|" * (len(head) - 1))
  for mode in modes:
    row = out["modes"][mode]
    done = [s for s in row["steps_to_target"] if s is not None]
    cells = [label(mode), (f"{spread(done)[0]:.0f} ± {spread(done)[1]:.0f}" if done else "not reached")
             + f" ({len(done)} of {seeds})", "{:.3f} ± {:.3f}".format(*spread(row["final_loss"])),
             f"{row['compiled_bytes'] / 1e6:.3f} MB" if row["compiled_bytes"] else ""]
    for rate in rates:
      link, base_link = row["links"][rate], base["links"][rate]
      cells += [f"{link['link_bytes'] / 1e6:.3f} MB; {link['model_bytes'] / 1e6:.3f}",
                f"{link['seconds']:.3f}; {link['model_seconds']:.3f}"]
      if done and base_link["time_to_target"]:
        t, t0 = spread(link["time_to_target"]), spread(base_link["time_to_target"])
        cells += [f"{t[0]:.0f} ± {t[1]:.0f}", f"{t0[0] / t[0]:.2f}x"]
      else:
        cells += ["not reached", ""]
    print("| " + " | ".join(cells) + " |")
  print(f"\nMeasured: {machine.stamp()}.")
  if slowest:
    plot(root, modes, runs, out, slowest)
  (root / "results.json").write_text(json.dumps(out, indent=1))
  print(f"wrote {root / 'results.json'}" + (f" and {root / 'loss_vs_time.png'}" if slowest else ""))
  return out


def rate_bits(rate: str) -> float:
  lion_wire = _sibling("lion_wire")
  return lion_wire._rate_bits(rate)


def plot(root: Path, modes, runs: dict, out: dict, rate: str) -> None:
  """Trailing-mean train loss against time on the `rate` link (each step at the mode's mean measured step
  time): mean and range over the seeds, the target dashed."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  import numpy as np
  fig, ax = plt.subplots(figsize=(8, 4.5))
  for mode in modes:
    curves = [trailing(r) for r in runs[mode].values()]
    seconds = out["modes"][mode]["links"][rate]["seconds"]
    x = np.array(curves[0][0]) * seconds
    ys = np.array([c[1] for c in curves])
    line, = ax.plot(x, ys.mean(0), lw=1, label=label(mode))
    ax.fill_between(x, ys.min(0), ys.max(0), color=line.get_color(), alpha=0.12, lw=0)
  ax.axhline(out["target"], color="k", ls="--", lw=0.8, label="target")
  ax.set_xscale("log")
  ax.set_xlabel(f"seconds at {rate} (steps x measured mean step time)")
  ax.set_ylabel("train loss (trailing mean)")
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(root / "loss_vs_time.png", dpi=100)


def main(argv=None):
  parser = util.ArgumentParser(description=__doc__)
  parser.add_argument("--workdir", default="runs/slow_link", help="runs, link measurements, results (default: %(default)s)")
  parser.add_argument("--modes", default=MODES, help="comma-separated, the first is the baseline (default: %(default)s)")
  parser.add_argument("--steps", type=int, default=1000, help="training steps per run (default: %(default)s)")
  parser.add_argument("--seeds", type=int, default=3, help="seeds per mode (default: %(default)s)")
  parser.add_argument("--link", action="store_true", help="measure each mode on shaped links (root)")
  parser.add_argument("--rates", default="1gbit,100mbit", help="link rates for --link (default: %(default)s)")
  parser.add_argument("--link-steps", type=int, default=50, help="steps measured per mode on a link, enough to "
                      "hold a sync step of every mode (default: %(default)s)")
  parser.add_argument("--quick", action="store_true", help="a tiny model at 16 px: checks the pipeline, not the modes")
  args = parser.parse_args(argv)
  for name in ("steps", "link_steps"):
    util.require_positive(parser, args, name)
  if args.seeds < 2:
    parser.error(f"--seeds must be >= 2 (a spread needs two), got {args.seeds}")
  modes = [m for m in args.modes.split(",") if m]
  if not modes:
    parser.error("--modes must name at least one mode")
  for mode in modes:
    if (why := check_mode(mode)):
      parser.error(f"--modes: {why}")
  same = {}
  for mode in modes:
    if modes.count(mode) > 1:
      parser.error(f"--modes names {mode} twice")
    if (twin := same.setdefault(canonical(mode), mode)) != mode:
      parser.error(f"--modes names one mode twice: {twin} and {mode} are both {canonical(mode)}")
  modes = [canonical(m) for m in modes]
  if len({m for m in modes if m.startswith("cub/")}) > 1:
    parser.error("--modes: at most one momentum-sync schedule for cub (the link harness measures one)")
  rates = [r for r in args.rates.split(",") if r] if args.link else []
  for rate in rates:
    try:
      rate_bits(rate)
    except ValueError as e:
      parser.error(str(e))
  if args.link:
    lion_wire = _sibling("lion_wire")
    if (why := lion_wire.namespaces_usable()):
      parser.error(f"--link: {why}")
  root = Path(args.workdir)
  if root.exists() and not root.is_dir():
    parser.error(f"--workdir {root} is a file")
  root.mkdir(parents=True, exist_ok=True)
  from fractalpre.util import cpu_allocator
  hint = cpu_allocator.preload() if argv is None else None
  links = {rate: measure_link(root, modes, rate, args.link_steps, args.quick) for rate in rates}
  runs = {m: {seed: train(root, m, seed, args.steps, args.quick) for seed in range(args.seeds)} for m in modes}
  report(root, modes, args.seeds, args.steps, runs, links, args.quick)
  if hint:
    print(hint, file=sys.stderr)
  return 0


if __name__ == "__main__":
  with util.one_line_exits("slow_link_comparison.py", STOPS, resumes=True):
    sys.exit(main())
