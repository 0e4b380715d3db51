import numpy as np
import pytest

from fractalpre.fractals import ifs


@pytest.mark.parametrize("n_maps", [2, 3, 4, 7])
def test_singular_values_meet_the_target_exactly(n_maps):
  for trial in range(300):
    rng = ifs.rng_for(trial, n_maps)
    lo, hi = ifs.sigma_range(n_maps)
    target = rng.uniform(lo + 1e-3, hi - 1e-3)
    s = ifs.sample_singular_values(rng, n_maps, target)
    assert np.sum(s[:, 0] + 2 * s[:, 1]) == pytest.approx(target, abs=1e-12)
    assert np.all(s[:, 0] <= 1 + 1e-12) and np.all(s[:, 1] >= -1e-12)
    assert np.all(s[:, 0] >= s[:, 1] - 1e-12)


@pytest.mark.parametrize("sigma", [2.5, 3.5, 4.0, 5.5])
def test_sigma_factor_of_a_sampled_system_equals_its_target(sigma):
  for trial in range(50):
    system = ifs.sample_sigma_system(ifs.rng_for(trial), 2, sigma)
    assert system.shape == (2, 2, 3) and system.dtype == np.float64
    assert ifs.sigma_factor(system) == pytest.approx(sigma, abs=1e-9)
    assert np.all(np.abs(system[:, :, 2]) <= 1)


def test_sigma_factor_from_known_singular_values():
  rot = np.array([[0.0, -1.0], [1.0, 0.0]])
  system = np.zeros((2, 2, 3))
  system[0, :, :2] = rot @ np.diag([0.8, 0.3])
  system[1, :, :2] = np.diag([-0.5, 0.5])
  assert ifs.sigma_factor(system) == pytest.approx(0.8 + 0.6 + 0.5 + 1.0)


@pytest.mark.parametrize("sigma", [0.0, -1.0, 6.0, 7.5])
def test_sigma_outside_the_open_range_is_refused(sigma):
  with pytest.raises(ValueError, match=r"sigma must be in \(0, 6\)"):
    ifs.sample_sigma_system(ifs.rng_for(0), 2, sigma)


def test_probabilities_follow_abs_det():
  system = ifs.sample_fractaldb_system(ifs.rng_for(3))
  p = ifs.map_probabilities(system)
  det = np.abs([a[0, 0] * a[1, 1] - a[0, 1] * a[1, 0] for a in system[:, :, :2]])
  assert p.sum() == pytest.approx(1.0)
  np.testing.assert_allclose(p, det / det.sum())
  np.testing.assert_allclose(ifs.map_probabilities(np.zeros((3, 2, 3))), [1 / 3] * 3)


def test_start_point_is_the_fixed_point_of_the_first_map():
  system = ifs.sample_sigma_system(ifs.rng_for(1), 3, 4.0)
  v = ifs.start_point(system)
  np.testing.assert_allclose(system[0, :, :2] @ v + system[0, :, 2], v, atol=1e-12)


def test_perturbations_stay_in_their_ranges():
  system = ifs.sample_sigma_system(ifs.rng_for(2), 2, 3.5)
  mult = ifs.perturb(system, 0.1, ifs.rng_for(5))
  ratio = mult / system
  assert np.all((ratio >= 0.9) & (ratio <= 1.1)) and not np.allclose(ratio, 1)
  add = ifs.perturb(system, 0.1, ifs.rng_for(5), "additive")
  assert np.all(np.abs(add - system) <= 0.05) and not np.allclose(add, system)
  np.testing.assert_array_equal(ifs.perturb(system, 0.0, ifs.rng_for(5)), system)
  with pytest.raises(ValueError, match="delta must be >= 0, got -0.1"):
    ifs.perturb(system, -0.1, ifs.rng_for(5))
  with pytest.raises(ValueError, match="perturbation must be one of"):
    ifs.perturb(system, 0.1, ifs.rng_for(5), "shear")


def test_fractaldb_sampler_and_scaling_rows():
  counts = {len(ifs.sample_fractaldb_system(ifs.rng_for(i))) for i in range(200)}
  assert counts == set(range(2, 8))
  system = ifs.sample_fractaldb_system(ifs.rng_for(9))
  np.testing.assert_array_equal(ifs.fractaldb_scaling(system, 0), system)
  rows = [ifs.fractaldb_scaling(system, r) for r in range(ifs.FRACTALDB_ROWS)]
  assert len({r.tobytes() for r in rows}) == 25
  # Row 1 + 4 j + f scales parameter j (row-major a..f) of every map by factor f, and nothing else.
  scaled = ifs.fractaldb_scaling(system, 1 + 4 * 4 + 2)  # parameter 4 = A[1, 1], factor 1.4
  expected = system.copy()
  expected[:, 1, 1] *= 1.4
  np.testing.assert_allclose(scaled, expected)
  with pytest.raises(ValueError, match=r"row must be in \[0, 25\)"):
    ifs.fractaldb_scaling(system, 25)


def test_rng_for_is_a_pure_function_of_its_key():
  assert ifs.rng_for(1, 2, 3).random() == ifs.rng_for(1, 2, 3).random()
  assert ifs.rng_for(1, 2, 3).random() != ifs.rng_for(1, 3, 2).random()
