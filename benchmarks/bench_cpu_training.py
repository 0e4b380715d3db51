"""CPU training speed with glibc's malloc against tcmalloc (fractalpre.util.cpu_allocator), side by side in one run,
and PyTorch eager on the same model as a reference.

  python benchmarks/bench_cpu_training.py [--rounds 3] [--steps 20] [--torch-python /path/to/venv/bin/python]

Model: ViT-Ti/16 at 224 px, fp32, batch 32, AdamW (configs/pretrain_1pfrac_vit.py). Each round starts one
process per allocator, alternately (this VM's speed drifts). `trainer img/s` goes through the real trainer
with its device-side 1p-frac pipeline: two runs of 3 and 3 + `--steps` steps, after a run that fills JAX's
compilation cache, so (steps x batch) / (time difference) leaves out start-up and compilation.
`step img/s` is the jitted step alone on a constant batch (median of 10). Faults and kernel time are
the whole child process's. `--torch-python`: a Python with torch and timm for benchmarks/reference/torch_vit.py.
"""
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fractalpre import util
from fractalpre.training import config_files

HERE = Path(__file__).resolve().parent
SETTINGS = {"glibc malloc (before)": {"FRACTALPRE_TCMALLOC": "0"}, "tcmalloc (default)": {}}


def child(steps: int, batch: int) -> dict:
  """Runs in the measured process: the trainer's images/s, the step's, the allocator and the process's costs."""
  from fractalpre.util import cpu_allocator
  cpu_allocator.preload()  # re-executes under tcmalloc unless opted out
  import jax
  from bench_train import median_step_seconds
  from fractalpre.training import classification
  jax.config.update("jax_compilation_cache_dir", tempfile.mkdtemp())
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
  config = config_files.load_config(str(HERE.parent / "configs" / "pretrain_1pfrac_vit.py"))
  config.update(batch_size=batch, log_every=10**6, checkpoint_every=10**6, tensorboard=False)
  config.data.workers = 2
  seconds = {}
  for total in (1, 3, 3 + steps):  # the first fills the compilation cache
    config.total_steps = total
    t = time.perf_counter()
    classification.train_and_evaluate(config, tempfile.mkdtemp(), progress=False)
    seconds[total] = time.perf_counter() - t
  step = median_step_seconds(config, 10)
  usage = resource.getrusage(resource.RUSAGE_SELF)
  return {"trainer": steps * batch / (seconds[3 + steps] - seconds[3]), "step": batch / step,
          "tcmalloc": cpu_allocator.loaded(), "minor_faults": usage.ru_minflt, "sys_s": usage.ru_stime,
          "user_s": usage.ru_utime}


def run_child(env: dict, steps: int, batch: int) -> dict:
  out = subprocess.run([sys.executable, __file__, "--child", "--steps", str(steps), "--vit-batch", str(batch)],
                       env={**os.environ, **env}, capture_output=True, text=True, check=True)
  return json.loads(out.stdout.strip().splitlines()[-1])


def main():
  parser = util.ArgumentParser(description=__doc__)
  parser.add_argument("--rounds", type=int, default=3, help="processes per setting")
  parser.add_argument("--steps", type=int, default=20, help="timed trainer steps per process")
  parser.add_argument("--vit-batch", type=int, default=32, help="images per step")
  parser.add_argument("--torch-python", default="", help="a Python with torch and timm: the PyTorch eager row")
  parser.add_argument("--child", action="store_true", help="(internal) be one measured process")
  args = parser.parse_args()
  if args.child:
    print(json.dumps(child(args.steps, args.vit_batch)))
    return
  from fractalpre.studies.machine import describe_jax
  print(f"# bench_cpu_training on {describe_jax()}; ViT-Ti/16 224 px fp32 batch {args.vit_batch} AdamW; medians "
        f"of {args.rounds} processes each")
  runs = {name: [] for name in SETTINGS}
  for r in range(args.rounds):
    for name, env in SETTINGS.items():
      runs[name].append(run_child(env, args.steps, args.vit_batch))
      print(f"round {r + 1} {name}: {runs[name][-1]}", file=sys.stderr, flush=True)
  base = statistics.median(x["trainer"] for x in runs["glibc malloc (before)"])
  torch_row = None
  if args.torch_python:
    out = subprocess.run([args.torch_python, str(HERE / "reference" / "torch_vit.py"), "--batch", str(args.vit_batch)],
                         capture_output=True, text=True, check=True)
    torch_row = json.loads(out.stdout.strip().splitlines()[-1])
  print("| allocator | trainer img/s | step img/s | speed-up (trainer) | minor faults | kernel s | user s |"
        + (" vs PyTorch eager |" if torch_row else ""))
  print("|---|---:|---:|---:|---:|---:|---:|" + ("---:|" if torch_row else ""))
  for name, xs in runs.items():
    med = {k: statistics.median(x[k] for x in xs) for k in ("trainer", "step", "minor_faults", "sys_s", "user_s")}
    assert all(x["tcmalloc"] == (name != "glibc malloc (before)") for x in xs), f"{name}: allocator not as set"
    print(f"| {name} | {med['trainer']:.1f} | {med['step']:.1f} | {med['trainer'] / base:.2f}x | "
          f"{med['minor_faults'] / 1e6:.2f} M | {med['sys_s']:.0f} | {med['user_s']:.0f} |"
          + (f" {med['trainer'] / torch_row['img_s']:.2f}x |" if torch_row else ""))
  if torch_row:
    print(f"| PyTorch {torch_row['torch']} eager ({torch_row['threads']} threads), step on a constant batch | | "
          f"{torch_row['img_s']:.1f} | | | | |" + " 1.00x |")


if __name__ == "__main__":
  with util.one_line_exits("bench_cpu_training.py"):
    sys.exit(main())
