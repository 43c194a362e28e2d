"""Committees: models drawn from the posterior of the weights, and an ASE calculator that averages them.

The fit's posterior for α (given the sparse points and hyperparameters) is N(ᾱ, (AᵀA)⁻¹) with
A = QR, so α = ᾱ + R⁻¹ε with ε ~ N(0, I) is a sample: what ``quippy.gap_tools`` draws from a
gap_fit model's exported R (``export_covariance=T``).  The spread of a committee's predictions
estimates the model's uncertainty; its mean tends to the fitted model's prediction.

That spread is the posterior of α alone, with σ, δ and the sparse points held fixed: it leaves out
the error of the model's form and of the hyperparameters, and usually understates the actual error
(several times on held-out data).  :func:`calibrate` scales it, as Musil et al. (J. Chem. Theory
Comput. 15, 906 (2019)) do, by one factor for energies and one for forces chosen on validation
frames by maximum likelihood, with two additions: an error floor s0 for what the posterior cannot
see, and Student-t errors, because held-out errors are heavy-tailed about the committee's spread
(:func:`calibrate`).  Each member stores (k_E, s0_E, ν_E, k_F, s0_F, ν_F) (``<gapfit_committee>`` in
its XML) and :class:`CommitteeCalculator` reports q_ν·√(k²s² + s0²), one σ-equivalent.
"""

from __future__ import annotations

from dataclasses import replace
from typing import List, Optional, Tuple

import numpy as np
import scipy.linalg as sla
from ase.calculators.calculator import Calculator, all_changes

from ..data.targets import TargetNames, frame_targets
from .calculator import GapPotential
from .gap_xml import read_model


def sample_models(model, r: Optional[np.ndarray], n: int, seed: int = 0, comm=None, offsets=None,
                  base_e0: Optional[np.ndarray] = None) -> list:
    """``n`` copies of ``model`` with α = ᾱ + R⁻¹ε (R: the fit's, on rank 0; the samples are broadcast).

    With ``offsets`` (e0_method=joint: the last columns of R, about ``base_e0``) each member's e0 is
    sampled too."""
    n = int(n)
    if n < 1:
        raise ValueError(f"committee: n must be at least 1 (got {n})")
    rank = getattr(comm, "rank", 0)
    if rank == 0 and r is None:
        raise RuntimeError("committee: this fit did not keep R (an MPI dense fit keeps it with export_covariance=T)")
    alpha = np.concatenate([np.asarray(c.alpha, dtype=float) for c in model.coordinates]
                           + ([np.asarray(model.e0)[offsets.species] - np.asarray(base_e0)[offsets.species]]
                              if offsets is not None else []))
    samples = None
    if rank == 0:
        # R's rows with a positive diagonal: the unique Cholesky factor of AᵀA, whatever sequence of
        # Householder reflections (LAPACK, ScaLAPACK, folds on P ranks) made it, so that a seed gives
        # the same committee however the fit ran
        r = np.asarray(r) * np.where(np.diag(r) < 0, -1.0, 1.0)[:, None]
        eps = np.random.default_rng(seed).standard_normal((alpha.size, n))
        samples = alpha[:, None] + sla.solve_triangular(r, eps, lower=False)
    if comm is not None and getattr(comm, "size", 1) > 1:
        samples = comm.bcast(samples, root=0)
    models = []
    for k in range(n):
        start, coordinates = 0, []
        for c in model.coordinates:
            size = np.asarray(c.alpha).size
            coordinates.append(replace(c, alpha=samples[start:start + size, k].copy()))
            start += size
        e0 = offsets.e0(base_e0, samples[:, k]) if offsets is not None else model.e0
        models.append(replace(model, coordinates=coordinates, e0=e0, label=f"{model.label}_committee{k}"))
    return models


#: force components whose committee spread and error are both below this (eV/Å) are left out of the
#: calibration: forces that symmetry makes zero in the data and in every member differ only by rounding
#: (~1e-15) and say nothing about the errors; real spreads are 1e-4 eV/Å and more
SPREAD_FLOOR = 1e-9


#: the largest ν the calibration considers: t_1000 is a Gaussian to 0.05 % in its 68 % interval
NU_MAX = 1000.0

