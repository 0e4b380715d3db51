"""Test-wide setup: 8 fake CPU devices for JAX, set before any backend starts."""
import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
