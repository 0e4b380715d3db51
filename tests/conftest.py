"""Test-wide setup, before any JAX backend starts: 8 fake CPU devices, and a persistent compilation cache
shared by the child processes each test starts (one per pytest worker): the command-line tests start the
same runlocal trainer many times, and each start would otherwise compile the same programs again."""
import atexit
import os
import shutil
import tempfile

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  _cache = tempfile.mkdtemp(prefix="fractalpre-test-jax-cache-")
  atexit.register(shutil.rmtree, _cache, ignore_errors=True)
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
# every program, not only those that take a second to compile: a trainer's start runs hundreds of small
# eager ones (the model's initialisation), about 6 s of each command-line test's start
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
