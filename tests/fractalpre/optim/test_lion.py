import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

from fractalpre.optim import lion

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


def lion_config(**kw):
  import ml_collections
  return ml_collections.ConfigDict({"optimizer": "lion", "lr": 3e-3, "weight_decay": 0.1, "warmup_steps": 2, **kw})


def run_lion(tx, params, grads_per_step, n, per_device_state, mesh=None):
  """Params after applying `tx` under shard_map over n devices; grads_per_step[t] has a leading device
  axis of n (each device's own gradient)."""
  mesh = mesh or mesh_of(n)
  axes = tuple(mesh.axis_names)
  spec = P(axes) if per_device_state else P()

  def step(g, s, p):
    s = jax.tree.map(lambda x: x[0], s) if per_device_state else s
    u, s = tx.update(jax.tree.map(lambda x: x[0], g), s, p)
    return optax.apply_updates(p, u), (jax.tree.map(lambda x: x[None], s) if per_device_state else s)

  run = jax.jit(jax.shard_map(step, mesh=mesh, in_specs=(P(axes), spec, P()), out_specs=(P(), spec), check_vma=False))
  state = tx.init(params)
  if per_device_state:
    state = jax.tree.map(lambda x: jnp.broadcast_to(x, (n,) + x.shape), state)
  for g in grads_per_step:
    params, state = run(g, state, params)
  return params


PARAMS = {"w": jnp.asarray(np.random.default_rng(0).normal(size=(5, 3)), jnp.float32),
          "b": jnp.asarray(np.random.default_rng(1).normal(size=3), jnp.float32),
          "pos": jnp.asarray(np.random.default_rng(2).normal(size=(1, 4, 3)), jnp.float32)}


def grads_for(n, steps=5, seed=0):
  rng = np.random.default_rng(seed)
  return [jax.tree.map(lambda x: jnp.asarray(rng.normal(size=(n,) + x.shape), jnp.float32), PARAMS) for _ in range(steps)]


@pytest.mark.parametrize("extra", [{}, {"grad_clip_norm": 0.5}, {"mu_dtype": "bfloat16"}])
def test_allreduce_on_one_device_equals_the_plain_lion_and_optax_bit_for_bit(extra):
  from fractalpre import optim
  cfg = lion_config(**extra)
  grads = grads_for(1)
  got = run_lion(optim.make(cfg, 10, transport=lion.transport("allreduce", mesh_of(1))), PARAMS, grads, 1, True)
  plain = run_lion(optim.make(cfg, 10), PARAMS, grads, 1, False)
  ref = optax.lion(optim.schedule(cfg, 10), weight_decay=0.1, mask=optim.factory._decay_mask, mu_dtype=extra.get("mu_dtype"))
  if extra.get("grad_clip_norm"):
    ref = optax.chain(optax.clip_by_global_norm(0.5), ref)
  expected = run_lion(ref, PARAMS, grads, 1, False)
  unmasked = run_lion(optax.lion(optim.schedule(cfg, 10), weight_decay=0.1), PARAMS, grads, 1, False)
  assert not np.array_equal(unmasked["b"], expected["b"])  # the mask matters
  for a, b, c in zip(jax.tree.leaves(got), jax.tree.leaves(plain), jax.tree.leaves(expected)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(c))
    np.testing.assert_array_equal(np.asarray(b), np.asarray(c))


def test_allreduce_on_eight_devices_equals_plain_lion_on_the_mean_gradient():
  from fractalpre import optim
  cfg = lion_config(grad_clip_norm=0.5)
  grads = grads_for(8)
  got = run_lion(optim.make(cfg, 10, transport=lion.transport("allreduce", mesh_of(8))), PARAMS, grads, 8, True)
  mean = [jax.tree.map(lambda x: x.mean(0, keepdims=True), g) for g in grads]
  expected = run_lion(optim.make(cfg, 10), PARAMS, mean, 1, False)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-6)  # the mean's summation order


@pytest.mark.parametrize("comm", ["allreduce", "mavo_1bit", "l1_int8"])
def test_hierarchical_lion_is_the_flat_vote_of_the_node_mean_gradients(comm):
  from fractalpre import optim
  cfg = lion_config()
  grads = grads_for(8)
  nodes = lion.step_mesh(jax.devices(), "node", 4)
  got = run_lion(optim.make(cfg, 10, transport=lion.transport(comm, nodes)), PARAMS, grads, 8, True, nodes)
  node_means = [jax.tree.map(lambda x: x.reshape((2, 4) + x.shape[1:]).mean(1), g) for g in grads]
  expected = run_lion(optim.make(cfg, 10, transport=lion.transport(comm, mesh_of(2))), PARAMS, node_means, 2, True)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-6)


