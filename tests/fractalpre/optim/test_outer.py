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


def mean_on_mesh(trees, s, shares=False):
  """`outer.mean` under shard_map on a (worker, data) mesh of 8 devices: what every device got (the
  first device of each worker; the others are checked to agree). `shares`: each device of a worker sends
  its share across the workers."""
  mesh = outer_step.step_mesh(jax.devices(), s.workers)
  local = 8 // s.workers
  stacked = [np.stack([t[i] for t in trees]) for i in range(len(SHAPES))]

  def body(tree):
    args = (outer_step.INNER_AXIS, local) if shares else ()
    return [x[None] for x in outer.mean([x[0] for x in tree], s, jnp.int32(0), *args)]

  spec = [P(outer.AXIS)] * len(SHAPES)
  every_device = [P((outer.AXIS, outer_step.INNER_AXIS))] * len(SHAPES)
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
  for a, b in zip(got, mean_on_mesh(trees, s, shares=True)):  # in shares: the same numbers
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
    else:  # the majority's sign (even ties: +1 at count 0) times the workers' mean of mean |x|
      positive = xs >= 0  # an exact zero sends the tie-break bit, +1 at count 0
      votes = positive.sum(0) * 2 - s.workers
      sign = np.where(votes > 0, 1, np.where(votes < 0, -1, 1))
      scale = np.mean([np.abs(x).mean() for x in xs])
      np.testing.assert_allclose(result, sign * scale, rtol=1e-6)


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


@pytest.mark.parametrize("every,fragments", [(10, 1), (10, 2), (12, 3), (5, 5)])
def test_each_fragment_syncs_once_every_h_steps_at_staggered_steps(every, fragments):
  s = settings(every=every, fragments=fragments)
  steps = [outer.sync_steps(f, s, 10 * every) for f in range(fragments)]
  for f, fs in enumerate(steps):
    assert len(fs) == 10 and np.all(np.diff(fs) == every)
    assert [int(outer.due(jnp.int32(t), f, s)) for t in range(1, 10 * every + 1)] == \
        [int(t in fs) for t in range(1, 10 * every + 1)]
  assert steps[-1][0] == every  # the last fragment syncs where unfragmented DiLoCo does
  firsts = [fs[0] for fs in steps]
  assert len(set(firsts)) == fragments  # staggered: no two fragments on one step


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
