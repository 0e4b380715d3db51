import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from fractalpre.optim import outer
from fractalpre.training import outer_step

SHAPES = [(5, 7), (3,), (1, 4, 6)]


def settings(**kw):
  base = dict(workers=4, every=10, lr=0.7, momentum=0.9, comm="fp32", fragments=1)
  return outer.settings(ml_collections.ConfigDict({**base, **kw}), 8)


def worker_trees(workers, seed=0):
  """One tree per worker: tensors of very different scales, with exact zeros."""
  rng = np.random.default_rng(seed)
  trees = [[(10.0 ** (i - 1)) * rng.normal(size=shape).astype(np.float32) for i, shape in enumerate(SHAPES)]
           for _ in range(workers)]
  trees[0][1][0] = 0.0
  return trees


def mean_on_mesh(trees, s, shares=False, seed=0):
  """`outer.mean` under shard_map on a (worker, data) mesh of 8 devices: what every device got (the
  first device of each worker; the others are checked to agree). `shares`: each device of a worker sends
  its share across the workers."""
  mesh = outer_step.step_mesh(jax.devices(), s.workers)
  local = 8 // s.workers
  count = len(trees[0])
  stacked = [np.stack([t[i] for t in trees]) for i in range(count)]

  def body(tree):
    args = (outer_step.INNER_AXIS, local) if shares else ()
    return [x[None] for x in outer.mean([x[0] for x in tree], s, jax.random.key(seed), *args)]

  spec = [P(outer.AXIS)] * count
  every_device = [P((outer.AXIS, outer_step.INNER_AXIS))] * count
  f = jax.jit(jax.shard_map(body, mesh=mesh, in_specs=(spec,), out_specs=every_device, check_vma=False))
  out = [np.asarray(x) for x in f([jax.device_put(x, NamedSharding(mesh, P(outer.AXIS))) for x in stacked])]
  for x in out:  # a worker's devices hold the same result
    for d in range(1, local):
      np.testing.assert_array_equal(x[d::local], x[::local])
  return [x[::local] for x in out]


@pytest.mark.parametrize("comm", outer.COMMS)
def test_compressed_means_are_within_their_quantisation_of_the_mean_and_agree_on_every_worker(comm):
  s = settings(comm=comm)
  trees = worker_trees(s.workers)
  got = mean_on_mesh(trees, s)
  if comm != "1bit":  # in shares: the same numbers (1bit: other random bits, tested below)
    for a, b in zip(got, mean_on_mesh(trees, s, shares=True)):
      np.testing.assert_array_equal(a, b)
  for i, shape in enumerate(SHAPES):
    xs = np.stack([t[i] for t in trees])
    for w in range(1, s.workers):  # every worker applies the same outer step
      np.testing.assert_array_equal(got[i][w], got[i][0])
    result, exact = got[i][0], xs.mean(0)
    biggest = np.abs(xs).max()
    if comm == "fp32":
      np.testing.assert_allclose(result, exact, rtol=1e-6, atol=1e-7 * biggest)
    elif comm == "bf16":  # two roundings to 8 significant bits
      np.testing.assert_allclose(result, exact, rtol=2 ** -7, atol=2 ** -8 * biggest)
    elif comm in ("int8", "4bit"):  # codes of the tensor's largest |value|: half a level twice
      levels = 127 if comm == "int8" else 7
      assert np.abs(result - exact).max() <= biggest / levels * (1 + 1e-5)
      assert np.abs(result - exact).max() > 0
    else:  # a sign times the workers' mean of mean |x|: the common sign where all workers agree
      scale = np.mean([np.abs(x).mean() for x in xs])
      np.testing.assert_allclose(np.abs(result), scale, rtol=1e-6)
      agreed = np.all(xs > 0, 0) | np.all(xs < 0, 0)
      np.testing.assert_array_equal(np.sign(result)[agreed], np.sign(xs[0])[agreed])


