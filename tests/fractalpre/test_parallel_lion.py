import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

from fractalpre.parallel import lion

INT8 = ("mavo_int8", "l1_int8", "l0_int8", "linf_int8")
VOTES = INT8 + ("mavo_1bit", "mavo_4bit")


def mesh_of(n):
  return jax.make_mesh((n,), ("data",), axis_types=(jax.sharding.AxisType.Auto,), devices=jax.devices()[:n])


def quantize_np(c, n, norm):
  s = 127 // n
  a = np.abs(c)
  scale = {"l1": a.mean(), "linf": a.max(),
           "l0": np.exp(np.log(a[a > 0]).mean()) if (a > 0).any() else 0.0}[norm]
  scale = scale if scale > 0 else 1.0
  return np.clip(np.round(c.astype(np.float32) / np.float32(scale) * np.float32(s / 2)), -s, s).astype(np.int64)


def reference_vote(cs, comm, count):
  """Per-device update directions, written from the module's documented rules."""
  n = len(cs)
  t = 1 if count % 2 == 0 else -1
  if comm in INT8:
    q = np.sign(cs).astype(np.int64) if comm == "mavo_int8" else np.stack([quantize_np(c, n, comm.split("_")[0]) for c in cs])
    total = q.sum(0)
  else:
    positive = np.where(cs == 0, t > 0, cs > 0)
    total = 2 * positive.sum(0) - n
  u = np.where(total > 0, 1, np.where(total < 0, -1, t))
  return np.broadcast_to(u, cs.shape)


def run_vote(cs, comm, count):
  n = len(cs)
  f = jax.shard_map(lambda c: lion.vote(c[0], comm, "data", n, jnp.int32(count))[None], mesh=mesh_of(n),
                    in_specs=P("data"), out_specs=P("data"))
  return np.asarray(jax.jit(f)(jax.device_put(cs, jax.NamedSharding(mesh_of(n), P("data")))))


@pytest.mark.parametrize("comm", VOTES)
@pytest.mark.parametrize("n", [1, 2, 3, 8])
def test_votes_equal_the_numpy_reference_with_ties_and_zeros(comm, n):
  rng = np.random.default_rng(n)
  length = 203  # odd: padding of bits and nibbles
  cs = (rng.normal(size=(n, length)) * rng.choice([0.0, 1e-3, 1.0, 50.0], size=(n, length))).astype(np.float32)
  cs[:, :10] = 0.0  # all-zero elements
  if n % 2 == 0:  # exact ties between devices
    cs[: n // 2, 10:20] = 1.0
    cs[n // 2:, 10:20] = -1.0
  for count in (0, 1):
    np.testing.assert_array_equal(run_vote(cs, comm, count), reference_vote(cs, comm, count))


@pytest.mark.parametrize("length", [1, 7, 9, 64, 1001])
def test_bit_packing_round_trips_odd_lengths(length):
  bits = np.random.default_rng(length).random(length) > 0.5
  packed = lion.pack_bits(jnp.asarray(bits))
  assert packed.shape == ((length + 7) // 8,) and packed.dtype == jnp.uint8
  np.testing.assert_array_equal(lion.unpack_bits(packed, length), bits)


@pytest.mark.parametrize("norm", ["l1", "l0", "linf"])
def test_quantization_matches_its_formula(norm):
  c = np.random.default_rng(1).normal(size=500).astype(np.float32)
  c[::7] = 0
  q = np.asarray(lion.quantize(jnp.asarray(c), 8, norm))
  np.testing.assert_array_equal(q, quantize_np(c, 8, norm))
  assert np.abs(q).max() <= 127 // 8


def test_allreduce_on_one_device_equals_optax_lion_bit_for_bit():
  rng = np.random.default_rng(0)
  params = {"w": jnp.asarray(rng.normal(size=(5, 3)), jnp.float32), "b": jnp.asarray(rng.normal(size=3), jnp.float32)}
  ours = lion.distributed_lion(3e-3, weight_decay=0.1, comm="allreduce", mesh=mesh_of(1))
  ref = optax.lion(3e-3, weight_decay=0.1)
  mesh = mesh_of(1)
  step = jax.jit(jax.shard_map(lambda g, s, p: ours.update(g, s, p), mesh=mesh, in_specs=(P(), P(), P()),
                               out_specs=(P(), P())))
  s_ours, s_ref, p_ours, p_ref = ours.init(params), ref.init(params), params, params
  for i in range(5):
    g = jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape), jnp.float32), params)
    u_ours, s_ours = step(g, s_ours, p_ours)
    u_ref, s_ref = ref.update(g, s_ref, p_ref)
    p_ours, p_ref = optax.apply_updates(p_ours, u_ours), optax.apply_updates(p_ref, u_ref)
    for a, b in zip(jax.tree.leaves(p_ours), jax.tree.leaves(p_ref)):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("spec", ["every:3", "exp:2", "exp:4"])
