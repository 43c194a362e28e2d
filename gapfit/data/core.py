"""Core (baseline) potentials: QUIP's ``IP Glue``, which gap_fit subtracts from the targets
(``core_ip_args={IP Glue} core_param_file=glue.xml``) and the model file adds back.

The Glue model (QUIP ``IPModel_Glue``, ``Spline``), per atom i of type t_i:

    E_i = F_{t_i}(ρ_i) + ½ Σ_j V_{t_i t_j}(r_ij),    ρ_i = Σ_j ρ_{t_j}(r_ij)

over all neighbours and periodic images, with strict cutoffs r < r_d(t_j) (the last density
knot of the *neighbour's* type) and r < r_c(t_i, t_j) (the last pair knot).  V and the
embedding F are cubic splines (Numerical Recipes; an end slope above 0.99e30 means a natural
end) extrapolated linearly beyond their knots; a missing slope is 0 for pair splines and
natural for embeddings.  Unless ``do_spline="T"``, the density is c (r_d − r)³ with c the least
squares fit to the density points.  The virial has QUIP's sign (−V σ in ASE's convention).
Atoms of elements the file does not describe contribute nothing, as in QUIP; gapfit refuses such
data before the fit (:meth:`GluePotential.check_species`).
"""

from __future__ import annotations

import re
from typing import Dict, List, Optional, Sequence

import numpy as np
from ase.data import chemical_symbols

from ..config.targets import parse_ip_args
from ..descriptors.neighbours import neighbour_list
from ..errors import ConfigError

NATURAL = 0.99e30  # an end slope above this means a natural spline end


def _fortran_real(text: str) -> float:
    """A real as Fortran's list-directed read takes it (first token; 1.0d0 allowed)."""
    token = re.split(r"[\s,]+", str(text).strip())[0]
    return float(token.replace("d", "e").replace("D", "E"))


def _fortran_int(text: str) -> int:
    return int(re.split(r"[\s,]+", str(text).strip())[0])


def _fortran_logical(text: str) -> bool:
    t = str(text).strip().lstrip(".")
    if t[:1] in ("T", "t"):
        return True
    if t[:1] in ("F", "f"):
        return False
    raise ValueError(f"not a logical: {text!r}")


class Spline:
    """QUIP's cubic spline: sorted knots, linear extrapolation with the end slopes outside them."""

    def __init__(self, x, y, slope_start: float, slope_end: float):
        order = np.argsort(x, kind="stable")
        self.x = np.asarray(x, dtype=float)[order]
        self.y = np.asarray(y, dtype=float)[order]
        n = self.x.size
        if n < 2:
            raise ValueError(f"a spline needs at least 2 points, got {n}")
        h = np.diff(self.x)
        if np.any(h == 0):
            raise ValueError(f"two points at x = {self.x[1:][h == 0][0]}")
        y2, u = np.zeros(n), np.zeros(n)
        if slope_start <= NATURAL:
            y2[0] = -0.5
            u[0] = (3.0 / h[0]) * ((self.y[1] - self.y[0]) / h[0] - slope_start)
        for i in range(1, n - 1):  # the tridiagonal sweep is sequential (a few dozen knots)
            sig = (self.x[i] - self.x[i - 1]) / (self.x[i + 1] - self.x[i - 1])
            p = sig * y2[i - 1] + 2.0
            y2[i] = (sig - 1.0) / p
            u[i] = (self.y[i + 1] - self.y[i]) / h[i] - (self.y[i] - self.y[i - 1]) / h[i - 1]
            u[i] = (6.0 * u[i] / (self.x[i + 1] - self.x[i - 1]) - sig * u[i - 1]) / p
        if slope_end > NATURAL:
            qn = un = 0.0
        else:
            qn = 0.5
            un = (3.0 / h[-1]) * (slope_end - (self.y[-1] - self.y[-2]) / h[-1])
        y2[-1] = (un - qn * u[-2]) / (qn * y2[-2] + 1.0)
        for k in range(n - 2, -1, -1):
            y2[k] = y2[k] * y2[k + 1] + u[k]
        self.y2 = y2
        self.slope_start, self.slope_end = slope_start, slope_end
        # a natural end extrapolates with the spline's own slope there
        if slope_start > NATURAL:
            self.slope_start = float(self.derivative(self.x[:1])[0])
        if slope_end > NATURAL:
            self.slope_end = float(self.derivative(self.x[-1:])[0])

    @property
    def last_knot(self) -> float:
        return float(self.x[-1])

    def _interval(self, r):
        lo = np.clip(np.searchsorted(self.x, r, side="right") - 1, 0, self.x.size - 2)
        hi = lo + 1
        h = self.x[hi] - self.x[lo]
        return lo, hi, h, (self.x[hi] - r) / h, (r - self.x[lo]) / h

    def value(self, r: np.ndarray) -> np.ndarray:
        r = np.asarray(r, dtype=float)
        lo, hi, h, a, b = self._interval(r)
        y = a * self.y[lo] + b * self.y[hi] + ((a * a * a - a) * self.y2[lo] + (b * b * b - b) * self.y2[hi]) * (h * h) / 6.0
        y = np.where(r < self.x[0], self.y[0] + (r - self.x[0]) * self.slope_start, y)
        return np.where(r > self.x[-1], self.y[-1] + (r - self.x[-1]) * self.slope_end, y)

    def derivative(self, r: np.ndarray) -> np.ndarray:
        r = np.asarray(r, dtype=float)
        lo, hi, h, a, b = self._interval(r)
        dy = (self.y[hi] - self.y[lo]) / h + ((3.0 * b * b - 1.0) * self.y2[hi] - (3.0 * a * a - 1.0) * self.y2[lo]) * h / 6.0
        dy = np.where(r < self.x[0], self.slope_start, dy)
        return np.where(r > self.x[-1], self.slope_end, dy)


