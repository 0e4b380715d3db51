"""benchmarks/gpu_check.py in its CPU smoke mode: the one command a GPU session runs prints its table."""
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_smoke_prints_a_row_with_xla_flops_and_the_renderer_rate():
  result = subprocess.run([sys.executable, "gpu_check.py", "--smoke"], cwd=ROOT / "benchmarks", capture_output=True,
                          text=True, env={**os.environ, "FRACTALPRE_TCMALLOC": "0",
                                          "XLA_FLAGS": "--xla_force_host_platform_device_count=1"})
  assert result.returncode == 0, result.stderr[-2000:]
  row = next(line for line in result.stdout.splitlines() if line.startswith("| vit_cpu (smoke)"))
  cells = [c.strip() for c in row.strip("|").split("|")]
  assert cells[1:4] == ["32", "16", "bf16"] and float(cells[4]) > 0 and float(cells[5]) > 0
  assert 0.05 < float(cells[7]) < 1.0 and cells[8] == "n/a"  # XLA's count for a 0.5 M-parameter ViT; no CPU peak
  assert re.search(r"renderer on the host: \d+ 1p-frac images/s at 64 px", result.stdout)
