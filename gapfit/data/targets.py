"""Training targets, their names and noise levels (σ), and the species of the data.

The rules follow gap_fit (``gap_fit_module.F90``; interface notes §3):

* energies: E − Σ_i e0(Z_i); forces: −F (derivative observations); virials:
  −W over the six lower-triangle components (1,1),(2,1),(3,1),(2,2),(3,2),(3,3),
  with W from ``virial``, or W = −σ·V from ``stress`` when there is no virial;
* σ per row: per-frame/per-atom overrides (absolute) > config_type group >
  default, energy and virial σ scaled by √N when ``sigma_per_atom``;
* each frame contributes its rows contiguously: energy, forces (atom-major,
  x y z, masked atoms skipped), virial.  Row order does not change the
  least-squares solution.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..config.targets import SigmaTable, TargetNames
from ..errors import DataError
from .extxyz import Frame, FrameIndex, lookup

VIRIAL_COMPONENTS = ((0, 0), (1, 0), (2, 0), (1, 1), (2, 1), (2, 2))  # (l, k) rows, gap_fit's order




# --------------------------------------------------------------------------------------
# What a frame carries
# --------------------------------------------------------------------------------------

def _scalar(value, what, where) -> float:
    arr = np.asarray(value)
    if arr.dtype.kind not in "if" or arr.size != 1:
        raise DataError(f"{where}: {what} must be a single number, found {value!r}")
    x = float(arr.reshape(-1)[0])
    if not math.isfinite(x):
        raise DataError(f"{where}: {what} is {x}")
    return x


def _matrix3(value, what, where, allow_voigt=False) -> np.ndarray:
    arr = np.asarray(value)
    if arr.dtype.kind not in "if":
        raise DataError(f"{where}: {what} must be numbers, found {value!r}")
    flat = arr.astype(float).reshape(-1)
    if flat.size == 9:
        # extended XYZ 3x3 values are column-major, as QUIP reads them
        m = flat.reshape(3, 3, order="F") if arr.ndim == 1 else arr.astype(float).reshape(3, 3)
    elif flat.size == 6 and allow_voigt:
        xx, yy, zz, yz, xz, xy = flat
        m = np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])
    else:
        need = "6 (Voigt) or 9" if allow_voigt else "9"
        raise DataError(f"{where}: {what} must have {need} components, found {flat.size}")
    if not np.all(np.isfinite(m)):
        raise DataError(f"{where}: {what} contains a NaN or infinity")
    return m


@dataclass
class FrameLabels:
    """The labels of one frame, as gap_fit reads them."""

    has_energy: bool
    has_forces: bool
    has_virial: bool
    config_type: str
    n_force_atoms: int  # atoms whose forces are fitted (force_mask excludes)

    @property
    def n_rows(self) -> int:
        return int(self.has_energy) + 3 * self.n_force_atoms * int(self.has_forces) + 6 * int(self.has_virial)


def entry_labels(entry, names: TargetNames, where: str) -> FrameLabels:
    """The labels of an indexed frame (:class:`gapfit.data.extxyz.FrameIndex`: its comment-line keys and the
    names of its arrays)."""
    arrays = dict.fromkeys(entry.array_names)
    arrays.update(entry.logical_arrays)
    return frame_labels(entry.info, arrays, entry.n_atoms, names, where)


def has_key(mapping: Dict, name: str) -> bool:
    """Case-insensitive presence of a key (QUIP's Dictionary)."""
    low = name.lower()
    return any(k.lower() == low for k in mapping)


def frame_labels(info: Dict, arrays: Dict, n_atoms: int, names: TargetNames, where: str) -> FrameLabels:
    """Which targets a frame has (from its comment line and per-atom column names).

    ``arrays`` needs the per-atom column names; values are needed only for the force mask.
    """
    if has_key(info, f"n_{names.hessian}"):
        raise DataError(f"{where}: Hessian data (n_{names.hessian}) is not supported by gapfit")
    if has_key(arrays, names.local_property) or has_key(info, names.local_property):
        raise DataError(f"{where}: local-property data ('{names.local_property}') is not supported by gapfit")
    has_energy = has_key(info, names.energy)
    has_forces = has_key(arrays, names.force)
    has_virial = has_key(info, names.virial) or has_key(info, names.stress)
    ct = lookup(info, names.config_type)
    config_type = str(ct) if ct is not None else "default"
    mask = lookup(arrays, names.force_mask)
    n_force_atoms = n_atoms
    if mask is not None:
        mask = np.asarray(mask)
        if mask.dtype != bool:
            raise DataError(f"{where}: force mask '{names.force_mask}' must be a logical (L) column")
        n_force_atoms = int(n_atoms - mask.sum())
    return FrameLabels(has_energy, has_forces, has_virial, config_type, n_force_atoms)


# What other names a target is commonly stored under (ASE writes 'energy', 'forces', 'stress').
_ASE_NAMES = ("energy", "free_energy", "forces", "stress", "virial")
_LOOKS_LIKE = {
    "energy": ("info", ("energy",)),
    "force": ("arrays", ("force",)),
    "virial": ("info", ("virial", "stress")),
}


def _looks_like(kind: str, value) -> bool:
    """Whether a comment-line value could be an energy (one real) or a virial/stress (6 or 9 reals)."""
    arr = np.asarray(value)
    if arr.dtype.kind not in "if":
        return False
    return arr.size == 1 if kind == "energy" else arr.size in (6, 9)


def unused_target_warnings(entries, names: TargetNames, option_key, prefix: str = "",
                           verbs: Tuple[str, str] = ("fitted", "fit")) -> List[Tuple[str, bool, str]]:
    """Warnings for frames whose targets sit under other keys than the options name.

    E.g. ASE's ``forces`` array while ``force_parameter_name`` is gap_fit's default ``force``:
    the fit silently gets no force rows.  ``option_key(kind)`` gives the option as the user
    typed it and whether it was given; gap_fit's defaults are kept, the warning says what to set.
    ``verbs``: what happens to targets (``("evaluated", "evaluate")`` for gapfit-eval).
    Returns (kind, whether no frame at all has the named key, warning) per kind.
    """
    wanted = {"energy": (names.energy,), "force": (names.force,), "virial": (names.virial, names.stress)}
    what = {"energy": "energies", "force": "forces", "virial": "virials (or stresses)"}
    out = []
    for kind, (where, stems) in _LOOKS_LIKE.items():
        if "//IGNORE//" in wanted[kind]:
            continue  # sparsify_only_no_fit reads energies only
        missing, found_named, others = 0, False, {}
        for e in entries:
            keys = e.info if where == "info" else e.array_names
            if any(has_key(keys, w) for w in wanted[kind]):
                found_named = True
                continue
            found = [k for k in keys if any(stem in k.lower() for stem in stems)
                     and "sigma" not in k.lower() and "mask" not in k.lower()
                     and (where == "arrays" or _looks_like(kind, keys[k]))]
            if found:
                missing += 1
                for k in found:
                    others[k] = others.get(k, 0) + 1
        if not missing:
            continue
        # ASE's own names first, then reference-looking ones (dft_, ref_), then the most frequent
        ranked = sorted(others, key=lambda k: (k.lower() not in _ASE_NAMES,
                                               not any(t in k.lower() for t in ("dft", "ref")), -others[k]))
        other = ranked[0]
        key, given = option_key(kind)
        value = other[len(prefix):] if prefix and other.startswith(prefix) else other
        kind_of = "per-atom array" if where == "arrays" else "key"
        named = " or ".join(f"'{w}'" for w in wanted[kind])
        also = f" (also: {', '.join(repr(k) for k in ranked[1:4])})" if len(ranked) > 1 else ""
        out.append((kind, not found_named, f"{missing} of {len(entries)} frames carry the {kind_of} '{other}'{also} but no {named} "
                   f"({key}={wanted[kind][0][len(prefix):]}{'' if given else ', gap_fit default'}): their "
                   f"{what[kind]} are not {verbs[0]}; set {key}={value} to {verbs[1]} them"))
    return out


def energy_of(info: Dict, names: TargetNames, where: str) -> Optional[float]:
    value = lookup(info, names.energy)
    return None if value is None else _scalar(value, f"energy '{names.energy}'", where)


# --------------------------------------------------------------------------------------
# σ per config_type (config_type_sigma)
# --------------------------------------------------------------------------------------



# --------------------------------------------------------------------------------------
# Rows of one frame: targets and σ
# --------------------------------------------------------------------------------------

@dataclass
class FrameRows:
    """y and σ of one frame's rows, with the atom/component map of force rows."""

    y: np.ndarray
    sigma: np.ndarray
    has_energy: bool
    force_atoms: np.ndarray  # atoms with force rows (3 rows each), in row order
    has_virial: bool
    # per row: 0, 1, 2 = an energy, force or virial row whose σ is σ_E, σ_F, σ_V of the config_type's
    # group (E and V times √N_atoms with sigma_per_atom); 3, 4, 5 = the same with the frame's own σ
    # (energy_sigma, force_atom_sigma, ...).  A refit with other default_sigma / config_type_sigma
    # recomputes the first kind
    sigma_kind: Optional[np.ndarray] = None
    config_type: str = "default"

    @property
    def n_rows(self) -> int:
        return int(self.y.shape[0])


@dataclass
class FrameTargets:
    """A frame's reference values as the file gives them (validated): what is fitted and scored."""

    labels: FrameLabels
    energy: Optional[float]  # total energy (eV)
    forces: Optional[np.ndarray]  # (n, 3) eV/Å, all atoms
    force_atoms: np.ndarray  # atoms whose forces are targets (force_mask excludes)
    virial: Optional[np.ndarray]  # (3, 3) eV, as given (the virial, or −stress·V); not symmetrised


def frame_targets(frame: Frame, names: TargetNames) -> FrameTargets:
    """The energy, forces and virial a frame carries under ``names``, checked to be finite reals."""
    where = frame.where
    info, arrays = frame.info, frame.arrays
    n = len(frame)
    labels = frame_labels(info, arrays, n, names, where)
    energy = energy_of(info, names, where) if labels.has_energy else None
    forces, force_atoms = None, np.zeros(0, dtype=np.int64)
    if labels.has_forces:
        forces = np.asarray(lookup(arrays, names.force))
        if forces.dtype.kind not in "if" or forces.shape != (n, 3):
            raise DataError(f"{where}: forces '{names.force}' must be a per-atom column of 3 reals (R:3)")
        forces = forces.astype(float)
        if not np.all(np.isfinite(forces)):
            bad = int(np.argwhere(~np.isfinite(forces))[0, 0])
            raise DataError(f"{where}: the force on atom {bad + 1} ('{names.force}') is not finite")
        mask = lookup(arrays, names.force_mask)
        keep = np.ones(n, dtype=bool) if mask is None else ~np.asarray(mask, dtype=bool)
        force_atoms = np.nonzero(keep)[0]
    virial = None
    if labels.has_virial:
        virial_value = lookup(info, names.virial)
        if virial_value is not None:
            virial = _matrix3(virial_value, f"virial '{names.virial}'", where)
        else:
            stress = _matrix3(lookup(info, names.stress), f"stress '{names.stress}'", where, allow_voigt=True)
            virial = -stress * frame.volume
    return FrameTargets(labels, energy, forces, force_atoms, virial)


def frame_rows(frame: Frame, names: TargetNames, sigmas: SigmaTable, e0: np.ndarray, sigma_per_atom: bool,
               core=None) -> FrameRows:
    """Targets and σ of a parsed frame, validated (finite values, σ > 0).

    With a ``core`` potential, its energy, forces and virial are subtracted from the targets
    first (as gap_fit does), then e0.
    """
    where = frame.where
    info = frame.info
    n = len(frame)
    targets = frame_targets(frame, names)
    labels, force_atoms = targets.labels, targets.force_atoms
    base = None
    if core is not None and (labels.has_energy or labels.has_forces or labels.has_virial):
        base = core.evaluate(frame, forces=labels.has_forces or labels.has_virial)
    group = sigmas(labels.config_type)
    sq = math.sqrt(n) if sigma_per_atom else 1.0
    s = names.sigma
    y: List[np.ndarray] = []
    sig: List[np.ndarray] = []
    kinds: List[np.ndarray] = []

    if labels.has_energy:
        energy = targets.energy - (base["energy"] if base else 0.0) - float(np.sum(e0[frame.numbers]))
        override = lookup(info, f"energy_{s}")
        e_sigma = _scalar(override, f"energy_{s}", where) if override is not None else group[0] * sq
        if not e_sigma > 0:
            raise DataError(f"{where}: the energy σ is {e_sigma} (it must be greater than 0; "
                            f"check default_sigma, config_type_sigma or energy_{s})")
        y.append(np.array([energy]))
        sig.append(np.array([e_sigma]))
        kinds.append(np.array([0 if override is None else 3], dtype=np.int8))

    if labels.has_forces:
        f_y, f_sigma, f_kind = _force_rows(frame, targets, base, group[1], s)
        y.append(f_y)
        sig.append(f_sigma)
        kinds.append(f_kind)

    if labels.has_virial:
        w = targets.virial
        if base:
            w = w - base["virial"]
        w = 0.5 * (w + w.T)
        override = lookup(info, f"virial_{s}")
        v_sigma = _scalar(override, f"virial_{s}", where) if override is not None else group[2] * sq
        comp = lookup(info, f"virial_component_{s}")
        if comp is not None:
            cs = _matrix3(comp, f"virial_component_{s}", where)
            cs = 0.5 * (cs + cs.T)
            v_sig = np.array([cs[l, k] for l, k in VIRIAL_COMPONENTS])
        else:
            v_sig = np.full(6, v_sigma)
        if not np.all(v_sig > 0):
            raise DataError(f"{where}: the virial σ is {v_sig.min()} (it must be greater than 0; "
                            f"check default_sigma, config_type_sigma or virial_{s})")
        y.append(np.array([-w[l, k] for l, k in VIRIAL_COMPONENTS]))
        sig.append(v_sig)
        kinds.append(np.full(6, 5 if (override is not None or comp is not None) else 2, dtype=np.int8))

    y_all = np.concatenate(y) if y else np.zeros(0)
    s_all = np.concatenate(sig) if sig else np.zeros(0)
    return FrameRows(y=y_all, sigma=s_all, has_energy=labels.has_energy, force_atoms=force_atoms,
                     has_virial=labels.has_virial,
                     sigma_kind=np.concatenate(kinds) if kinds else np.zeros(0, dtype=np.int8),
                     config_type=labels.config_type)


def _force_rows(frame: Frame, targets: FrameTargets, base, group_sigma: float, s: str):
    """The force rows of a frame: −F (net of the core) of the atoms with fitted forces, their σ
    (per-frame, per-atom and per-component overrides over the group's), and their σ rule."""
    where, info, arrays, n = frame.where, frame.info, frame.arrays, len(frame)
    force_atoms = targets.force_atoms
    f_sigma = np.full((n, 3), group_sigma)
    override = lookup(info, f"force_{s}")
    if override is not None:
        f_sigma[:] = _scalar(override, f"force_{s}", where)
    atom_sigma = lookup(arrays, f"force_atom_{s}")
    if atom_sigma is not None:
        atom_sigma = np.asarray(atom_sigma, dtype=float).reshape(-1)
        f_sigma[:] = atom_sigma[:, None]
    comp_sigma = lookup(arrays, f"force_component_{s}")
    if comp_sigma is not None:
        f_sigma = np.asarray(comp_sigma, dtype=float).reshape(n, 3)
    f_sigma = f_sigma[force_atoms]
    if f_sigma.size and not np.all(f_sigma > 0):
        bad = int(np.argwhere(~(f_sigma > 0))[0, 0])
        raise DataError(f"{where}: the force σ of atom {force_atoms[bad] + 1} is {f_sigma[bad].min()} "
                        f"(it must be greater than 0; check default_sigma, config_type_sigma or force_*_{s})")
    forces = targets.forces - base["forces"] if base else targets.forces
    own = override is not None or atom_sigma is not None or comp_sigma is not None
    return (-forces[force_atoms].reshape(-1), f_sigma.reshape(-1),
            np.full(f_sigma.size, 4 if own else 1, dtype=np.int8))


# --------------------------------------------------------------------------------------
# Species and e0
# --------------------------------------------------------------------------------------

def species_in_order(entries: Sequence[FrameIndex]) -> List[int]:
    """Atomic numbers in order of first appearance in the file (gap_fit's species order)."""
    seen: Dict[int, None] = {}
    for e in entries:
        _, first = np.unique(e.numbers, return_index=True)
        for z in e.numbers[np.sort(first)]:
            seen.setdefault(int(z), None)
    return list(seen)
