"""One gap-string piece parsed and validated: its GP keys and its descriptor's own keys (GapSpec), and
gap_fit's ``add_species`` expansion."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Tuple

from ..descriptors import descriptor_class, find_type
from ..errors import ConfigError
from ..options.gp import GP_KEYS
from ..options.schema import GivenKeys, apply_schema, did_you_mean
from ..options.syntax import key_values

#: GpConfig's field for each canonical per-GAP key (gapfit.options.gp.GP_KEYS)
_GP_FIELDS = {
    "energy_scale": "delta", "f0": "f0", "n_sparse": "n_sparse", "config_type_n_sparse": "config_type_n_sparse",
    "sparse_method": "sparse_method", "lengthscale_factor": "theta_factor", "lengthscale_uniform": "theta_uniform",
    "lengthscale_file": "theta_file", "sparse_file": "sparse_file", "mark_sparse_atoms": "mark_sparse_atoms",
    "add_species": "add_species", "covariance_type": "covariance_type", "soap_exponent": "zeta",
    "print_sparse_index": "print_sparse_index", "unique_hash_tolerance": "unique_hash_tolerance",
    "unique_descriptor_tolerance": "unique_descriptor_tolerance",
}


@dataclass(frozen=True)
class GpConfig:
    """One descriptor's GP: kernel, δ, θ rule, sparse method and counts (gap_fit's per-GAP keys)."""

    delta: float  # energy_scale
    f0: float
    n_sparse: int
    config_type_n_sparse: str
    sparse_method: str
    theta_factor: str  # lengthscale_factor as typed: one number, or one per dimension
    theta_uniform: float  # lengthscale_uniform
    theta_file: str  # lengthscale_file
    sparse_file: str
    mark_sparse_atoms: bool
    add_species: bool
    covariance_type: str  # ard_se | pp | dot_product
    zeta: float  # soap_exponent
    print_sparse_index: str
    unique_hash_tolerance: float
    unique_descriptor_tolerance: float
    given: GivenKeys  # the keys given, as typed

    @classmethod
    def from_values(cls, values: Dict[str, Any], given: GivenKeys) -> "GpConfig":
        return cls(given=given, **{field_name: values[key] for key, field_name in _GP_FIELDS.items()})

    @property
    def theta_rule(self) -> str:
        """How ARD_SE/pp θ is set: 'uniform', 'file', 'factor' (× the data's ranges), or '' (ζ instead)."""
        for key, rule in (("lengthscale_uniform", "uniform"), ("lengthscale_file", "file"),
                          ("lengthscale_factor", "factor")):
            if key in self.given:
                return rule
        return ""

    def key(self, name: str) -> str:
        """A per-GAP key (canonical name) as the user typed it."""
        return self.given.key(name)

    @property
    def theta_file_key(self) -> str:
        return self.given.key("lengthscale_file")

    def __getitem__(self, name: str):
        """The value of a per-GAP key by its canonical name (gap_fit's own vocabulary)."""
        return getattr(self, _GP_FIELDS[name])


@dataclass(frozen=True)
class GapSpec:
    """One descriptor + GP specification (one ``gpCoordinates`` after species expansion)."""

    piece: str  # the full gap-string piece, written verbatim to <descriptor>
    index: int  # 1-based position among the pieces (for messages)
    descriptor_type: str
    gp: GpConfig
    descriptor_params: Dict[str, Any]
    descriptor_given: GivenKeys
    warnings: Tuple[str, ...] = ()  # legacy keys that were accepted

    @property
    def where(self) -> str:
        return f"in gap descriptor {self.index} ({self.descriptor_type})"

    def make_descriptor(self, template: bool = False):
        """The descriptor; ``template``: of a piece add_species will expand (:meth:`Descriptor.template`)."""
        cls = descriptor_class(self.descriptor_type)
        make = cls.template if template else cls
        return make(self.descriptor_params, piece=self.piece, given=self.descriptor_given)


def parse_gap_piece(piece: str, index: int) -> GapSpec:
    """Parse and validate one gap piece: GP keys and the descriptor's own keys."""
    short = " ".join(piece.split())
    where0 = f"in gap descriptor {index} ('{short[:60]}{'...' if len(short) > 60 else ''}')"
    pairs = key_values(piece, what=f"gap descriptor {index}")
    bare = [k for k, v in pairs if v is None]
    dtype = find_type(bare, where0)
    where = f"in gap descriptor {index} ({dtype})"
    dcls = descriptor_class(dtype)
    gp_pairs = [(k, v) for k, v in pairs if k in GP_KEYS]
    d_pairs = [(k, v) for k, v in pairs if k not in GP_KEYS and k not in dcls.legacy_keys]
    warnings = [f"the legacy key '{k}' {where} is accepted and has no effect: {dcls.legacy_keys[k]}"
                for k, _ in pairs if k in dcls.legacy_keys and k not in GP_KEYS]
    for key, _ in d_pairs:
        if key not in dcls.schema:
            hint = did_you_mean(key, list(GP_KEYS.names()) + list(dcls.schema.names()))
            raise ConfigError(f"unknown key '{key}' {where}{hint}")
    gp, gp_given = apply_schema(GP_KEYS, gp_pairs, where)
    dparams, d_given = apply_schema(dcls.schema, d_pairs, where)
    _validate_gp(gp, gp_given, where)
    return GapSpec(piece=piece, index=index, descriptor_type=dtype, gp=GpConfig.from_values(gp, gp_given),
                   descriptor_params=dparams, descriptor_given=d_given, warnings=tuple(warnings))


def _validate_gp(gp: Dict[str, Any], given: GivenKeys, where: str) -> None:
    """The checks that involve several per-GAP keys."""
    cov = gp["covariance_type"]
    if cov == "bond_real_space":
        raise ConfigError(f"covariance_type={cov} {where} is not implemented in gapfit (use ard_se, pp or "
                          f"dot_product)")
    hyper = [k for k in ("lengthscale_file", "lengthscale_uniform", "lengthscale_factor", "soap_exponent") if k in given]
    if len(hyper) != 1:
        raise ConfigError(f"exactly one of theta_file, theta_uniform, theta_fac or zeta must be given {where}; "
                          f"got {len(hyper)}" + (f" ({', '.join(given.key(k) for k in hyper)})" if hyper else ""))
    if cov == "dot_product" and "soap_exponent" not in given:
        raise ConfigError(f"covariance_type=dot_product needs zeta {where}")
    if cov in ("ard_se", "pp") and "soap_exponent" in given:
        raise ConfigError(f"covariance_type={cov} needs theta_uniform, theta_fac or theta_file, "
                          f"not {given.key('soap_exponent')}, {where}")
    if "lengthscale_uniform" in given and gp["lengthscale_uniform"] <= 0:
        raise ConfigError(f"the '{given.key('lengthscale_uniform')}' key {where} must be greater than 0; "
                          f"got {given['lengthscale_uniform']}")
    if cov == "dot_product" and gp["soap_exponent"] < 0:
        raise ConfigError(f"the '{given.key('soap_exponent')}' key {where} must be 0 or greater; "
                          f"got {given['soap_exponent']}")
    method = gp["sparse_method"]
    file_method = method in ("file", "index_file")
    if gp["sparse_file"] and not file_method:
        raise ConfigError(f"sparse_file is given {where} but sparse_method is {method}, not file or index_file")
    if file_method and not gp["sparse_file"]:
        raise ConfigError(f"sparse_method={method} needs sparse_file {where}")
    if "n_sparse" in given and gp["n_sparse"] <= 0 and not (file_method or method == "none"):
        raise ConfigError(f"the 'n_sparse' key {where} must be greater than 0; got {given['n_sparse']}")
    if gp["n_sparse"] < 0:
        raise ConfigError(f"the 'n_sparse' key {where} must not be negative; got {given['n_sparse']}")
    if gp["n_sparse"] > 0 and gp["config_type_n_sparse"] and not file_method:
        raise ConfigError(f"n_sparse and config_type_n_sparse cannot both be given {where}")
    if gp["n_sparse"] == 0 and not gp["config_type_n_sparse"] and not file_method and method != "none":
        raise ConfigError(f"n_sparse (or config_type_n_sparse) is required {where}")
    if gp["mark_sparse_atoms"]:
        raise ConfigError(f"mark_sparse_atoms is not supported {where} (it does nothing in gap_fit either)")


def expand_species(specs: List[GapSpec], species: List[int]) -> List[GapSpec]:
    """gap_fit's ``add_species=T`` expansion, in the order of the pieces."""
    out: List[GapSpec] = []
    for spec in specs:
        if not spec.gp.add_species:
            out.append(spec)
            continue
        cls = descriptor_class(spec.descriptor_type)
        for new_piece in cls.expand_species(_blank_add_species(spec.piece), species):
            new = parse_gap_piece(new_piece, spec.index)
            out.append(new)
    return out


def _blank_add_species(piece: str) -> str:
    """gap_fit blanks an ``add_species...`` token with spaces before expanding."""
    pos = piece.find("add_species")
    if pos < 0:
        return piece
    end = pos
    while end < len(piece) and piece[end] != " ":
        end += 1
    return piece[:pos] + " " * (end - pos) + piece[end:]
