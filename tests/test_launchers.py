"""The cluster launchers start the trainer with the flags the multi-process tests use: the Slurm script runs
for real here, under a stand-in `srun` that starts its tasks as local processes."""
import json
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

FAKE_SRUN = """#!/usr/bin/env bash
# srun's part for the test: start SLURM_NTASKS copies of the command, one per task, and wait for them all.
while [[ "$1" == --* ]]; do shift; done
pids=()
for ((i = 0; i < SLURM_NTASKS; i++)); do
  SLURM_PROCID=$i SLURM_LOCALID=$i "$@" > "$OUT/task$i.out" 2> "$OUT/task$i.err" & pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
exit $status
"""


def _executable(path: Path, text: str) -> None:
  path.write_text(text)
  path.chmod(path.stat().st_mode | stat.S_IEXEC)


def test_the_slurm_script_starts_a_two_process_job_that_trains(tmp_path):
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  _executable(bin_dir / "srun", FAKE_SRUN)
  _executable(bin_dir / "scontrol", "#!/usr/bin/env bash\nprintf '127.0.0.1\\nother-node\\n'\n")
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


FAKE_GCLOUD = """#!/usr/bin/env bash
# gcloud's part for the test: a 4-worker pod's addresses; each ssh prints the command it would run.
if [ "$4" = describe ]; then echo "10.0.0.7;10.0.0.8;10.0.0.9;10.0.0.10"; exit; fi
for arg in "$@"; do case "$arg" in --worker=*) worker=${arg#--worker=};; --command=*) command=${arg#--command=};; esac; done
echo "$worker:" $command >> "$OUT/ssh.log"
"""


def test_the_tpu_launcher_starts_every_worker_with_the_multi_process_flags(tmp_path):
  for script in ("run_pod.sh", "setup_pod.sh", "create_pod.sh"):
    subprocess.run(["bash", "-n", str(ROOT / "scripts/tpu" / script)], check=True)
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  _executable(bin_dir / "gcloud", FAKE_GCLOUD)
  env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "OUT": str(tmp_path)}
  subprocess.run(["bash", str(ROOT / "scripts/tpu/run_pod.sh"), "pod", "zone", "pretrain_1pfrac_vit", "/mnt/run",
                  "--config.total_steps=9"], env=env, check=True)
  lines = sorted((tmp_path / "ssh.log").read_text().splitlines())
  assert lines == [f"{i}: cd ~/fractalpre && ~/venv/bin/python -m fractalpre.train --distributed --coordinator_address "
                   f"10.0.0.7:8476 --num_processes 4 --process_id {i} --config pretrain_1pfrac_vit --workdir "
                   "/mnt/run --config.total_steps=9" for i in range(4)]