def test_votes_decay_only_what_plain_lion_decays():
  """The vote does not look at the parameters, so decay changes exactly the leaves the mask selects."""
  from fractalpre import optim
  grads = grads_for(8, steps=3)
  runs = [run_lion(optim.make(lion_config(weight_decay=wd), 10, transport=lion.transport("mavo_1bit", mesh_of(8))),
                   PARAMS, grads, 8, True) for wd in (0.0, 0.1)]
  for name, decayed in optim.factory._decay_mask(PARAMS).items():
    assert np.array_equal(runs[0][name], runs[1][name]) != decayed, name
  assert optim.factory._decay_mask(PARAMS) == {"w": True, "b": False, "pos": False}


@pytest.mark.parametrize("spec", ["every:3", "exp:2", "exp:4"])
def test_momentum_sync_happens_exactly_at_the_scheduled_steps(spec):
  n, steps = 4, 40
  mesh = mesh_of(n)
  tx = lion.scale_by_lion(transport=lion.transport("mavo_int8", mesh, momentum_sync=spec))
  params = {"w": jnp.zeros(6)}

  def step(g, state):
    _, state = tx.update({"w": g[0]}, jax.tree.map(lambda x: x[0], state), params)
    return jax.tree.map(lambda x: x[None], state)

  run = jax.jit(jax.shard_map(step, mesh=mesh, in_specs=(P("data"), P("data")), out_specs=P("data"), check_vma=False))
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


@pytest.mark.parametrize("comm,n,kwargs,message", [
    ("mavo_2bit", 2, {}, "lion.comm must be one of"),
    ("mavo_4bit", 16, {}, "exact for at most 15 voters, got 16"),
    ("mavo_int8", 128, {}, "overflows beyond 127"),
    ("l1_int8", 200, {}, "overflows beyond 127"),
    ("mavo_1bit", 2, {"momentum_sync": "every:0"}, "momentum_sync must be None, 'every:K' or 'exp:K'"),
    ("mavo_1bit", 2, {"momentum_sync": "sometimes"}, "momentum_sync must be None"),
    ("allreduce", 2, {"momentum_sync": "every:4"}, "does nothing with comm='allreduce'"),
])
def test_bad_configurations_are_refused_at_build_time(comm, n, kwargs, message):
  mesh = jax.sharding.Mesh(np.array([jax.devices()[0]] * n), ("data",))  # only the size matters
  with pytest.raises(ValueError, match=message):
    lion.transport(comm, mesh, **kwargs)


@pytest.mark.parametrize("local,message", [(3, "must divide the 8 devices into at least two nodes, got 3"),
                                           (8, "at least two nodes, got 8"), (0, "got 0")])
def test_hierarchies_the_devices_cannot_form_are_refused(local, message):
  with pytest.raises(ValueError, match=message):
    lion.step_mesh(jax.devices(), "node", local)
  with pytest.raises(ValueError, match="lion.hierarchy must be one of"):
    lion.step_mesh(jax.devices(), "rack", 2)


def test_compressed_modes_with_momentum_sync_converge_within_5_percent_of_allreduce():
  from fractalpre.studies import lion_convergence
  assert jax.device_count() == 8
  base = lion_convergence.train_digits("allreduce")["final"]
  assert base < 0.5 * np.log(10)  # it learned
  for comm in lion.COMMS[1:]:
    final = lion_convergence.train_digits(comm, momentum_sync="exp:4")["final"]
    assert abs(final - base) <= 0.05 * base, (comm, final, base)


def load_ledger():
  from tests.fractalpre import scripts
  return scripts.load("lion_ledger")


def tiny_step_ops(ledger, comm, momentum_sync="", hierarchy="flat", local_devices=0):
  import ml_collections
  config = ledger.step_config("vit_cpu", comm, 16, momentum_sync, hierarchy, local_devices)
  config.model = ml_collections.ConfigDict(dict(name="vit_cpu", patch=8, width=32, depth=1, mlp_dim=64, heads=2))
  state, step, batch = ledger.build_step(config, num_classes=10)
  text = step.lower(state, batch).compile().as_text()
  local = local_devices if hierarchy == "node" else 0
  return ledger.collectives(text, 8, local), sum(x.size for x in jax.tree.leaves(state["params"]))


