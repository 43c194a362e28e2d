"""A model's errors on labelled frames, per config_type: the report a fit prints for its training
data and for ``test_file``, and what ``gapfit-eval`` and ``GapFit.score`` return.

Definitions (the usual ones; the reference values are the file's, core potential included):

* energy: per frame, (E_pred − E_ref) / N_atoms, in eV/atom;
* forces: every force component with a target (``force_mask`` excludes atoms), in eV/Å; the
  largest error is the largest |F_pred − F_ref| of one atom (a vector norm), with its frame;
* virial: per frame, (W_pred − W_ref) / N_atoms over the six components of the symmetric virial
  (from ``virial``, or −stress·V), in eV/atom.

RMSE = √(mean of squares), MAE = mean of absolute values, over the frames (energy), components
(forces) or frames × 6 (virial) of a config_type, and over all of them ("overall").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Sequence

import numpy as np

from ..data.distribute import assign_frames
from ..data.extxyz import XyzFileSource
from ..data.targets import VIRIAL_COMPONENTS, TargetNames, frame_targets, unused_target_warnings
from ..runtime.parallel import rank0_call

_LOWER = tuple(np.array(VIRIAL_COMPONENTS).T)
QUANTITIES = (("energy", "eV/atom"), ("forces", "eV/Å"), ("virial", "eV/atom"))
OVERALL = "overall"


def _larger_force_error(a: tuple, b: tuple) -> tuple:
    """The larger of two (|ΔF|, frame, atom) records; of equal ones, the earlier frame's."""
    return max(a, b, key=lambda m: (m[0], -m[1]))


class _Sums:
    """Counts, sums of squares and of absolute values of one group's errors, and its largest force error."""

    def __init__(self):
        self.frames = 0
        self.atoms = 0
        self.n = np.zeros(3, dtype=np.int64)  # energy, force components, virial components
        self.sq = np.zeros(3)
        self.abs = np.zeros(3)
        self.max_force = (-1.0, -1, -1)  # (|ΔF| of one atom, frame number, atom number), 1-based

    def add(self, k: int, errors: np.ndarray) -> None:
        errors = np.asarray(errors, dtype=float).reshape(-1)
        self.n[k] += errors.size
        self.sq[k] += float(errors @ errors)
        self.abs[k] += float(np.abs(errors).sum())

    def merge(self, other: "_Sums") -> None:
        self.frames += other.frames
        self.atoms += other.atoms
        self.n += other.n
        self.sq += other.sq
        self.abs += other.abs
        self.max_force = _larger_force_error(self.max_force, other.max_force)

    def summary(self) -> dict:
        out = {"frames": self.frames, "atoms": self.atoms}
        for k, (name, unit) in enumerate(QUANTITIES):
            n = int(self.n[k])
            entry = {"n": n, "rmse": float(np.sqrt(self.sq[k] / n)) if n else None,
                     "mae": float(self.abs[k] / n) if n else None, "unit": unit}
            if name == "forces" and n:
                entry.update(max=self.max_force[0], max_frame=self.max_force[1], max_atom=self.max_force[2])
            out[name] = entry
        return out