#: Φ(1): a σ-equivalent is the half-width of the central 68.27 % predictive interval
ONE_SIGMA = 0.8413447460685429


def calibrate(models: list, frames, names: TargetNames) -> Tuple[Tuple[float, ...], dict]:
    """The calibration (k_E, s0_E, ν_E, k_F, s0_F, ν_F) of the committee's spread on ``frames``
    (gapfit's frames, from a source's ``read``, with reference energies and forces under ``names``),
    and how many errors each half was fitted to.

    Each error e_i (the committee mean's: per atom for energies, per component for forces) is taken
    as t_ν(0, k²s_i² + s0²), s_i the committee's standard deviation there, and (k, s0, ν) maximise
    the likelihood (:func:`error_model`).  Why the floor: components that the descriptors make nearly
    certain (spread 1e-9 eV/Å by symmetry) while the DFT forces are not zero; with a scale alone those
    few points set k (k ≈ 1e6 on the Ta tests) and the band covers the rest far too widely.  Why
    Student-t: held-out errors are heavy-tailed about the spread (ν ≈ 1–2 on the Ta and InP tests: most
    errors are well inside k·s, a few far outside); a Gaussian's variance is then set by the few, and
    its ±1 std band covered 81–89 % of the errors where a σ-equivalent of the fitted t covers 65–76 %.
    Components zero in the data and every member (both below SPREAD_FLOOR) are left out."""
    if len(models) < 2:
        raise ValueError("calibrate: a committee of at least 2 models is needed (the spread of one is zero)")
    potentials = [GapPotential(m) for m in models]
    errors = {"energy": ([], []), "forces": ([], [])}
    for frame in frames:
        ref = frame_targets(frame, names)
        results = [p.evaluate(frame) for p in potentials]
        if ref.energy is not None:
            energies = np.array([r["energy"] for r in results]) / len(frame)
            errors["energy"][0].append([energies.mean() - ref.energy / len(frame)])
            errors["energy"][1].append([energies.std(ddof=1)])
        if ref.forces is not None and ref.force_atoms.size:
            forces = np.array([r["forces"] for r in results])[:, ref.force_atoms]
            error = (forces.mean(axis=0) - ref.forces[ref.force_atoms]).ravel()
            spread = forces.std(axis=0, ddof=1).ravel()
            keep = (spread > SPREAD_FLOOR) | (np.abs(error) > SPREAD_FLOOR)
            errors["forces"][0].append(error[keep])
            errors["forces"][1].append(spread[keep])
    out, info = [], {}
    for kind in ("energy", "forces"):
        if not errors[kind][0]:
            raise ValueError(f"calibrate: no frame has reference {kind} under the fit's names ({names})")
        e, spread = (np.concatenate([np.ravel(v) for v in errors[kind][k]]) for k in (0, 1))
        out.extend(error_model(e, spread))
        info[kind] = int(e.size)
    return tuple(out), info


def t_log_likelihood(error: np.ndarray, spread: np.ndarray, k: float, floor: float, nu: float) -> float:
    """Σ log t_ν(e_i; 0, k²s_i² + s0²): the Student-t density with scale² k²s_i² + s0² and ν degrees
    of freedom."""
    from scipy.special import gammaln  # lazy: only calibration needs it
    v = k * k * spread * spread + floor * floor
    return float(np.sum(gammaln((nu + 1) / 2) - gammaln(nu / 2) - 0.5 * np.log(nu * np.pi * v)
                        - (nu + 1) / 2 * np.log1p(error * error / (nu * v))))


