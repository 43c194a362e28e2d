"""e0, the energy of an isolated atom of each species, which the GAP's targets are net of.

gap_fit's two ways (``e0_method=isolated``: single-atom frames without neighbours; ``average``:
the mean energy per atom, one value for every species), a given ``e0``, and gapfit's
``e0_method=least_squares``: one e0 per species from the least-squares fit of the frames'
energies per atom to their composition, min Σ_f ((E_f − Σ_s n_fs e0_s) / N_f)², which is what
data of varying stoichiometry needs (GAP issue #4).  ``average`` on such data draws a warning.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import scipy.linalg as sla
from ase.data import chemical_symbols

from ..config.targets import N_ELEMENTS, E0Rule, TargetNames
from ..errors import DataError
from .extxyz import Frame, FrameIndex
from .targets import energy_of


def isolated_atom_energies(single_atom_frames: Sequence[Frame], names: TargetNames, max_cutoff: float,
                           neighbour_list) -> Dict[int, Tuple[float, Frame]]:
    """e0 candidates: one-atom frames with an energy and no neighbour within ``max_cutoff``."""
    found: Dict[int, Tuple[float, Frame]] = {}
    for frame in single_atom_frames:
        energy = energy_of(frame.info, names, frame.where)
        if energy is None:
            continue
        nl = neighbour_list(frame.positions, frame.cell, frame.pbc, max_cutoff)
        if nl.n_pairs:
            continue
        z = int(frame.numbers[0])
        if z in found:
            raise DataError(f"{frame.where}: a second isolated-atom frame of element Z={z} "
                            f"(the first is {found[z][1].where}); e0 would be ambiguous")
        found[z] = (energy, frame)
    return found


def compute_e0(rule: E0Rule, entries: Sequence[FrameIndex], single_atom_frames: Sequence[Frame],
               species: Sequence[int], names: TargetNames, max_cutoff: float, neighbour_list,
               core_energy: Optional[Dict[int, float]] = None) -> Tuple[np.ndarray, str, List[str]]:
    """e0 per element (index = Z) by ``rule``, a one-line description of how it was set, and warnings.

    ``core_energy`` (frame index → the core potential's energy) is subtracted from each
    energy first, as gap_fit computes e0 from core-subtracted energies.
    """
    core_energy = core_energy or {}
    warnings: List[str] = []
    if rule.given is not None:
        e0 = np.array(rule.given, dtype=float)
        how = f"e0 given: {rule.text}"
    elif rule.method == "isolated":
        found = isolated_atom_energies(single_atom_frames, names, max_cutoff, neighbour_list)
        missing = [z for z in species if z not in found]
        if missing:
            sym = ", ".join(f"{chemical_symbols[z]} (Z={z})" for z in missing)
            raise DataError(f"e0_method=isolated needs a single-atom frame with '{names.energy}' and no neighbour "
                            f"within {max_cutoff} Å for every species; none for {sym}. "
                            f"Give e0={{...}} or use e0_method=average")
        e0 = np.zeros(N_ELEMENTS + 1)
        for z, (energy, frame) in found.items():
            e0[z] = energy - core_energy.get(frame.index, 0.0)
        how = "e0 from isolated atoms" + (" (net of the core potential)" if core_energy else "")
    else:
        composition, energies = _compositions(entries, species, names, core_energy)
        count = energies.size
        e0 = np.zeros(N_ELEMENTS + 1)
        net = " (net of the core potential)" if core_energy else ""
        if rule.method in ("least_squares", "joint"):  # joint: the GP fits offsets from it
            e0[list(species)], how, text = _least_squares_e0(composition, energies, species, rule.method)
            how += net
            if text:
                warnings.append(text)
        else:
            e0[1:] = float(np.mean(energies / composition.sum(axis=1))) if count else 0.0
            how = f"e0 = average energy per atom over {count} frames" + net
            fractions = composition / np.maximum(composition.sum(axis=1, keepdims=True), 1)
            if count and len(species) > 1 and np.ptp(fractions, axis=0).max() > 1e-6:
                warnings.append("e0_method=average gives every species the same e0, but the stoichiometry of the "
                                "data varies: e0_method=least_squares (gapfit) fits one e0 per species")
    if rule.offset is not None:
        e0[1:] += rule.offset
        how += f", plus e0_offset={rule.offset}"
    if rule.given is None:
        present = np.zeros(N_ELEMENTS + 1, dtype=bool)
        present[list(species)] = True
        e0[~present] = 0.0
    return e0, how, warnings


def _compositions(entries, species, names, core_energy):
    """(frames × species atom counts, energies net of the core) of the frames with an energy."""
    column = {z: k for k, z in enumerate(species)}
    rows, energies = [], []
    for e in entries:
        energy = energy_of(e.info, names, f"frame {e.index + 1}")
        if energy is None:
            continue
        counts = np.zeros(len(species))
        zs, n = np.unique(np.asarray(e.numbers), return_counts=True)
        counts[[column[int(z)] for z in zs]] = n
        rows.append(counts)
        energies.append(energy - core_energy.get(e.index, 0.0))
    return np.array(rows).reshape(-1, len(species)), np.array(energies)


#: Singular values of the composition matrix below this fraction of the largest count as zero.
#: Compositions are ratios of atom counts, exact to ~1e-16, so an exactly rank-deficient matrix (one
#: compound throughout, e.g. every frame InP) has rounding-level singular values of ~1e-16 relative,
#: whose size depends on the BLAS kernels (SkylakeX 2.2e-16, Haswell 2.1e-16 on ten InP dimers: LAPACK's
#: default cutoff, eps, fell between them).  Real variation is far above 1e-8: frames of N atoms that
#: differ by one atom differ by 1/N in a fraction, and even one such frame among F gives a singular
#: value of ~1/(N √F) relative, 1e-6 for N = 1000 and F = 1e6.
COMPOSITION_RANK_RTOL = 1e-8


def _least_squares_e0(composition, energies, species, method="least_squares") -> Tuple[np.ndarray, str, str]:
    """e0 of each species from min Σ_f ((E_f − n_f·e0) / N_f)² (LAPACK least squares, gelsd).

    The rank of the composition matrix is decided at :data:`COMPOSITION_RANK_RTOL`; when it is
    below the number of species, e0 is the minimum-norm solution (on one-compound data, every
    species gets the mean energy per atom) and a warning says so.
    """
    n_atoms = composition.sum(axis=1)
    if energies.size == 0:
        return np.zeros(len(species)), "e0 = 0 (no energies to fit e0 to)", ""
    a = composition / n_atoms[:, None]
    e0, _, rank, _ = sla.lstsq(a, energies / n_atoms, cond=COMPOSITION_RANK_RTOL, lapack_driver="gelsd")
    residual = a @ e0 - energies / n_atoms
    how = (f"e0 by least squares over the composition of {energies.size} frames (gapfit): "
           + ", ".join(f"{chemical_symbols[z]} {v:.6f}" for z, v in zip(species, e0))
           + f" eV; rms residual {np.sqrt(np.mean(residual ** 2)) * 1e3:.4g} meV/atom")
    warning = ""
    if rank < len(species):
        fixed = ("e0 is the minimum-norm solution" if method == "least_squares" else
                 "e0 starts from the minimum-norm solution, and the fitted offsets along the compositions "
                 "the data lack stay at it")
        warning = (f"e0_method={method}: the compositions of the data do not separate the {len(species)} species "
                   f"(rank {rank}): {fixed}; add frames of other stoichiometry or isolated atoms, or give e0")
    return e0, how, warning


#: e0_method=joint: the prior standard deviation (eV) of each species' offset from the least-squares e0
E0_PRIOR_SIGMA = 1.0


class SpeciesOffsets:
    """``e0_method=joint`` (gapfit): one energy offset per species, fitted with α.

    The offsets are S more columns of the least-squares problem after the sparse points: a frame's
    energy row holds its atom count of each species (force and virial rows 0), and the rows of U
    get a diagonal block 1/σ_e0 (a Gaussian prior of width σ_e0 on each offset, centred on the
    least-squares e0).  It is a GP with a kernel σ_e0² δ_{Z Z'} added per atom, so every path
    (dense, ScaLAPACK, streaming, refits, the log marginal likelihood) treats the columns as it
    treats sparse points, and the model's e0 is the least-squares e0 plus the fitted offsets.
    """

    def __init__(self, species: Sequence[int], column: int, prior_sigma: float = E0_PRIOR_SIGMA):
        self.species = np.array(sorted(int(z) for z in species), dtype=np.int64)
        self.column = int(column)
        self.prior_sigma = float(prior_sigma)
        self._position = np.full(N_ELEMENTS + 1, -1, dtype=np.int64)
        self._position[self.species] = np.arange(self.species.size)

    @property
    def n_columns(self) -> int:
        return int(self.species.size)

    @property
    def columns(self) -> slice:
        return slice(self.column, self.column + self.n_columns)

    def counts(self, numbers) -> np.ndarray:
        """Atoms of each fitted species in a frame (``numbers``: its atomic numbers)."""
        return np.bincount(self._position[np.asarray(numbers, dtype=np.int64)], minlength=self.n_columns).astype(float)

    def k_mm_block(self) -> np.ndarray:
        """The offsets' block of K_MM (before sparse_jitter): 1/σ_e0² on the diagonal."""
        return np.eye(self.n_columns) / self.prior_sigma ** 2

    def e0(self, base_e0: np.ndarray, alpha: np.ndarray) -> np.ndarray:
        """The model's e0: ``base_e0`` (index Z) plus the offsets in ``alpha``'s columns."""
        out = np.array(base_e0, dtype=float)
        out[self.species] += np.asarray(alpha)[self.columns]
        return out

    def describe(self, base_e0: np.ndarray, alpha: np.ndarray) -> str:
        e0 = self.e0(base_e0, alpha)
        return ("e0 fitted with the GP (e0_method=joint): " + ", ".join(
            f"{chemical_symbols[z]} {e0[z]:.6f} ({e0[z] - base_e0[z]:+.6f})" for z in self.species) + " eV")