class ErrorTable:
    """Errors of one data set, accumulated frame by frame (and rank by rank: :meth:`merge`)."""

    def __init__(self, name: str = "data", totals: Optional[Dict[str, int]] = None):
        self.name = name
        self.groups: Dict[str, _Sums] = {}
        self.totals = totals  # frames per config_type when only some were scored (sample_frames)

    def add_frame(self, config_type: str, frame_number: int, n_atoms: int, energy_error: Optional[float],
                  force_errors: Optional[np.ndarray], force_atoms: np.ndarray, virial_error: Optional[np.ndarray]):
        """One frame's errors (energy in eV, forces (k, 3) eV/Å on ``force_atoms``, virial 3×3 eV)."""
        sums = self.groups.setdefault(config_type, _Sums())
        sums.frames += 1
        sums.atoms += n_atoms
        if energy_error is not None:
            sums.add(0, [energy_error / n_atoms])
        if force_errors is not None and force_errors.size:
            sums.add(1, force_errors)
            norms = np.sqrt(np.einsum("ij,ij->i", force_errors, force_errors))
            worst = int(np.argmax(norms))
            sums.max_force = _larger_force_error(sums.max_force,
                                                 (float(norms[worst]), frame_number, int(force_atoms[worst]) + 1))
        if virial_error is not None:
            sums.add(2, np.asarray(virial_error)[_LOWER] / n_atoms)

    def merge(self, other: "ErrorTable") -> None:
        for name, sums in other.groups.items():
            self.groups.setdefault(name, _Sums()).merge(sums)

    def overall(self) -> _Sums:
        total = _Sums()
        for sums in self.groups.values():
            total.merge(sums)
        return total

    def summary(self) -> dict:
        """{"overall": {...}, "config_types": {name: {...}}} (the JSON report's form)."""
        return {OVERALL: self.overall().summary(),
                "config_types": {name: self.groups[name].summary() for name in sorted(self.groups)}}

    def rows(self) -> List[dict]:
        """One dict per config_type, then the overall one (``config_type`` = "overall")."""
        s = self.summary()
        return ([dict(config_type=name, **v) for name, v in s["config_types"].items()]
                + [dict(config_type=OVERALL, **s[OVERALL])])

    def lines(self) -> List[str]:
        """The table as text: energies and virials in meV/atom, forces in eV/Å."""
        def num(entry, key, scale=1.0, fmt="{:.4g}"):
            value = entry.get(key)
            return "-" if value is None else fmt.format(value * scale)
        header = ["config_type", "frames", "E RMSE", "E MAE", "F RMSE", "F MAE", "max |ΔF| (frame)", "V RMSE",
                  "V MAE"]
        units = ["", "", "meV/atom", "meV/atom", "eV/Å", "eV/Å", "eV/Å", "meV/atom", "meV/atom"]
        table = []
        for r in self.rows():
            e, f, v = r["energy"], r["forces"], r["virial"]
            worst = "-" if not f["n"] else f"{f['max']:.3g} ({f['max_frame']})"
            table.append([r["config_type"], self._frames(r), num(e, "rmse", 1e3), num(e, "mae", 1e3),
                          num(f, "rmse"), num(f, "mae"), worst, num(v, "rmse", 1e3), num(v, "mae", 1e3)])
        widths = [max(len(h), len(u), *(len(row[i]) for row in table)) for i, (h, u) in enumerate(zip(header, units))]
        fmt = "  ".join("{:<%d}" % w if i == 0 else "{:>%d}" % w for i, w in enumerate(widths))
        return [fmt.format(*header), fmt.format(*units)] + [fmt.format(*row) for row in table]

    def _frames(self, row) -> str:
        """The frames column: "12" or, when a sample was scored, "12 of 340"."""
        if not self.totals:
            return str(row["frames"])
        total = sum(self.totals.values()) if row["config_type"] == OVERALL else self.totals.get(row["config_type"])
        return str(row["frames"]) if total in (None, row["frames"]) else f"{row['frames']} of {total}"

    def state(self) -> dict:
        """A picklable form (for gathering over ranks)."""
        return {name: (s.frames, s.atoms, s.n, s.sq, s.abs, s.max_force) for name, s in self.groups.items()}

    @classmethod
    def from_state(cls, state: dict, name: str = "data") -> "ErrorTable":
        table = cls(name)
        for group, (frames, atoms, n, sq, ab, mx) in state.items():
            s = table.groups.setdefault(group, _Sums())
            s.frames, s.atoms, s.n, s.sq, s.abs, s.max_force = frames, atoms, n, sq, ab, mx
        return table


class ParityPoints:
    """Reference and predicted values frame by frame, for parity plots: {quantity: [(config_type,
    reference, predicted)]}, energies and virials per atom."""

    def __init__(self):
        self.values: Dict[str, list] = {"energy": [], "forces": [], "virial": []}

    def add(self, quantity: str, config_type: str, reference, predicted) -> None:
        self.values[quantity].append((config_type, np.asarray(reference, dtype=float).ravel(),
                                      np.asarray(predicted, dtype=float).ravel()))

    def gather(self, comm) -> Optional[Dict[str, list]]:
        """Every rank's points on rank 0 (None elsewhere)."""
        parts = comm.gather(self.values, root=0)
        if comm.rank != 0:
            return None
        return {q: [p for part in parts for p in part[q]] for q in self.values}


def score_frames(potential, frames: Iterable, names: TargetNames, table: ErrorTable, progress=None,
                 points: Optional[ParityPoints] = None) -> ErrorTable:
    """Add the errors of ``potential`` (a :class:`gapfit.model.calculator.GapPotential`) on ``frames``
    (gapfit :class:`~gapfit.data.extxyz.Frame` objects) to ``table`` (and the values to ``points``)."""
    for done, frame in enumerate(frames):
        if progress is not None:
            progress.update(done)
        t = frame_targets(frame, names)
        labels = t.labels
        if not (labels.has_energy or labels.has_forces or labels.has_virial):
            continue
        pred = potential.evaluate(frame, forces=labels.has_forces or labels.has_virial)
        energy_error = pred["energy"] - t.energy if labels.has_energy else None
        force_errors = (pred["forces"] - t.forces)[t.force_atoms] if labels.has_forces else None
        virial_error = None
        if labels.has_virial:
            w = pred["virial"]
            virial_error = 0.5 * (w + w.T) - 0.5 * (t.virial + t.virial.T)
        table.add_frame(labels.config_type, frame.index + 1, len(frame), energy_error, force_errors,
                        t.force_atoms, virial_error)
        if points is not None:
            n, ct = len(frame), labels.config_type
            if labels.has_energy:
                points.add("energy", ct, t.energy / n, pred["energy"] / n)
            if labels.has_forces:
                points.add("forces", ct, t.forces[t.force_atoms], pred["forces"][t.force_atoms])
            if labels.has_virial:
                w_ref, w = 0.5 * (t.virial + t.virial.T), 0.5 * (pred["virial"] + pred["virial"].T)
                points.add("virial", ct, w_ref[_LOWER] / n, w[_LOWER] / n)
    return table


