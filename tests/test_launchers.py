"""The cluster launchers start the trainer with the flags the multi-process tests use: the Slurm script runs
for real here, under a stand-in `srun` that starts its tasks as local processes."""
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# A stand-in for srun that models what the launcher relies on: it starts SLURM_NTASKS tasks (every node's,
# all on this machine), each with SLURM_PROCID, SLURM_NODEID and SLURM_LOCALID (its index on its node); the
# GPUs a task sees as Slurm sets them for a job with FAKE_GPUS_PER_NODE GPUs per node: every task the node's
# whole list "0,...,G-1" (--gpus-per-node), or with FAKE_GPU_BIND=1 (--gpus-per-task=G/T) only its own share,
# with SLURM_GPUS_PER_TASK set; SIGTERM sent to srun is passed on to every task, as srun forwards signals to its step; the exit
# status is the last failing task's. Not modelled: several machines (every task is local), cgroups that
# renumber the devices a task sees, srun's own time limit, and real GPUs (the tasks see CUDA_VISIBLE_DEVICES
# only).
FAKE_SRUN = """#!/usr/bin/env bash
while [[ "$1" == --* ]]; do shift; done
per_node=${SLURM_NTASKS_PER_NODE:-1}
pids=()
for ((i = 0; i < SLURM_NTASKS; i++)); do
  local_id=$((i % per_node))
  gpus= bound=
  if [ -n "${FAKE_GPUS_PER_NODE:-}" ]; then
    share=$((FAKE_GPUS_PER_NODE / per_node))
    if [ "${FAKE_GPU_BIND:-0}" = 1 ]; then
      gpus=$(seq -s, $((local_id * share)) $((local_id * share + share - 1))) bound=$share
    else
      gpus=$(seq -s, 0 $((FAKE_GPUS_PER_NODE - 1)))
    fi
  fi
  env ${gpus:+CUDA_VISIBLE_DEVICES=$gpus} ${bound:+SLURM_GPUS_PER_TASK=$bound} SLURM_PROCID=$i SLURM_LOCALID=$local_id SLURM_NODEID=$((i / per_node)) \
    "$@" > "$OUT/task$i.out" 2> "$OUT/task$i.err" & pids+=($!)
done
trap 'kill -TERM "${pids[@]}" 2>/dev/null' TERM
status=0
for pid in "${pids[@]}"; do
  wait "$pid"; code=$?
  if kill -0 "$pid" 2>/dev/null; then wait "$pid"; code=$?; fi  # the trap interrupted the wait
  [ "$code" -ne 0 ] && status=$code
done
exit $status
"""
# scontrol's part: the job's node names, and a requeue recorded in $OUT/requeued (Slurm would start the job
# again with the same command; the test does that itself).
FAKE_SCONTROL = """#!/usr/bin/env bash
if [ "$1" = requeue ]; then echo "$2" >> "$OUT/requeued"; exit 0; fi
printf '127.0.0.1\\nother-node\\n'
"""


def _executable(path: Path, text: str) -> None:
  path.write_text(text)
  path.chmod(path.stat().st_mode | stat.S_IEXEC)