def _points(element, x_name: str, y_name: str, where: str) -> np.ndarray:
    points = [(_fortran_real(p.get(x_name)), _fortran_real(p.get(y_name))) for p in element if p.tag == "point"]
    declared = element.get("num_points")
    if declared is None or _fortran_int(declared) != len(points):
        raise ConfigError(f"{where}: <{element.tag}> declares num_points={declared} but has {len(points)} <point>s "
                          f"(QUIP would fail or add a (0, 0) knot)")
    return np.array(points, dtype=float).reshape(-1, 2)


class GluePotential:
    """QUIP's ``IP Glue`` from its XML parameters (a ``<Glue_params>`` block, in any wrapper)."""

    ip = "Glue"

    def __init__(self, xml_text: str, label: str = "", source: str = "the Glue parameters"):
        from lxml import etree  # lazy: only a fit with a core potential parses XML here
        self.source, self.label = source, label
        text = re.sub(r"^\s*<\?xml[^>]*\?>", "", xml_text)
        try:
            root = etree.fromstring(("<gapfit_wrapper>" + text + "</gapfit_wrapper>").encode(),
                                    parser=etree.XMLParser(huge_tree=True, remove_comments=True))
        except etree.XMLSyntaxError as exc:
            raise ConfigError(f"{source} is not well-formed XML: {exc}") from None
        blocks = list(root.iter("Glue_params"))
        if label:  # QUIP: the first block with this label
            blocks = [b for b in blocks if b.get("label", "") == label][:1]
        if not blocks:
            raise ConfigError(f"{source} has no <Glue_params>" + (f" with label={label}" if label else ""))
        self._parse(blocks[-1])  # QUIP without a label: every block is read, the last one wins

    def _parse(self, block):
        where = self.source
        if block.get("n_types") is None:
            raise ConfigError(f"{where}: <Glue_params> has no n_types")
        n_types = _fortran_int(block.get("n_types"))
        self.atomic_numbers = [0] * n_types
        density: List[Optional[tuple]] = [None] * n_types
        embedding: List[Optional[Spline]] = [None] * n_types
        pairs: Dict[tuple, Spline] = {}
        try:
            for el in block:
                if el.tag == "per_type_data":
                    t = _fortran_int(el.get("type")) - 1
                    if not 0 <= t < n_types:
                        raise ConfigError(f"{where}: per_type_data type={t + 1} outside 1..n_types={n_types}")
                    self.atomic_numbers[t] = _fortran_int(el.get("atomic_num"))
                    for sub in el:
                        if sub.tag == "density":
                            pts = _points(sub, "a", "rho", where)
                            spline = _fortran_logical(sub.get("do_spline", "F"))
                            density[t] = (pts, Spline(pts[:, 0], pts[:, 1], _fortran_real(sub.get("density_y1")),
                                                      _fortran_real(sub.get("density_yn"))), spline)
                        elif sub.tag == "potential_density":
                            pts = _points(sub, "rho", "E", where)
                            embedding[t] = Spline(pts[:, 0], pts[:, 1], _fortran_real(sub.get("y1", "2.0e30")),
                                                  _fortran_real(sub.get("yn", "2.0e30")))
                        elif sub.tag == "potential_neighbours":
                            raise ConfigError(f"{where}: <potential_neighbours> is not usable (QUIP aborts on it)")
                elif el.tag == "per_pair_data":
                    t1, t2 = _fortran_int(el.get("type1")) - 1, _fortran_int(el.get("type2")) - 1
                    for sub in el:
                        if sub.tag == "potential_pair":
                            pts = _points(sub, "r", "E", where)
                            pairs[(t1, t2)] = Spline(pts[:, 0], pts[:, 1], _fortran_real(sub.get("y1", "0.0")),
                                                     _fortran_real(sub.get("yn", "0.0")))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{where}: {exc}") from None
        for t in range(n_types):
            z = self.atomic_numbers[t]
            if density[t] is None:
                raise ConfigError(f"{where}: type {t + 1} (Z={z}) has no <density> (it sets the cutoff)")
        self.n_types = n_types
        self.embedding = embedding
        self.density_spline = [d[1] for d in density]
        self.use_density_spline = [d[2] for d in density]
        self.density_cutoff = np.array([s.last_knot for s in self.density_spline])
        # QUIP's ρ = c (r_d − r)³: c fits the points through the origin (file order)
        self.density_c = np.zeros(n_types)
        for t, (pts, _, _) in enumerate(density):
            w = (self.density_cutoff[t] - pts[:, 0]) ** 3
            self.density_c[t] = np.dot(pts[:, 1], w) / np.dot(w, w)
        # a pair spline serves both orders; with both (a,b) and (b,a) given, type1 < type2 wins
        self.pair = [[None] * n_types for _ in range(n_types)]
        for a in range(n_types):
            for b in range(n_types):
                if (b, a) in pairs:
                    self.pair[a][b] = self.pair[b][a] = pairs[(b, a)]
        self.pair_cutoff = np.array([[s.last_knot if s is not None else 0.0 for s in row] for row in self.pair])
        self.cutoff = float(max(self.density_cutoff.max(), self.pair_cutoff.max()))
        self.type_of = {z: t for t, z in enumerate(self.atomic_numbers) if z > 0}  # a repeated Z: the last type

    @property
    def species(self) -> List[int]:
        return sorted(self.type_of)

    def check_species(self, species: Sequence[int], what: str) -> None:
        """Refuse data with elements the core does not describe (QUIP would give them no core energy)."""
        missing = [z for z in species if z not in self.type_of]
        if missing:
            names = ", ".join(f"{chemical_symbols[z]} (Z={z})" for z in missing)
            raise ConfigError(f"{what} describes {', '.join(chemical_symbols[z] for z in self.species)} but not "
                              f"{names}, which the data contain")
        for t, z in enumerate(self.atomic_numbers):
            if z in species and self.embedding[t] is None:
                raise ConfigError(f"{what}: {chemical_symbols[z]} (type {t + 1}) has no <potential_density>")

    def _density(self, t: int, r: np.ndarray):
        if self.use_density_spline[t]:
            s = self.density_spline[t]
            return s.value(r), s.derivative(r)
        gap = self.density_cutoff[t] - r
        return self.density_c[t] * gap ** 3, -3.0 * self.density_c[t] * gap ** 2

    def evaluate(self, structure, forces: bool = True) -> dict:
        """Energy (eV), local energies, forces (eV/Å) and virial (eV, QUIP's sign) of a structure."""
        numbers = np.asarray(structure.numbers)
        n = numbers.size
        types = np.array([self.type_of.get(int(z), -1) for z in numbers], dtype=np.int64)
        nl = neighbour_list(np.asarray(structure.positions, dtype=float), np.asarray(structure.cell[:], dtype=float),
                            np.asarray(structure.pbc), self.cutoff)
        keep = (types[nl.i] >= 0) & (types[nl.j] >= 0) & (nl.distance > 0)
        i, j, r, diff = nl.i[keep], nl.j[keep], nl.distance[keep], nl.diff[keep]
        ti, tj = types[i], types[j]
        rho_ij, drho_ij = np.zeros(r.size), np.zeros(r.size)
        for t in range(self.n_types):
            m = (tj == t) & (r < self.density_cutoff[t])
            if m.any():
                rho_ij[m], drho_ij[m] = self._density(t, r[m])
        rho = np.bincount(i, weights=rho_ij, minlength=n)
        emb, demb = np.zeros(n), np.zeros(n)
        for t in range(self.n_types):
            m = types == t
            if m.any() and self.embedding[t] is not None:
                emb[m] = self.embedding[t].value(rho[m])
                demb[m] = self.embedding[t].derivative(rho[m])
        v, dv = np.zeros(r.size), np.zeros(r.size)
        for a in range(self.n_types):
            for b in range(self.n_types):
                s = self.pair[a][b]
                if s is None:
                    continue
                m = (ti == a) & (tj == b) & (r < self.pair_cutoff[a, b])
                if m.any():
                    v[m], dv[m] = s.value(r[m]), s.derivative(r[m])
        local = emb + 0.5 * np.bincount(i, weights=v, minlength=n)
        out = {"energy": float(local.sum()), "energies": local}
        if forces:
            g = demb[i] * drho_ij + 0.5 * dv  # dE/dr of the ordered pair (i → j)
            unit = diff / r[:, None]
            fvec = g[:, None] * unit
            f = np.zeros((n, 3))
            for k in range(3):
                f[:, k] = np.bincount(i, weights=fvec[:, k], minlength=n) - np.bincount(j, weights=fvec[:, k],
                                                                                        minlength=n)
            out["forces"] = f
            out["virial"] = -(fvec.T @ diff)
        return out




def read_param_file(path: str, key: str = "core_param_file") -> str:
    """The text of a core potential's parameter file (ConfigError naming it if unreadable)."""
    try:
        with open(path, "r", encoding="utf-8") as fh:
            return fh.read()
    except FileNotFoundError:
        raise ConfigError(f"{key} '{path}' does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{key} '{path}' cannot be read: {getattr(exc, 'strerror', None) or exc}") from None


def load_core(ip_args: str, xml_text: str, source: str, key: str = "core_ip_args") -> GluePotential:
    """The core potential that ``ip_args`` names, from the XML text of its parameter file."""
    _, label = parse_ip_args(ip_args, key)
    return GluePotential(xml_text, label=label, source=source)