def error_model(error: np.ndarray, spread: np.ndarray) -> Tuple[float, float, float]:
    """(k, s0, ν) maximising :func:`t_log_likelihood`, ν in [1, NU_MAX] (Nelder–Mead in log k, log s0,
    log ν from three starting ν; the best is kept)."""
    from scipy.optimize import minimize  # lazy: a large import that only calibration needs
    e2, s2 = error * error, spread * spread
    wide = spread > np.median(spread)
    k0 = float(np.sqrt(np.mean(e2[wide] / s2[wide]))) if wide.any() else 1.0
    s0 = float(np.sqrt(np.mean(e2))) or 1e-12

    def nll(p):
        return -t_log_likelihood(error, spread, np.exp(p[0]), np.exp(p[1]), np.exp(p[2]))
    best = None
    for nu in (1.5, 5.0, 100.0):
        trial = minimize(nll, np.log([k0, s0, nu]), method="Nelder-Mead",
                         bounds=[(None, None), (None, None), (0.0, np.log(NU_MAX))],
                         options={"xatol": 1e-8, "fatol": 1e-10, "maxiter": 8000})
        if best is None or trial.fun < best.fun:
            best = trial
    k, floor, nu = np.exp(best.x)
    return float(k), float(floor), float(min(max(nu, 1.0), NU_MAX))


def with_scale(models: list, calibration) -> list:
    """The members, each carrying the committee's calibration (written into its XML)."""
    return [replace(m, committee_scale=tuple(float(v) for v in calibration)) for m in models]


def sigma_equivalent(nu: float) -> float:
    """q_ν = t_ν⁻¹(Φ(1)): the central 68.27 % interval of t_ν(0, 1) is ±q_ν (1 for a Gaussian)."""
    from scipy.special import stdtrit  # lazy: only calibrated committees need it
    return float(stdtrit(nu, ONE_SIGMA))


def calibrated_std(calibration, energy_std: float, forces_std: np.ndarray, n_atoms: int):
    """The calibrated σ-equivalents q_ν·√(k²s² + s0²) (energies: s0 per atom, so N·s0 in total)."""
    k_e, s0_e, nu_e, k_f, s0_f, nu_f = calibration
    return (sigma_equivalent(nu_e) * float(np.hypot(k_e * energy_std, n_atoms * s0_e)),
            sigma_equivalent(nu_f) * np.hypot(k_f * forces_std, s0_f))


class CommitteeCalculator(Calculator):
    """An ASE calculator over a committee of GAP models (GapModel objects or XML paths).

    Results: ``energy``, ``forces``, ``stress`` (when the structure has a cell) are the committee's
    means; ``energy_std`` (eV) and ``forces_std`` (eV/Å, per component) its standard deviations, or,
    when the members carry a calibration (:func:`calibrate`; ``committee_scale`` holds (k_E, s0_E, ν_E,
    k_F, s0_F, ν_F)), the calibrated σ-equivalents q_ν·√(k²s² + s0²): ±1 of them is the central 68 %
    predictive interval; ``energies`` the members' energies.
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress", "energy_std", "forces_std", "energies"]

    def __init__(self, models: List[object], **kwargs):
        super().__init__(**kwargs)
        if not models:
            raise ValueError("CommitteeCalculator needs at least one model")
        self.potentials = [GapPotential(read_model(m) if isinstance(m, str) else m) for m in models]
        scales = {p.model.committee_scale for p in self.potentials}
        if len(scales) > 1:
            raise ValueError(f"CommitteeCalculator: the members carry different calibrations: {sorted(map(str, scales))}")
        self.committee_scale = scales.pop()

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        results = [p.evaluate(self.atoms) for p in self.potentials]
        energies = np.array([r["energy"] for r in results])
        forces = np.array([r["forces"] for r in results])
        raw_e = float(energies.std(ddof=1)) if energies.size > 1 else 0.0
        raw_f = forces.std(axis=0, ddof=1) if energies.size > 1 else np.zeros_like(forces[0])
        energy_std, forces_std = raw_e, raw_f
        if self.committee_scale is not None:
            energy_std, forces_std = calibrated_std(self.committee_scale, raw_e, raw_f, len(self.atoms))
        self.results = {"energy": float(energies.mean()), "free_energy": float(energies.mean()),
                        "forces": forces.mean(axis=0), "energies": energies,
                        "energy_std": energy_std, "forces_std": forces_std}
        if self.atoms.cell.rank == 3:
            virial = np.mean([r["virial"] for r in results], axis=0)
            stress = -virial / self.atoms.get_volume()
            self.results["stress"] = stress.reshape(-1)[[0, 4, 8, 5, 2, 1]]

