"""Evaluating GAP models: an ASE calculator for gapfit's and gap_fit's XML files.

For each coordinate and descriptor instance x with cutoff weight f and
gradient rows (atom a, ∂x/∂r_a, ∂f/∂r_a, image position p), as QUIP's
IPModel_GAP (descriptors.md §3):

    e(x) = Σ_s α_s c_s k̃(x, s),   E = Σ_i e0(Z_i) + Σ_x e(x) f
    f_r = (∇e·∂x/∂r_a) f + e ∂f/∂r_a,   F_a −= f_r,   W −= p ⊗ f_r

and local energies share e(x) f equally among the instance's centre atoms.
ASE's stress is −W/V.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
from ase.calculators.calculator import Calculator, all_changes

from ..data.core import load_core
from ..descriptors import descriptor_class, find_type
from ..descriptors.neighbours import neighbour_list
from ..errors import ConfigError, ModelError
from ..kernels.functions import DOT_PRODUCT, KERNEL_NAMES, THETA_KERNELS, make_kernel
from ..options.schema import apply_schema
from ..options.syntax import key_values
from .gap_xml import GapModel, read_model


def descriptor_from_string(text: str, gap_version: Optional[int] = None):
    """A descriptor from an XML ``<descriptor>`` string.

    Lenient, like QUIP's reader: keys that are not the descriptor's own (GP keys
    such as delta or n_sparse, or anything else) are ignored.  QUIP appends
    ``xml_version=<gap_version>`` to the descriptor's arguments; so do we.
    """
    pairs = key_values(text, what="the <descriptor> string")
    dtype = find_type([k for k, v in pairs if v is None], f"in <descriptor>{text.strip()[:60]}</descriptor>")
    cls = descriptor_class(dtype)
    own = [(k, v) for k, v in pairs if k in cls.schema]
    if gap_version is not None and "xml_version" in cls.schema:
        own.append(("xml_version", str(int(gap_version))))
    values, given = apply_schema(cls.schema, own, f"in <descriptor> ({dtype})")
    return cls(values, piece=text, given=given)


class GapPotential:
    """A loaded GAP model: descriptors, kernels and weights, ready to evaluate structures."""

    def __init__(self, model: GapModel):
        if not model.fitted:
            raise ModelError(f"GAP model '{model.path}' has not been fitted (fitted=\"F\": "
                             f"it was written by sparsify_only_no_fit)")
        self.model = model
        self.terms = []
        for c in model.coordinates:
            desc = descriptor_from_string(c.descriptor, model.gap_version)
            if c.covariance_type in THETA_KERNELS:
                try:
                    kernel = make_kernel(KERNEL_NAMES[c.covariance_type], c.delta, c.sparse_x, theta=c.theta,
                                         f0=c.f0, permutations=c.permutations)
                except ValueError as exc:
                    raise ModelError(f"GAP model '{model.path}', descriptor '{c.descriptor.strip()[:50]}': "
                                     f"{exc}") from None
            elif c.covariance_type == DOT_PRODUCT:
                kernel = make_kernel("dot_product", c.delta, c.sparse_x, zeta=c.zeta)
            else:
                raise ModelError(f"covariance_type {c.covariance_type} is not supported by gapfit")
            if c.sparse_x.shape[1] != desc.dimensions:
                raise ModelError(f"GAP model: descriptor '{c.descriptor.strip()[:50]}' has {desc.dimensions} "
                                 f"dimensions but its sparse points have {c.sparse_x.shape[1]}")
            weights = np.asarray(c.alpha) * np.asarray(c.sparse_cutoff)
            self.terms.append((desc, kernel, weights))
        self.cutoff = max((d.cutoff for d, _, _ in self.terms), default=0.0)
        self.core = None
        if model.has_core:  # gap_fit's Sum of a core potential and the GAP
            try:
                self.core = load_core(model.core_ip_args, model.core_xml, f"the core potential of '{model.path}'",
                                      key="the core potential's init_args")
            except ConfigError as exc:
                raise ModelError(str(exc)) from None

    @classmethod
    def from_file(cls, path: str) -> "GapPotential":
        return cls(read_model(path))

    def evaluate(self, structure, forces: bool = True) -> dict:
        """Energy (eV), forces (eV/Å), virial (eV, 3×3) and local energies of a structure."""
        numbers = np.asarray(structure.numbers)
        n = numbers.size
        positions = np.asarray(structure.positions, dtype=float)
        nl = neighbour_list(positions, np.asarray(structure.cell[:], dtype=float), np.asarray(structure.pbc),
                            self.cutoff)
        e0 = self.model.e0[numbers]
        local = e0.astype(float).copy()
        f_out = np.zeros((n, 3))
        virial = np.zeros((3, 3))
        for desc, kernel, weights in self.terms:
            vals = desc.calc(structure, nl, grad=forces)
            if vals.n_desc == 0:
                continue
            block = kernel.prepare(vals.x)
            e = block.k @ weights  # e(x)
            ef = e * vals.cutoff
            centres = vals.centres
            np.add.at(local, centres.reshape(-1), np.repeat(ef / centres.shape[1], centres.shape[1]))
            if not forces or vals.grad_desc is None or vals.grad_desc.size == 0:
                continue
            grad_e = kernel.gradient_of_sum(block, weights)  # (n_desc, d)
            g = vals.grad_desc
            fr = np.einsum("rkd,rd->rk", vals.grad_x, grad_e[g]) * vals.cutoff[g][:, None]
            fr += e[g][:, None] * vals.grad_cutoff
            np.subtract.at(f_out, vals.grad_atom, fr)
            virial -= vals.grad_pos.T @ fr
        if self.core is not None:
            core = self.core.evaluate(structure, forces=forces)
            local += core["energies"]
            if forces:
                f_out += core["forces"]
                virial += core["virial"]
        return {"energy": float(local.sum()), "energies": local, "forces": f_out, "virial": virial}


class GapCalculator(Calculator):
    """ASE calculator for a GAP XML model (gapfit's or gap_fit's).

    >>> calc = GapCalculator("gp.xml")
    >>> atoms.calc = calc; atoms.get_potential_energy()
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress", "energies"]

    def __init__(self, param_filename: Optional[str] = None, model: Optional[GapModel] = None, **kwargs):
        super().__init__(**kwargs)
        if (param_filename is None) == (model is None):
            raise ValueError("give either param_filename (a GAP XML file) or model")
        self.param_filename = param_filename
        self.potential = GapPotential(model) if model is not None else GapPotential.from_file(param_filename)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        res = self.potential.evaluate(self.atoms, forces=True)
        self.results["energy"] = res["energy"]
        self.results["free_energy"] = res["energy"]
        self.results["energies"] = res["energies"]
        self.results["forces"] = res["forces"]
        if self.atoms.cell.rank == 3:
            stress = -res["virial"] / self.atoms.get_volume()
            self.results["stress"] = stress.reshape(9)[[0, 4, 8, 5, 2, 1]]
        self.results["virial"] = res["virial"]
