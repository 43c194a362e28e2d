"""The descriptor interface that distance_2b, soap (and later types) implement."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..options.schema import Schema


@dataclass
class DescriptorValues:
    """Descriptor instances of one structure, with optional gradients.

    Attributes
    ----------
    x : (n_desc, d) float
        Descriptor vectors, in QUIP's instance order.
    cutoff : (n_desc,) float
        Covariance cutoff weight ``c(x)`` of each instance.
    centres : (n_desc, n_index) int
        Atoms whose local energy shares the instance's energy equally
        (distance_2b: ``(i, j)``; soap: ``(i,)``).
    grad_desc, grad_atom : (n_grad,) int
        For each gradient row: the instance it belongs to and the atom moved.
    grad_x : (n_grad, 3, d) float
        ``d x / d r_atom`` (row, Cartesian direction, component).
    grad_cutoff : (n_grad, 3) float
        ``d c / d r_atom``.
    grad_pos : (n_grad, 3) float
        Absolute position of the moved atom's image (for virials).
    """

    x: np.ndarray
    cutoff: np.ndarray
    centres: np.ndarray
    grad_desc: Optional[np.ndarray] = None
    grad_atom: Optional[np.ndarray] = None
    grad_x: Optional[np.ndarray] = None
    grad_cutoff: Optional[np.ndarray] = None
    grad_pos: Optional[np.ndarray] = None

    @property
    def n_desc(self) -> int:
        return int(self.x.shape[0])

    @property
    def has_grad(self) -> bool:
        return self.grad_x is not None

    @property
    def nbytes(self) -> int:
        """Memory held by all arrays (for chunk sizing)."""
        return sum(a.nbytes for a in (self.x, self.cutoff, self.centres, self.grad_desc, self.grad_atom,
                                      self.grad_x, self.grad_cutoff, self.grad_pos) if a is not None)


class Descriptor:
    """Base class: parameters from a gap string piece, and ``calc``.

    Subclasses set ``name`` (the keyword in the gap string) and ``schema`` (the
    keys QUIP's descriptor registers) and implement ``calc``.
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""  # one line for gapfit --help
    schema: ClassVar[Schema]
    n_index: ClassVar[int] = 1
    sparse_methods: ClassVar[Sequence[str]] = ()  # those that make sense for it (gapfit --help)
    #: values computed by elementwise IEEE arithmetic in QUIP's order (no BLAS): the same bits on every
    #: machine and in gap_fit, so the duplicate filter may decide on them as gap_fit does (gapfit.sparse.dedup)
    same_bits_everywhere: ClassVar[bool] = False
    #: keys of published command lines that current gap_fit ignores: accepted with a warning
    legacy_keys: ClassVar[Dict[str, str]] = {}

    def __init__(self, params: Dict, piece: str = "", given=()):
        self.params = dict(params)
        self.piece = piece
        self.given = set(given)  # keys given explicitly in the piece
        #: what the fit's log should say about these settings (accepted, but read as QUIP reads them)
        self.warnings: Tuple[str, ...] = ()

    @property
    def cutoff(self) -> float:
        """Radius of the neighbour list the descriptor needs (Å)."""
        return float(self.params["cutoff"])

    @property
    def dimensions(self) -> int:
        raise NotImplementedError

    @property
    def permutations(self) -> np.ndarray:
        """(n_permutations, d) 1-based permutations of the components (identity only)."""
        return np.arange(1, self.dimensions + 1)[None, :]

    def species_selector(self) -> Optional[Sequence[int]]:
        """Atomic numbers this descriptor's instances are centred on (None: all)."""
        return None

    def calc(self, structure, neighbours, grad: bool = False, atoms=None) -> DescriptorValues:
        """Instances of ``structure`` (with gradients if ``grad``).

        ``atoms`` (a boolean mask over atoms) restricts the instances to those centred on
        these atoms, as QUIP's ``atom_mask_name``: the union over a partition of the atoms
        gives all instances, so a large frame can be processed in pieces.
        """
        raise NotImplementedError

    def gradient_rows(self, structure, neighbours) -> Optional[np.ndarray]:
        """Gradient rows that the instances centred on each atom produce (None if unknown)."""
        return None

    @property
    def rows_per_instance(self) -> int:
        """Gradient rows of one instance when every instance has the same number (a pair 2, a triplet 3,
        a cluster its order); 0 when instances are atoms' environments (one per atom with rows)."""
        return 0

    def count_instances(self, rows: np.ndarray) -> int:
        """The instances behind :meth:`gradient_rows`' counts (dryrun's table, as the fit counts them)."""
        per = self.rows_per_instance
        return int(rows.sum()) // per if per else int(np.count_nonzero(rows))

    @property
    def splittable(self) -> bool:
        """Whether :meth:`calc` with ``atoms`` subsets partitions the instances."""
        return True

    @classmethod
    def combination_warnings(cls, descriptors: Sequence["Descriptor"]) -> List[str]:
        """Warnings about this class's instances among all of a fit's coordinates (in order), for
        what only their combination shows; none by default."""
        return []

    @classmethod
    def template(cls, params: Dict, piece: str = "", given=()) -> "Descriptor":
        """The descriptor of a piece that ``add_species=T`` will expand, for the checks made before the data
        is read: the checks that depend on the data's species wait for the expansion (by default: none)."""
        return cls(params, piece=piece, given=given)

    @classmethod
    def expand_species(cls, piece: str, species: List[int]) -> List[str]:
        """gap_fit's ``add_species=T`` expansion of a gap string piece."""
        return [piece]


def coordination_function(r, cutoff, transition_width):
    """QUIP's cosine cutoff: 1 below ``cutoff - w``, ½(cos(π(r-rc+w)/w)+1) in the taper, 0 beyond."""
    r = np.asarray(r, dtype=float)
    out = np.zeros_like(r)
    inner = r <= cutoff - transition_width
    taper = (~inner) & (r <= cutoff)
    out[inner] = 1.0
    out[taper] = 0.5 * (np.cos(np.pi * (r[taper] - cutoff + transition_width) / transition_width) + 1.0)
    return out


def d_coordination_function(r, cutoff, transition_width):
    """Derivative of :func:`coordination_function` with respect to ``r``."""
    r = np.asarray(r, dtype=float)
    out = np.zeros_like(r)
    taper = (r > cutoff - transition_width) & (r <= cutoff)
    out[taper] = -0.5 * np.pi * np.sin(np.pi * (r[taper] - cutoff + transition_width) / transition_width) / transition_width
    return out
