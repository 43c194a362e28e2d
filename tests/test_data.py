"""Targets, σ precedence, stress→virial, e0 and the distribution over ranks."""

import math

import numpy as np
import pytest

from gapfit.config.fit_config import build_config
from gapfit.config.targets import parse_e0
from gapfit.data.e0 import compute_e0
from gapfit.config.targets import SigmaTable, TargetNames
from gapfit.data.targets import frame_rows, species_in_order
from gapfit.data.distribute import distribute
from gapfit.errors import ConfigError, DataError
from gapfit.data.extxyz import Frame, index_xyz
from gapfit.descriptors.neighbours import neighbour_list
from gapfit.options.top_level import parse_top_level

NAMES = TargetNames("energy", "forces", "virial", "stress", "hessian", "config_type", "sigma", "force_mask",
                    "local_property")


def frame(n=2, info=None, arrays=None, cell=5.0):
    rng = np.random.default_rng(0)
    return Frame(numbers=np.full(n, 14), positions=rng.random((n, 3)) * cell, cell=np.eye(3) * cell,
                 pbc=np.array([True] * 3), info=dict(info or {}), arrays=dict(arrays or {}), index=3)


E0 = np.zeros(119)
E0[14] = -1.5


def test_rows_order_and_defaults():
    f = frame(2, {"energy": -10.0, "virial": np.arange(9.0)}, {"forces": np.arange(6.0).reshape(2, 3)})
    r = frame_rows(f, NAMES, SigmaTable([0.01, 0.1, 0.05, 0.0]), E0, sigma_per_atom=True)
    assert r.n_rows == 1 + 6 + 6
    assert r.y[0] == pytest.approx(-10.0 + 3.0)
    assert np.array_equal(r.y[1:7], -np.arange(6.0))
    w = np.arange(9.0).reshape(3, 3, order="F")
    w = 0.5 * (w + w.T)
    assert np.allclose(r.y[7:], [-w[0, 0], -w[1, 0], -w[2, 0], -w[1, 1], -w[2, 1], -w[2, 2]])
    assert r.sigma[0] == pytest.approx(0.01 * math.sqrt(2))
    assert np.allclose(r.sigma[1:7], 0.1) and np.allclose(r.sigma[7:], 0.05 * math.sqrt(2))


def test_stress_used_only_without_virial():
    voigt = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    f = frame(2, {"energy": -1.0, "stress": voigt})
    r = frame_rows(f, NAMES, SigmaTable([1, 1, 1, 0]), E0, True)
    s = np.array([[1, 6, 5], [6, 2, 4], [5, 4, 3]], dtype=float)
    w = -s * 125.0
    assert np.allclose(r.y[1:], [-w[0, 0], -w[1, 0], -w[2, 0], -w[1, 1], -w[2, 1], -w[2, 2]])
    f2 = frame(2, {"energy": -1.0, "stress": voigt, "virial": np.zeros(9)})
    assert np.allclose(frame_rows(f2, NAMES, SigmaTable([1, 1, 1, 0]), E0, True).y[1:], 0.0)


def test_sigma_precedence():
    table = SigmaTable([0.01, 0.1, 0.05, 0.0], "bulk:0.02:0.2:0.06:0.0")
    info = {"energy": 1.0, "config_type": "bulk", "virial": np.eye(3).reshape(9), "force_sigma": 0.3,
            "virial_sigma": 0.7}
    arrays = {"forces": np.zeros((2, 3)), "force_atom_sigma": np.array([0.4, 0.5])}
    r = frame_rows(frame(2, info, arrays), NAMES, table, E0, True)
    assert r.sigma[0] == pytest.approx(0.02 * math.sqrt(2))  # config_type group, per atom
    assert np.allclose(r.sigma[1:7], [0.4] * 3 + [0.5] * 3)  # force_atom_sigma beats force_sigma
    assert np.allclose(r.sigma[7:], 0.7)  # virial_sigma is absolute
    arrays["force_component_sigma"] = np.full((2, 3), 0.9)
    info["energy_sigma"] = 0.25
    r = frame_rows(frame(2, info, arrays), NAMES, table, E0, False)
    assert r.sigma[0] == 0.25 and np.allclose(r.sigma[1:7], 0.9)
    info2 = {"energy": 1.0, "config_type": "unknown"}
    assert frame_rows(frame(2, info2), NAMES, table, E0, False).sigma[0] == 0.01  # falls back to default


def test_force_mask_and_zero_sigma():
    f = frame(3, {"energy": 1.0}, {"forces": np.ones((3, 3)), "force_mask": np.array([False, True, False])})
    r = frame_rows(f, NAMES, SigmaTable([1, 1, 1, 0]), E0, True)
    assert list(r.force_atoms) == [0, 2] and r.n_rows == 7
    with pytest.raises(DataError, match="energy σ is 0"):
        frame_rows(frame(2, {"energy": 1.0}), NAMES, SigmaTable([0.0, 1, 1, 0]), E0, True)


def test_nan_force_is_an_error():
    forces = np.zeros((2, 3))
    forces[1, 2] = np.nan
    with pytest.raises(DataError, match="force on atom 2"):
        frame_rows(frame(2, {"energy": 1.0}, {"forces": forces}), NAMES, SigmaTable([1, 1, 1, 0]), E0, True)


def test_config_type_sigma_errors():
    with pytest.raises(ConfigError, match="groups of 5"):
        SigmaTable([1, 1, 1, 0], "bulk:1:1:1")


def test_parse_e0():
    e0 = parse_e0("{Si:-158.5:C:-10}")
    assert e0[14] == -158.5 and e0[6] == -10 and e0[1] == 0
    assert np.all(parse_e0("-2.5")[1:] == -2.5)
    with pytest.raises(ConfigError, match="unknown element"):
        parse_e0("{Xx:1}")


def _e0(args, path):
    o = parse_top_level([f"at_file={path}", "default_sigma={1 1 1 0}",
                         "gap={distance_2b cutoff=4 covariance_type=ard_se delta=1 theta_uniform=1 n_sparse=4}"] + args)
    names = TargetNames.from_options(o.values)
    entries, singles = index_xyz(str(path))
    species = species_in_order(entries)
    return compute_e0(build_config(o).targets.e0, entries, singles, species, names, 4.0, neighbour_list)[0], species


def test_e0_isolated_and_average(quip_data):
    e0, species = _e0(["energy_parameter_name=dft_energy", "e0_offset=2.0"], quip_data / "SiC.np1.xyz")
    assert species == [14, 6]
    assert e0[14] == pytest.approx(-615.462265489081 + 2.0) and e0[6] == pytest.approx(-237.11457155796182 + 2.0)
    assert e0[1] == 0.0
    e0, _ = _e0(["energy_parameter_name=dft_energy", "e0_method=average"], quip_data / "SiC.np1.xyz")
    assert e0[14] == e0[6] and e0[1] == 0.0


def test_e0_isolated_missing_species(ta_xyz):
    with pytest.raises(DataError, match="isolated.*Ta.*e0_method=average"):
        _e0([], ta_xyz)


def test_distribution_worked_example():
    # interface notes §6: weights 30, 25, 25, 10, 5; M = 12; two workers
    d = distribute([30, 25, 25, 10, 5], 2, 12)
    assert sorted(np.nonzero(d.owner == 0)[0].tolist()) == [0, 3, 4]
    assert list(d.data_rows) == [45, 50]
    assert list(d.u_count) == [9, 3] and list(d.u_start) == [0, 9]
    assert d.unified_rows == 54