@pytest.mark.parametrize("shares", [False, True])
def test_one_bit_mean_is_the_mean_of_the_signs_in_expectation(shares):
  """Where two workers disagree the 1-bit mean is +-scale at random, 0 on average: a fixed tie-break
  would move every such parameter the same way at every sync. Where they agree it is their sign."""
  s = settings(workers=2, comm="1bit")
  rng = np.random.default_rng(1)
  a = rng.normal(size=40_000).astype(np.float32)
  b = np.where(np.arange(a.size) % 2 == 0, a, -a).astype(np.float32)  # agree on even, disagree on odd
  b[:100] = a[:100] = 0.0  # exact zeros on both: 0 on average too
  got = mean_on_mesh([[a], [b]], s, shares)[0][0]
  scale = (np.abs(a).mean() + np.abs(b).mean()) / 2
  np.testing.assert_allclose(np.abs(got), scale, rtol=1e-6)
  agree = (np.arange(a.size) % 2 == 0) & (a != 0)
  np.testing.assert_array_equal(np.sign(got[agree]), np.sign(a[agree]))
  ties = ~agree
  assert abs(got[ties].mean() / scale) < 4 / np.sqrt(ties.sum())  # unbiased, to 4 standard deviations
  other = mean_on_mesh([[a], [b]], s, shares, seed=1)[0][0]  # another sync's key: other random bits
  assert (np.sign(other[ties]) != np.sign(got[ties])).mean() > 0.4


def test_compressed_means_of_identical_workers_lose_only_their_rounding():
  trees = worker_trees(1) * 4
  for comm, tol in (("bf16", 2 ** -8), ("int8", 1 / 127), ("4bit", 1 / 7)):
    got = mean_on_mesh(trees, settings(comm=comm))
    for i in range(len(SHAPES)):
      assert np.abs(got[i][0] - trees[0][i]).max() <= tol * np.abs(trees[0][i]).max() * (1 + 1e-5)


def test_fragments_are_runs_of_leaves_of_about_equal_size():
  sizes = [100, 5, 100, 5, 100, 5, 100, 5]
  groups = outer.fragment_leaves(sizes, 4)
  assert sum(groups, []) == list(range(8)) and all(groups)
  assert [sum(sizes[i] for i in g) for g in groups] == [105] * 4
  assert outer.fragment_leaves([1000, 1, 1], 3) == [[0], [1], [2]]  # none empty, even behind a big one
  with pytest.raises(ValueError, match="at most the model's 3 parameter tensors, got 4"):
    outer.fragment_leaves([1, 1, 1], 4)


