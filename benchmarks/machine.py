"""The machine a benchmark ran on, for the header of its table."""
import os
import platform


def describe() -> str:
  model = platform.processor() or platform.machine()
  try:
    with open("/proc/cpuinfo") as f:
      model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
  except (OSError, StopIteration):
    pass
  return f"{model}, {os.cpu_count()} cores, Python {platform.python_version()}"


def describe_jax() -> str:
  """`describe()` plus the JAX version and devices, for the benchmarks that train."""
  import jax  # here, so that benchmarks without JAX do not import it
  return f"{describe()}, JAX {jax.__version__}, {jax.device_count()} x {jax.devices()[0].device_kind}"
