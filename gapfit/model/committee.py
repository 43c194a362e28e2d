"""Committees: models drawn from the posterior of the weights, and an ASE calculator that averages them.

The fit's posterior for α (given the sparse points and hyperparameters) is N(ᾱ, (AᵀA)⁻¹) with
A = QR, so α = ᾱ + R⁻¹ε with ε ~ N(0, I) is a sample: what ``quippy.gap_tools`` draws from a
gap_fit model's exported R (``export_covariance=T``).  The spread of a committee's predictions
estimates the model's uncertainty; its mean tends to the fitted model's prediction.

That spread is the posterior of α alone, with σ, δ and the sparse points held fixed: it leaves out
the error of the model's form and of the hyperparameters, and usually understates the actual error
(several times on held-out data).  :func:`calibrate` scales it, as Musil et al. (J. Chem. Theory
Comput. 15, 906 (2019)) do, by one factor for energies and one for forces chosen on validation
frames by maximum likelihood: if an error e_i is N(0, k²s_i²) with s_i the committee's standard
deviation, the likelihood is largest at k² = mean(e_i²/s_i²).  Each member stores (k_E, k_F)
(``<gapfit_committee>`` in its XML) and :class:`CommitteeCalculator` multiplies its standard
deviations by them.
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


#: force components whose committee spread is below this (eV/Å) are left out of the calibration: forces
#: that symmetry makes zero in every member differ only by rounding (~1e-15), and their ratio error/spread
#: would be rounding over rounding; real spreads are 1e-4 eV/Å and more
SPREAD_FLOOR = 1e-9


def calibrate(models: list, frames, names: TargetNames) -> Tuple[Tuple[float, float], dict]:
    """(k_E, k_F), the scales of the committee spread that make it match the errors on ``frames``
    (gapfit's frames, from a source's ``read``, with reference energies and forces under ``names``),
    by maximum likelihood (module docstring), and how many errors each was estimated from.

    Errors are the committee mean's; force components whose spread is below ``SPREAD_FLOOR`` (zero by
    symmetry) are left out."""
    if len(models) < 2:
        raise ValueError("calibrate: a committee of at least 2 models is needed (the spread of one is zero)")
    potentials = [GapPotential(m) for m in models]
    ratios = {"energy": [], "forces": []}
    for frame in frames:
        ref = frame_targets(frame, names)
        results = [p.evaluate(frame) for p in potentials]
        if ref.energy is not None:
            energies = np.array([r["energy"] for r in results])
            ratios["energy"].append(np.array([(energies.mean() - ref.energy) / energies.std(ddof=1)]))
        if ref.forces is not None and ref.force_atoms.size:
            forces = np.array([r["forces"] for r in results])[:, ref.force_atoms]
            spread = forces.std(axis=0, ddof=1)
            keep = spread > SPREAD_FLOOR
            ratios["forces"].append(((forces.mean(axis=0) - ref.forces[ref.force_atoms])[keep] / spread[keep]).ravel())
    scales, info = [], {}
    for kind in ("energy", "forces"):
        r = np.concatenate(ratios[kind]) if ratios[kind] else np.zeros(0)
        r = r[np.isfinite(r)]
        if r.size == 0:
            raise ValueError(f"calibrate: no frame has reference {kind} under the fit's names ({names})")
        scales.append(float(np.sqrt(np.mean(r * r))))
        info[kind] = int(r.size)
    return (scales[0], scales[1]), info


def with_scale(models: list, scale: Tuple[float, float]) -> list:
    """The members, each carrying the committee's calibration (written into its XML)."""
    return [replace(m, committee_scale=(float(scale[0]), float(scale[1]))) for m in models]


class CommitteeCalculator(Calculator):
    """An ASE calculator over a committee of GAP models (GapModel objects or XML paths).

    Results: ``energy``, ``forces``, ``stress`` (when the structure has a cell) are the committee's
    means; ``energy_std`` (eV) and ``forces_std`` (eV/Å, per component) its standard deviations,
    multiplied by the members' calibration (k_E, k_F) when they carry one (:func:`calibrate`;
    ``committee_scale`` holds it, (1, 1) otherwise), and ``energies`` the members' energies.
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
        self.committee_scale = scales.pop() or (1.0, 1.0)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        results = [p.evaluate(self.atoms) for p in self.potentials]
        energies = np.array([r["energy"] for r in results])
        forces = np.array([r["forces"] for r in results])
        self.results = {"energy": float(energies.mean()), "free_energy": float(energies.mean()),
                        "forces": forces.mean(axis=0), "energies": energies,
                        "energy_std": self.committee_scale[0] * float(energies.std(ddof=1)) if energies.size > 1 else 0.0,
                        "forces_std": (self.committee_scale[1] * forces.std(axis=0, ddof=1) if energies.size > 1
                                       else np.zeros_like(forces[0]))}
        if self.atoms.cell.rank == 3:
            virial = np.mean([r["virial"] for r in results], axis=0)
            stress = -virial / self.atoms.get_volume()
            self.results["stress"] = stress.reshape(-1)[[0, 4, 8, 5, 2, 1]]