def test_the_slurm_script_starts_a_two_process_job_that_trains(tmp_path):
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  _executable(bin_dir / "srun", FAKE_SRUN)
  _executable(bin_dir / "scontrol", FAKE_SCONTROL)
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "OUT": str(tmp_path), "SLURM_NTASKS": "2",
         "SLURM_NTASKS_PER_NODE": "2", "SLURM_JOB_NODELIST": "node[1-2]", "FRACTALPRE_PYTHON": sys.executable,
         "FRACTALPRE_PORT": str(port), "FRACTALPRE_TCMALLOC": "0",
         "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
  result = subprocess.run(["bash", str(ROOT / "scripts/slurm/train.sbatch"), "pretrain_1pfrac_vit:runlocal",
                           str(tmp_path / "w"), "--config.total_steps=2", "--config.log_every=1",
                           "--config.tensorboard=False"],
                          env=env, capture_output=True, text=True, cwd=tmp_path)
  errors = [(tmp_path / f"task{i}.err").read_text()[-1500:] for i in range(2) if (tmp_path / f"task{i}.err").exists()]
  assert result.returncode == 0, (result.stderr[-1500:], errors)
  assert "loss=" in (tmp_path / "task0.out").read_text()  # process 0 reports the run
  records = [json.loads(line) for line in (tmp_path / "w" / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in records] == [1, 2]


# A task's side of the test: it records its environment and the trainer flags the launcher gave it.
PROBE = """#!/usr/bin/env bash
shift 2  # -m fractalpre.train
{ env | grep -E '^(SLURM_|CUDA_VISIBLE_DEVICES=)'; printf 'ARGS=%s\\n' "$*"; } > "$OUT/task$SLURM_PROCID.env"
"""


def _resolved_gpus(task_env: dict) -> list[str]:
  """The GPUs a task drives: what the trainer passes to jax.distributed.initialize for its flags, resolved in
  the task's environment the way JAX 0.10's State.initialize does (its cluster detection runs unless told
  'deactivate' and something is unset), then mapped through the task's CUDA_VISIBLE_DEVICES."""
  from unittest import mock
  from jax._src import clusters
  from fractalpre.training import distributed
  args = task_env["ARGS"].split()
  flags = {name: args[args.index(name) + 1] for name in ("--coordinator_address", "--num_processes", "--process_id")}
  with mock.patch.dict(os.environ, {k: v for k, v in task_env.items() if k != "ARGS"}):
    kwargs = distributed.plan(flags["--coordinator_address"], int(flags["--num_processes"]),
                              int(flags["--process_id"]))
    ids = None
    if kwargs.get("cluster_detection_method") != "deactivate":
      ids = clusters.ClusterEnv.auto_detect_unset_distributed_params(
          kwargs["coordinator_address"], kwargs["num_processes"], kwargs["process_id"], None, None, 10)[3]
  visible = [v for v in task_env.get("CUDA_VISIBLE_DEVICES", "").split(",") if v]
  return visible if ids is None else [visible[i] if i < len(visible) else f"no device {i}" for i in ids]


def _slurm_env(tmp_path, tasks, per_node, **extra):
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir(exist_ok=True)
  _executable(bin_dir / "srun", FAKE_SRUN)
  _executable(bin_dir / "scontrol", FAKE_SCONTROL)
  return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "OUT": str(tmp_path), "SLURM_NTASKS": str(tasks),
          "SLURM_NTASKS_PER_NODE": str(per_node), "SLURM_JOB_NODELIST": "node[1-2]", "SLURM_JOB_ID": "4242",
          **extra}