def test_momentum_sync_happens_exactly_at_the_scheduled_steps(spec):
  n, steps = 4, 40
  mesh = mesh_of(n)
  tx = lion.distributed_lion(1e-3, comm="mavo_int8", momentum_sync=spec, mesh=mesh)
  params = {"w": jnp.zeros(6)}

  def step(g, state):
    _, state = tx.update({"w": g[0]}, jax.tree.map(lambda x: x[0], state), params)
    return jax.tree.map(lambda x: x[None], state)

  run = jax.jit(jax.shard_map(step, mesh=mesh, in_specs=(P("data"), P("data")), out_specs=P("data")))
  state = jax.tree.map(lambda x: jnp.stack([x] * n), tx.init(params))
  rng = np.random.default_rng(3)
  synced = []
  for t in range(1, steps + 1):
    state = run(jnp.asarray(rng.normal(size=(n, 6)), jnp.float32), state)
    mu = np.asarray(state.mu["w"])
    if np.all(mu == mu[0]):
      synced.append(t)
  assert synced == lion.momentum_sync_steps(spec, steps)
  assert synced and synced[0] <= 3


def test_exponential_schedule_is_dense_then_sparse():
  steps = lion.momentum_sync_steps("exp:4", 1000)
  gaps = np.diff(steps)
  assert steps[:3] == [1, 3, 4] or steps[0] == 1
  assert gaps[-1] > 10 * gaps[0] and np.all(gaps >= 1)


@pytest.mark.parametrize("kwargs,message", [
    ({"comm": "mavo_2bit"}, "comm must be one of"),
    ({"comm": "mavo_4bit", "num_devices": 16}, "exact for at most 15 devices, got 16"),
    ({"comm": "mavo_int8", "num_devices": 128}, "overflows beyond 127"),
    ({"comm": "l1_int8", "num_devices": 200}, "overflows beyond 127"),
    ({"momentum_sync": "every:0"}, "momentum_sync must be None, 'every:K' or 'exp:K'"),
    ({"momentum_sync": "sometimes"}, "momentum_sync must be None"),
    ({"axis_name": "batch", "mesh": "mesh"}, "axis_name 'batch' is not an axis of the mesh"),
])
def test_bad_configurations_are_refused_at_build_time(kwargs, message):
  if kwargs.get("mesh") == "mesh":
    kwargs["mesh"] = mesh_of(2)
  with pytest.raises(ValueError, match=message):
    lion.distributed_lion(1e-3, **kwargs)


def test_compressed_modes_with_momentum_sync_converge_within_5_percent_of_allreduce():
  from fractalpre.parallel import convergence
  assert jax.device_count() == 8
  base = convergence.train_digits("allreduce")["final"]
  assert base < 0.5 * np.log(10)  # it learned
  for comm in lion.COMMS[1:]:
    final = convergence.train_digits(comm, momentum_sync="exp:4")["final"]
    assert abs(final - base) <= 0.05 * base, (comm, final, base)