@pytest.mark.parametrize("every,fragments,last", [(10, 1, 100), (10, 2, 100), (12, 3, 125), (5, 5, 50), (10, 1, 7)])
def test_each_fragment_syncs_every_h_steps_at_staggered_steps_and_all_after_the_last(every, fragments, last):
  s = settings(every=every, fragments=fragments)
  steps = [outer.sync_steps(f, s, last) for f in range(fragments)]
  for f, fs in enumerate(steps):
    assert fs[-1] == last and all(t % every == (f + 1) * every // fragments % every for t in fs[:-1])
    assert np.all(np.diff(fs[:-1]) == every) and last - fs[-2 if len(fs) > 1 else -1] <= every
    assert [int(outer.due(jnp.int32(t), f, s, last)) for t in range(1, last + 1)] == \
        [int(t in fs) for t in range(1, last + 1)]
  if last >= every:
    assert every in steps[-1]  # the last fragment syncs where unfragmented DiLoCo does
    assert len({fs[0] for fs in steps}) == fragments  # staggered: no two fragments on one step
  syncs = sum(len(fs) for fs in steps)
  assert outer.sync_share(s, last) == pytest.approx(syncs / last)


@pytest.mark.parametrize("key,value,message", [
    ("every", 0, "outer.every must be an integer >= 1, got 0"),
    ("workers", 3, "outer.workers must divide the 8 devices into equal workers, got 3"),
    ("workers", -2, "outer.workers must be an integer >= 1, got -2"),
    ("comm", "fp16", "outer.comm must be one of fp32, bf16, int8, 4bit, 1bit, got 'fp16'"),
    ("fragments", 11, "outer.fragments must be an integer >= 1 and <= 10, got 11"),
    ("lr", float("nan"), "outer.lr must be a finite number > 0, got nan"),
    ("momentum", 1.0, "outer.momentum must be a number in [0, 1), got 1.0"),
])
def test_bad_outer_settings_are_refused_naming_the_key(key, value, message):
  with pytest.raises(ValueError) as caught:
    settings(**{key: value})
  assert str(caught.value) == message


def test_outer_is_off_without_workers():
  assert outer.settings(ml_collections.ConfigDict(dict(workers=0, every=0)), 8) is None


def test_outer_steps_follow_diloco_with_nesterov_momentum_fragments_and_a_last_sync():
  """`outer_step.make_step` with a toy inner step (each worker pulled towards its own target) against DiLoCo
  written out in NumPy: H inner steps, the workers' mean pseudo-gradient, optax's Nesterov outer step, the
  workers restarting from the global parameters, two fragments on staggered steps, all synced after the last."""
  s = settings(workers=2, every=2, fragments=2, lr=0.7, momentum=0.9)
  last, inner_lr = 5, 0.3
  mesh = outer_step.step_mesh(jax.devices(), s.workers)
  rng = np.random.default_rng(0)
  start = {"a": rng.normal(size=(3,)).astype(np.float32), "b": rng.normal(size=(2, 2)).astype(np.float32)}
  targets = {k: rng.normal(size=(8,) + v.shape).astype(np.float32) for k, v in start.items()}  # one per device

  def inner(view, batch, rngs):  # the gradient of |params - target|^2 / 2, averaged over the worker's devices
    grads = jax.tree.map(lambda p, t: jax.lax.pmean(p - t[0], outer_step.INNER_AXIS), view["params"], batch)
    params = jax.tree.map(lambda p, g: p - inner_lr * g, view["params"], grads)
    return {**view, "params": params, "step": view["step"] + 1}, {"loss": jnp.zeros(())}

  tx = outer.optimizer(s)
  state = outer_step.add_state({"step": jnp.zeros((), jnp.int32), "params": start, "opt_state": {}}, s, tx)
  specs = outer_step.state_specs(state)
  step = jax.jit(jax.shard_map(outer_step.make_step(inner, s, tx, 4, last), mesh=mesh,
                               in_specs=(specs, P((outer.AXIS, outer_step.INNER_AXIS)), P()),
                               out_specs=(specs, P(outer.AXIS)), check_vma=False))
  for _ in range(last):
    state, _ = step(state, targets, {"outer": jax.random.key(0)})

  # DiLoCo in NumPy: fragment 0 is leaf "a" (synced after steps 1, 3, 5), fragment 1 leaf "b" (2, 4, 5)
  goal = {k: v.reshape(2, 4, *v.shape[1:]).mean(1) for k, v in targets.items()}  # each worker's target
  theta = {k: v.astype(np.float64) for k, v in start.items()}
  workers = {k: np.stack([v, v]) for k, v in theta.items()}
  trace = {k: np.zeros_like(v) for k, v in theta.items()}
  schedule = {"a": {1, 3, 5}, "b": {2, 4, 5}}
  for t in range(1, last + 1):
    for k in theta:
      workers[k] = workers[k] - inner_lr * (workers[k] - goal[k])
      if t in schedule[k]:
        delta = (theta[k] - workers[k]).mean(0)
        trace[k] = delta + 0.9 * trace[k]
        theta[k] = theta[k] - 0.7 * (delta + 0.9 * trace[k])
        workers[k] = np.stack([theta[k], theta[k]])
  for k in theta:
    np.testing.assert_allclose(np.asarray(state["params"][k]), theta[k], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(state["outer"]["params"][k]), workers[k], rtol=1e-5, atol=1e-6)
  assert int(state["step"]) == last