def test_momentum_sync_sends_its_all_reduce_on_sync_steps_only():
  """In the compiled step the fp32 momentum all-reduce sits inside the conditional's branch, so a
  non-sync step sends the vote alone (it used to run under a select, on every step)."""
  ledger = load_ledger()
  plain, params = tiny_step_ops(ledger, "mavo_1bit")
  synced, _ = tiny_step_ops(ledger, "mavo_1bit", "every:3")
  every = [o for o in synced if o["when"] == "every"]
  sync = [o for o in synced if o["when"] == "sync"]
  strip = lambda ops: sorted(str({k: v for k, v in o.items() if k != "name"}) for o in ops)
  assert strip(every) == strip(plain)  # a non-sync step is the plain vote step
  assert all(o["op"] == "all-reduce" and o["dtype"] == "f32" for o in sync)
  assert sum(o["bytes"] for o in sync) == 4 * params  # every momentum tensor, once
  assert max(o["bytes"] for o in every if o["dtype"] == "f32") <= 4  # only scalar metrics outside it
  row = ledger.step_bytes(synced)
  assert row["sync"] - row["every"] == 2 * 7 / 8 * 4 * params
  config = ledger.step_config("vit_cpu", "mavo_1bit", 16, "every:3")
  assert ledger.sync_share(config, 30) == 1 / 3
  assert ledger.per_step(row, 1 / 3) == pytest.approx(row["every"] + (row["sync"] - row["every"]) / 3)


def test_hierarchical_step_averages_within_nodes_and_votes_across_them():
  ledger = load_ledger()
  ops, params = tiny_step_ops(ledger, "mavo_1bit", hierarchy="node", local_devices=4)
  local = [o for o in ops if o["axis"] == "local" and o["dtype"] == "f32" and o["bytes"] > 4]
  node = [o for o in ops if o["axis"] == "node"]
  assert sum(o["bytes"] for o in local) == 4 * params and all(o["group"] == 4 for o in local)
  assert {o["op"] for o in node} == {"all-to-all", "all-gather"}  # the 1-bit vote, and nothing else
  assert all(o["dtype"] == "u8" and o["group"] == 2 for o in node)
  assert all(o["bytes"] <= 4 for o in ops if o["axis"] == "all")  # scalar metrics
  # the nodes exchange the vote on a quarter of the vector each: ceil(P / 4 / 8) bytes a device, padded
  assert sum(o["bytes"] for o in node if o["op"] == "all-to-all") <= params / 4 / 8 + 8


def test_measured_cost_model_charges_every_operand_of_a_combined_collective():
  """XLA:CPU runs a combined all-reduce as one gloo call per operand: the model charges the instruction's
  alpha once and each operand its own point of the measured per-operand curve (interpolated between the
  points, extrapolated on the last segment's slope)."""
  ledger = load_ledger()
  curve = [[64, 1e-3], [1 << 20, 3e-3], [2 << 20, 5e-3]]
  measured = {"data": {"all-reduce:float": {"alpha": 0.01, "curve": curve}}}
  op = lambda nbytes, name, when="every": {"op": "all-reduce", "dtype": "f32", "bytes": nbytes, "group": 2,
                                           "axis": "data", "name": name, "when": when}
  assert ledger.operand_seconds(curve, 4) == 1e-3
  assert np.isclose(ledger.operand_seconds(curve, 1.5 * (1 << 20)), 4e-3)
  assert np.isclose(ledger.operand_seconds(curve, 4 << 20), 9e-3)
  combined = [op(64, "ar.1"), op(64, "ar.1"), op(1 << 20, "ar.1")]
  assert np.isclose(ledger.comm_seconds(combined, 2, 0, 0, measured=measured), 0.01 + 1e-3 + 1e-3 + 3e-3)
  separate = [op(64, "ar.1"), op(64, "ar.2")]
  assert np.isclose(ledger.comm_seconds(separate, 2, 0, 0, measured=measured), 2 * (0.01 + 1e-3))
  alone = {**op(1 << 20, "ar.5"), "group": 1, "axis": "local"}  # a worker of one device: nothing to send
  assert np.isclose(ledger.comm_seconds(separate + [alone], 2, 0, 0, measured=measured), 2 * (0.01 + 1e-3))
  across = {**op(64, "ar.6"), "axis": "node"}  # one device a node: the flat mesh's costs
  assert np.isclose(ledger.comm_seconds([across], 2, 0, 0, measured=measured), 0.01 + 1e-3)
  synced = combined + [op(2 << 20, "ar.9", "sync")]  # on one step in two of every:2
  assert np.isclose(ledger.comm_seconds(synced, 2, 0, 0, 0.5, measured), 0.015 + (0.01 + 5e-3) / 2)


def test_a_node_s_link_carries_its_devices_shares_and_one_edge_of_a_ring():
  ledger = load_ledger()
  row = {"axes": {"local": {"every": 100.0, "sync": 900.0}, "node": {"every": 0.0, "sync": 10.0},
                  "all": {"every": 2.0, "sync": 2.0}}}
  # 4 devices a node each send their share across on a sync step (1 in 10); the ring leaves the node once
  assert ledger.node_link(row, 0.1, 4) == pytest.approx(4 * 10 * 0.1 + 2)