@pytest.mark.parametrize("per_node", [1, 2, 8])
@pytest.mark.parametrize("bind", [False, True])
def test_every_gpu_of_every_node_is_driven_by_exactly_one_process(tmp_path, per_node, bind):
  """2 nodes x 8 GPUs: one task per node drives all 8, two tasks four each, eight tasks one each; with Slurm's
  own binding and without (then the launcher gives task SLURM_LOCALID its share of the node's list)."""
  if bind and per_node == 1:
    pytest.skip("one task per node takes the node's GPUs; binding one GPU per task is the per-GPU layout")
  _executable(tmp_path / "probe", PROBE)
  env = _slurm_env(tmp_path, 2 * per_node, per_node, FAKE_GPUS_PER_NODE="8", FAKE_GPU_BIND=str(int(bind)),
                   FRACTALPRE_PYTHON=str(tmp_path / "probe"))
  result = subprocess.run(["bash", str(ROOT / "scripts/slurm/train.sbatch"), "config", "w"], env=env,
                          capture_output=True, text=True, cwd=tmp_path)
  assert result.returncode == 0, result.stdout[-800:]
  tasks = [dict(line.split("=", 1) for line in (tmp_path / f"task{i}.env").read_text().splitlines())
           for i in range(2 * per_node)]
  for node in ("0", "1"):
    driven = [gpu for t in tasks if t["SLURM_NODEID"] == node for gpu in _resolved_gpus(t)]
    assert sorted(driven, key=str) == [str(g) for g in range(8)], [(t, _resolved_gpus(t)) for t in tasks]
  assert all(len(_resolved_gpus(t)) == 8 // per_node for t in tasks)
  assert ":24242" in result.stdout  # the port follows the job id


def test_the_time_limit_saves_requeues_and_the_requeued_job_resumes(tmp_path):
  """Slurm's warning goes to the batch shell only (--signal=B:TERM@120): the script passes it to the tasks,
  which save the step they agree on and exit 143, then it asks Slurm to requeue the job; the requeued job's
  same command resumes and finishes."""
  env = _slurm_env(tmp_path, 2, 2, FRACTALPRE_PYTHON=sys.executable, FRACTALPRE_TCMALLOC="0",
                   SLURM_JOB_ID="4343",  # its own port (24343): the layout tests beside it check that 24242 is free
                   XLA_FLAGS="--xla_force_host_platform_device_count=2",
                   # the requeued job loads the first one's compiled programs (the tests' shared cache)
                   JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0", JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
  argv = ["bash", str(ROOT / "scripts/slurm/train.sbatch"), "pretrain_1pfrac_vit:runlocal", str(tmp_path / "w"),
          "--config.total_steps=24", "--config.log_every=1", "--config.checkpoint_every=1000",
          "--config.tensorboard=False"]
  job = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path)
  metrics = tmp_path / "w" / "metrics.jsonl"
  deadline = time.time() + 300
  while (time.time() < deadline and job.poll() is None
         and (not metrics.exists() or len(metrics.read_text().splitlines()) < 2)):
    time.sleep(0.2)
  job.send_signal(signal.SIGTERM)  # what B:TERM does: the batch shell alone
  out, _ = job.communicate(timeout=300)
  assert job.returncode == 143, out[-2000:]
  assert (tmp_path / "requeued").read_text().split() == ["4343"]
  saved = [int(p.name) for p in (tmp_path / "w" / "checkpoints").iterdir() if p.name.isdigit()]
  assert len(saved) == 1 and 2 <= saved[0] < 24
  # Slurm starts the requeued job with the same command: it resumes from the saved step and finishes
  rerun = subprocess.run(argv, env=env, capture_output=True, text=True, cwd=tmp_path)
  assert rerun.returncode == 0, rerun.stdout[-2000:]
  assert f"resumed from step {saved[0]}" in (tmp_path / "task0.err").read_text()
  assert [r["step"] for r in map(json.loads, metrics.read_text().splitlines())] == list(range(1, 25))
  assert (tmp_path / "requeued").read_text().split() == ["4343"]  # a finished job is not requeued


# A stand-in for gcloud that models what the TPU launcher relies on: `describe` gives a 4-worker pod's
# addresses; `ssh --worker=I --command=C` runs C through a real shell (so quoting is tested) as worker I, whose
# home is $OUT/worker-I, and after 0.3 s ends the session's process group with SIGHUP, as a dropped ssh
# connection does (a worker run in the foreground of the session dies with it).
# Not modelled: real hosts and networks, gcloud's own retries and keys, the TPU runtime.
FAKE_GCLOUD = """#!/usr/bin/env bash
if [ "$4" = describe ]; then echo "10.0.0.7;10.0.0.8;10.0.0.9;10.0.0.10"; exit; fi
for arg in "$@"; do case "$arg" in --worker=*) worker=${arg#--worker=};; --command=*) command=${arg#--command=};; esac; done
home=$OUT/worker-$worker
mkdir -p "$home"
HOME=$home setsid bash -c "$command" &
session=$!
sleep 0.3  # the connection drops while the command may still run: its session gets SIGHUP
kill -HUP -- -"$session" 2>/dev/null
wait "$session" 2>/dev/null
exit 0
"""
# The worker's python: it outlives the ssh session only if the launcher detached it; it records its arguments.
FAKE_PYTHON = """#!/usr/bin/env bash
sleep 1
printf '%s\\n' "$@" > "$HOME/args"
"""


def test_the_tpu_launcher_quotes_every_argument_and_its_workers_survive_a_dropped_session(tmp_path):
  for script in ("run_pod.sh", "setup_pod.sh", "create_pod.sh"):
    subprocess.run(["bash", "-n", str(ROOT / "scripts/tpu" / script)], check=True)
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  _executable(bin_dir / "gcloud", FAKE_GCLOUD)
  for i in range(4):
    (tmp_path / f"worker-{i}" / "fractalpre").mkdir(parents=True)
    (tmp_path / f"worker-{i}" / "venv" / "bin").mkdir(parents=True)
    _executable(tmp_path / f"worker-{i}" / "venv" / "bin" / "python", FAKE_PYTHON)
  env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "OUT": str(tmp_path)}
  odd = "--config.wandb.name=it's a \"run\" $HOME"
  subprocess.run(["bash", str(ROOT / "scripts/tpu/run_pod.sh"), "pod", "zone", "pretrain_1pfrac_vit", "/mnt/my run",
                  "--config.total_steps=9", odd], env=env, check=True, capture_output=True)
  deadline = time.time() + 30
  while time.time() < deadline and not all((tmp_path / f"worker-{i}" / "args").exists() for i in range(4)):
    time.sleep(0.1)
  for i in range(4):
    args = (tmp_path / f"worker-{i}" / "args").read_text().splitlines()
    assert args == ["-m", "fractalpre.train", "--distributed", "--coordinator_address", "10.0.0.7:8476",
                    "--num_processes", "4", "--process_id", str(i), "--config", "pretrain_1pfrac_vit", "--workdir",
                    "/mnt/my run", "--config.total_steps=9", odd]
    assert (tmp_path / f"worker-{i}" / "fractalpre_logs" / f"pod-worker-{i}.pid").read_text().strip().isdigit()