def gather_table(comm, table: ErrorTable) -> Optional[ErrorTable]:
    """Every rank's table merged on rank 0 (None elsewhere)."""
    states = comm.gather(table.state(), root=0)
    if comm.rank != 0:
        return None
    merged = ErrorTable(table.name)
    for state in states:
        merged.merge(ErrorTable.from_state(state))
    return merged


#: every frame of a config_type with at most this many frames is scored
MIN_FRAMES_PER_TYPE = 5


@dataclass(frozen=True)
class SampledFrames:
    """This rank's frames to score, every config_type's frame count (for the table) and what to say."""

    frames: np.ndarray
    totals: Dict[str, int]
    note: str


def sample_frames(config_types: Sequence[str], n_atoms: Sequence[int], my_frames, atoms: int) -> SampledFrames:
    """The training frames to score: about ``atoms`` atoms (0: every frame), spread evenly through each
    config_type (the k-th of n chosen frames of a config_type of F is the one at position ⌊(k + ½)F/n⌋,
    in file order), every frame of a config_type of at most MIN_FRAMES_PER_TYPE.  A choice by counts
    and file order only: the same on any number of ranks and any machine.

    Why: the training-error pass evaluates every descriptor gradient again; on InP-paper it took 133 s
    of a 542 s fit.  25,000 atoms give each config_type's RMSE to a few per cent at a fraction of that."""
    types = list(config_types)
    totals: Dict[str, int] = {}
    for t in types:
        totals[t] = totals.get(t, 0) + 1
    n_atoms = np.asarray(n_atoms, dtype=np.int64)
    if atoms <= 0 or n_atoms.sum() <= atoms:
        return SampledFrames(np.asarray(my_frames), totals, "")
    fraction = atoms / float(n_atoms.sum())
    keep = np.zeros(len(types), dtype=bool)
    by_type: Dict[str, list] = {}
    for k, t in enumerate(types):
        by_type.setdefault(t, []).append(k)
    for members in by_type.values():
        count = len(members)
        n = count if count <= MIN_FRAMES_PER_TYPE else max(MIN_FRAMES_PER_TYPE, int(round(fraction * count)))
        keep[np.asarray(members)[((np.arange(n) + 0.5) * count / n).astype(np.int64)]] = True
    mine = np.asarray(my_frames)
    note = (f"{int(keep.sum())} of {len(types)} frames ({int(n_atoms[keep].sum())} of {int(n_atoms.sum())} atoms), "
            f"spread evenly through each config_type (training_errors_atoms={atoms}; 0 scores every frame)")
    return SampledFrames(mine[keep[mine]], totals, note)


def report_errors(comm, log, potential, source, entries, frames, names: TargetNames, what: str,
                  points: Optional[ParityPoints] = None, totals: Optional[Dict[str, int]] = None) -> dict:
    """Score ``potential`` on this rank's ``frames`` (indices into ``entries``), merge over the ranks,
    print the table (rank 0; with ``totals``, each config_type's frame count beside the scored ones)
    and return its summary (every rank)."""
    table = ErrorTable(what, totals)
    progress = log.progress(f"errors on {what}", max(len(frames), 1), unit="frames",
                            note=" (rank 0's share)" if comm.size > 1 else "")
    score_frames(potential, source.read([entries[f] for f in frames]), names, table, progress, points)
    progress.close()
    merged = gather_table(comm, table)
    if merged is not None:
        merged.totals = totals
    summary = merged.summary() if merged is not None else None
    if merged is not None:
        log(f"Errors on {what} (energies and virials per atom; forces per component):")
        for line in merged.lines():
            log("  " + line)
    return comm.bcast(summary, root=0)


def file_errors(comm, log, potential, path: str, names: TargetNames, key: str, what: str,
                points: Optional[ParityPoints] = None) -> dict:
    """:func:`report_errors` on the frames of an extended XYZ file (named by option ``key`` in
    errors), spread over the ranks by atom count."""

    source = XyzFileSource(path, key=key)
    entries = rank0_call(comm, lambda: source.index()[0])
    options = {"energy": "energy_parameter_name", "force": "force_parameter_name", "virial": "virial_parameter_name"}
    for _, _, text in unused_target_warnings(entries, names, lambda kind: (options[kind], True),
                                       verbs=("evaluated", "evaluate")):
        log.warn(f"{what}: {text}", repeat=True)
    owner = assign_frames(np.array([e.n_atoms for e in entries], dtype=np.int64), comm.size)
    return report_errors(comm, log, potential, source, entries, np.nonzero(owner == comm.rank)[0], names, what,
                         points=points)
