"""The data phase: rank 0 indexes and validates the data and works out species, e0 and every frame's
targets; the descriptors are expanded over the species (``add_species``), and the frames are shared
out over the ranks by the paper's greedy balance."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
from ase.data import chemical_symbols

from ..config.fit_config import FitConfig
from ..config.gaps import GapSpec, expand_species, parse_gap_piece
from ..data.distribute import assign_frames
from ..data.e0 import compute_e0
from ..data.extxyz import FrameIndex
from ..data.targets import FrameLabels, entry_labels, frame_labels, frame_rows, species_in_order, unused_target_warnings
from ..descriptors.neighbours import neighbour_list
from ..errors import DataError
from ..kernels.covariance import Coordinate
from ..runtime.parallel import rank0_call
from ..runtime.report import Reporter
from ..sparse.sparsify import parse_config_type_n_sparse
from .preflight import FitSetup


@dataclass(frozen=True)
class TrainingData:
    """The frames (where each is, and its targets' labels), species, e0, and the coordinates to fit."""

    source: Any  # a gapfit.data.extxyz frame source
    entries: Tuple[FrameIndex, ...]
    species: Tuple[int, ...]  # in order of first appearance
    e0: np.ndarray  # per element (index Z)
    labels: Tuple[FrameLabels, ...]
    frame_rows: np.ndarray  # target rows of every frame
    owner: np.ndarray  # rank of every frame
    my_frames: np.ndarray  # this rank's frames
    coords: Tuple[Coordinate, ...]  # after species expansion; no sparse points yet
    max_cutoff: float
    config_type_names: Tuple[str, ...]  # σ groups first, then config_type_n_sparse's


def read_data(config: FitConfig, setup: FitSetup, source, comm, log: Reporter,
              extends: Optional[dict] = None) -> TrainingData:
    """Collective: the data phase (see the module docstring)."""
    with log.phase("Reading and checking the data"):
        entries, species, e0, e0_how, labels, warnings = rank0_call(comm, _prepare_data, config, source, setup.core)
    for text, repeat in warnings:
        log.warn(text, repeat=repeat)
    gaps = expand_species(list(config.gaps), species) if extends is None else _base_coordinates(extends, species)
    coords = tuple(Coordinate(spec=g, descriptor=g.make_descriptor()) for g in gaps)
    descriptors = [c.descriptor for c in coords]
    combined = [w for cls in dict.fromkeys(type(d) for d in descriptors) for w in cls.combination_warnings(descriptors)]
    for text in dict.fromkeys([w for d in descriptors for w in d.warnings] + combined):
        log.warn(text)
    max_cutoff = max(c.descriptor.cutoff for c in coords)
    log(f"Species (order of first appearance): {' '.join(chemical_symbols[z] for z in species)}")
    for c in config.gaps:
        if c.gp.add_species and len(gaps) != len(config.gaps):
            log(f"  add_species expanded descriptor {c.index} ({c.descriptor_type})")
    log(f"{len(coords)} coordinate(s) after species expansion; neighbour cutoff {max_cutoff} Å")
    for i, c in enumerate(coords, 1):
        log(f"  {i}: {' '.join(c.spec.piece.split())}")
    log(e0_how)
    targets_table(log, config, labels)
    rows = np.array([label.n_rows for label in labels], dtype=np.int64)
    owner = assign_frames(rows, comm.size)
    if comm.size > 1:
        per_rank = np.bincount(owner, weights=rows, minlength=comm.size).astype(int)
        counts = np.bincount(owner, minlength=comm.size)
        log(f"Frames per rank: {', '.join(map(str, counts))}; target rows per rank: {', '.join(map(str, per_rank))}")
    return TrainingData(source=source, entries=tuple(entries), species=tuple(species), e0=e0, labels=tuple(labels),
                        frame_rows=rows, owner=owner, my_frames=np.nonzero(owner == comm.rank)[0], coords=coords,
                        max_cutoff=max_cutoff, config_type_names=_config_type_names(config, gaps))


def _config_type_names(config: FitConfig, gaps: List[GapSpec]) -> Tuple[str, ...]:
    """The σ groups' config_types, then those config_type_n_sparse names."""
    names = list(config.targets.sigmas.names())
    for g in gaps:
        if g.gp.n_sparse == 0 and g.gp.config_type_n_sparse:
            for name in parse_config_type_n_sparse(g.gp.config_type_n_sparse, g.where):
                if name not in names:
                    names.append(name)
    return tuple(names)


def _base_coordinates(extends, species) -> List[GapSpec]:
    """An extension's coordinates: the base fit's (expanded) descriptors; no new species."""
    base_species = [int(z) for z in extends["species"]]
    new = [z for z in species if z not in base_species]
    if new:
        raise DataError(f"the new data contain {', '.join(chemical_symbols[z] for z in new)}, which the fit of "
                        f"extend_checkpoint '{extends['path']}' has no descriptors for")
    return [parse_gap_piece(piece, k + 1) for k, piece in enumerate(extends["pieces"])]


def _prepare_data(config: FitConfig, source, core=None):
    """Rank 0: index/validate the data, species order, e0 and per-frame labels.

    With a core potential and no ``e0`` given, its energy is evaluated on every frame with an
    energy here: e0 comes from core-subtracted energies, as in gap_fit.
    """
    targets = config.targets
    names = targets.names
    zero_e0 = np.zeros(119)
    core_energy: Dict[int, float] = {}
    need_core_energy = core is not None and targets.e0.given is None

    def validate(frame):  # every frame's targets are checked here, on rank 0, before any work is shared out
        frame_rows(frame, names, targets.sigmas, zero_e0, targets.sigma_per_atom)
        if need_core_energy and frame_labels(frame.info, frame.arrays, len(frame), names, frame.where).has_energy:
            core_energy[frame.index] = core.evaluate(frame, forces=False)["energy"]

    entries, singles = source.index(validate=validate)
    species = species_in_order(entries)
    if core is not None:
        core.check_species(species, core.source)
    max_cutoff = max(g.make_descriptor().cutoff for g in expand_species(list(config.gaps), species))
    labels = [entry_labels(e, names, f"frame {e.index + 1} (line {e.line}) of {os.path.basename(source.name)}")
              for e in entries]
    if not any(label.has_energy for label in labels):
        keys = sorted({k for e in entries for k in e.info})
        hint = [k for k in keys if "energ" in k.lower()]
        raise DataError(f"no frame has the energy key '{names.energy}' (energy_parameter_name)"
                        + (f"; the data has {', '.join(hint)}" if hint else ""))
    e0, how, e0_warnings = compute_e0(targets.e0, entries, singles, species, names, max_cutoff, neighbour_list,
                                      core_energy)
    unused = unused_target_warnings(entries, names, lambda kind: targets.name_options[kind], targets.prefix)
    # every force dropped while the data carry forces: stop (README "Forces are never dropped quietly")
    lost = [text for kind, none_found, text in unused if none_found and kind == "force"]
    if lost and not targets.allow_unfitted_targets:
        raise DataError(lost[0].replace(" are not fitted;", " would not be fitted;")
                        + ", or allow_unfitted_targets=T to fit without them (as gap_fit would)")
    warnings = [(text, True) for _, _, text in unused]
    for e in entries:  # the entries go to every rank, which only needs where each frame is
        e.info, e.numbers, e.logical_arrays = {}, e.numbers[:0], {}
    return entries, species, e0, how, labels, [(text, False) for text in e0_warnings] + warnings


def targets_table(log: Reporter, config: FitConfig, labels) -> None:
    """The targets found per config_type, with their σ."""
    names, sigmas = config.targets.names, config.targets.sigmas
    log.title("Targets found")
    log(f"  keys: energy '{names.energy}', forces '{names.force}', virial '{names.virial}' "
        f"(or stress '{names.stress}'), config_type '{names.config_type}'")
    groups: Dict[str, List[int]] = {}
    for label in labels:
        g = groups.setdefault(label.config_type, [0, 0, 0, 0, 0])
        g[0] += 1
        g[1] += int(label.has_energy)
        g[2] += 3 * label.n_force_atoms * int(label.has_forces)
        g[3] += int(label.has_virial)
        g[4] += int(label.n_rows == 0)
    rows = [[name, *g, " ".join(f"{x:g}" for x in sigmas(name)[:3])] for name, g in groups.items()]
    tot = np.sum([g for g in groups.values()], axis=0)
    rows.append(["total", *tot.tolist(), ""])
    log.table(["config_type", "frames", "energies", "force comps", "virials", "no labels", "sigma E F V"], rows)
    if int(tot[4]):
        log(f"  note: {int(tot[4])} frame(s) carry no label: they only provide sparse-point candidates")
    per_atom = config.targets.sigma_per_atom
    log(f"  sigma_per_atom={'T' if per_atom else 'F'}: energy and virial sigmas "
        + ("are scaled by sqrt(N_atoms)" if per_atom else "are absolute"))
