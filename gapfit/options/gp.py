"""gap_fit's per-GAP keys (``gap_fit_module.F90``, ``gap_fit_parse_gap_str``): δ, θ, ζ, the kernel and
the sparse method of one descriptor."""

from __future__ import annotations

from .schema import Param, Schema, non_negative, positive, to_bool, to_float, to_int, to_str

#: gap_fit's sparse methods, with what each does (gapfit --help)
SPARSE_METHOD_HELP = {
    "random": "M distinct candidates drawn at random",
    "pivot": "pivoted Cholesky of the candidates' kernel-like matrix: its first M pivots",
    "cluster": "bisecting k-medoids clustering into M clusters, their medoids",
    "uniform": "a grid of ceil(M^(1/d)) bins per dimension, the first candidate in each bin (low d only)",
    "kmeans": "k-means into M clusters, the candidate nearest each centre",
    "covariance": "greedy: each next point is the candidate of largest GP variance",
    "fuzzy": "fuzzy c-means into M clusters, the candidate nearest each centre",
    "file": "the sparse points themselves from sparse_file (cutoff, then d values, per point)",
    "index_file": "the 1-based indices of the chosen candidates from sparse_file",
    "cur_covariance": "CUR decomposition of the candidates' kernel matrix",
    "cur_points": "CUR decomposition of the candidates' descriptor matrix (leverage scores, randomised)",
    "none": "every distinct candidate",
}
SPARSE_METHODS = tuple(SPARSE_METHOD_HELP)


def _sparse_method(value):
    v = (value or "").strip().lower()
    if v == "uniq":
        raise ValueError("one of " + ", ".join(SPARSE_METHODS) + " (uniq is no longer in use: use none)")
    if v not in SPARSE_METHODS:
        raise ValueError("one of " + ", ".join(SPARSE_METHODS))
    return v


def _covariance_type(value):
    v = (value or "").strip().lower()
    mapping = {"gaussian": "ard_se", "ard_se": "ard_se", "dot_product": "dot_product",
               "bond_real_space": "bond_real_space", "pp": "pp"}
    if v not in mapping:
        raise ValueError("one of ard_se (gaussian), dot_product, pp")
    return mapping[v]


GP_KEYS = Schema([
    Param("energy_scale", to_float, None, aliases=("delta",), mandatory=True, check=positive,
          help="δ, the energy scale of this term (eV): the kernel is multiplied by δ²"),
    Param("f0", to_float, 0.0, help="kernel offset (eV): ard_se and pp kernels add f0²"),
    Param("n_sparse", to_int, 0, help="number of sparse points M of this descriptor (per species after add_species)"),
    Param("config_type_n_sparse", to_str, "", help="M per config_type instead of n_sparse: {type1:50:type2:100}"),
    Param("sparse_method", _sparse_method, "random", help="how the sparse points are chosen (list below)"),
    Param("lengthscale_factor", to_str, "1.0", aliases=("theta_fac",),
          help="ard_se θ = this factor × each dimension's range over the data (one value or one per dimension)"),
    Param("lengthscale_uniform", to_float, 0.0, aliases=("theta_uniform",),
          help="ard_se θ, the same for every dimension (units of the descriptor, e.g. Å)"),
    Param("lengthscale_file", to_str, "", aliases=("theta_file",), help="ard_se θ from a file: one line, d numbers"),
    Param("sparse_file", to_str, "", help="the sparse points (sparse_method=file) or their indices (index_file)"),
    Param("mark_sparse_atoms", to_bool, False, help="does nothing in gap_fit (refused)"),
    Param("add_species", to_bool, True, help="expand into one descriptor per species (or pair) in the data"),
    Param("covariance_type", _covariance_type, None, mandatory=True,
          help="the kernel: ard_se (alias gaussian), pp (compact piecewise polynomial) or dot_product"),
    Param("soap_exponent", to_float, 1.0, aliases=("zeta",), help="ζ, the exponent of the dot_product kernel"),
    Param("print_sparse_index", to_str, "", help="append the 1-based indices of the chosen sparse points to this file"),
    Param("unique_hash_tolerance", to_float, 1.0e-10, check=non_negative,
          help="duplicate filter: candidates whose L1 norms differ by less are compared"),
    Param("unique_descriptor_tolerance", to_float, 1.0e-10, check=non_negative,
          help="duplicate filter: compared candidates closer than this in every component are one"),
])
