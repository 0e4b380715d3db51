"""Two processes x 2 CPU devices on localhost (jax.distributed + gloo) give the single-process 4-device result."""
import json
import os
import socket
import subprocess
import sys
import textwrap

import jax
import numpy as np

WORKER = textwrap.dedent("""
    import json, sys
    import jax
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(sys.argv[1], num_processes=2, process_id=int(sys.argv[2]))
    assert jax.device_count() == 4 and jax.local_device_count() == 2
    from fractalpre.studies import lion_convergence
    exact = lion_convergence.train_digits("mavo_1bit", steps=30)
    synced = lion_convergence.train_digits("mavo_1bit", momentum_sync="every:5", steps=30)
    print(json.dumps([exact, synced]))
    """)


def test_two_processes_equal_one_process_with_four_devices():
  from fractalpre.studies import lion_convergence
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    address = f"127.0.0.1:{s.getsockname()[1]}"
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
  procs = [subprocess.Popen([sys.executable, "-c", WORKER, address, str(i)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True) for i in range(2)]
  outs = [p.communicate(timeout=300) for p in procs]
  assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in outs]
  results = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
  exact = lion_convergence.train_digits("mavo_1bit", steps=30, devices=jax.devices()[:4])
  synced = lion_convergence.train_digits("mavo_1bit", momentum_sync="every:5", steps=30, devices=jax.devices()[:4])
  assert results[0] == results[1]  # both processes hold the same replicated parameters
  got_exact, got_synced = results[0]
  # Without momentum sync every exchange is an exact integer vote: bit-identical parameters.
  assert got_exact["final"] == exact["final"]
  assert got_exact["final"] < got_exact["losses"][0]
  # Momentum sync is an fp32 mean, which gloo sums in another order than one process does.
  np.testing.assert_allclose(got_synced["final"], synced["final"], rtol=1e-4)
