"""gap_fit's option syntax: tokenising, aliases, defaults, config_file, strictness."""

import pytest

from gapfit.errors import ConfigError
from gapfit.options.top_level import TOP_LEVEL, parse_top_level
from gapfit.config.gaps import expand_species, parse_gap_piece
from gapfit.options.syntax import join_argv, key_values, split_fields, split_gap_string, strip_comments

BASE = ["at_file=x.xyz", "default_sigma={0.01 1.0 0.5 0.0}",
        "gap={distance_2b cutoff=4.0 covariance_type=ard_se delta=1.0 theta_uniform=1.0 n_sparse=10}"]


def test_join_argv_quotes_words_with_spaces():
    assert join_argv(["a=b c", "gap={x y}", "d"]) == 'a="b c" gap={x y} d'
    assert join_argv(["plain phrase"]) == '"plain phrase"'
    assert join_argv(["gap={x\n y}"]) == "gap={x  y}"  # a quoted shell value spanning lines


def test_split_fields_groups_and_separators():
    assert split_fields("a=1, b = 2 c={x {y} z} d='p q' e") == ["a=1", "b=2", "c=x {y} z", "d=p q", "e"]
    with pytest.raises(ConfigError, match="unbalanced"):
        split_fields("a={b c")


def test_key_values_bare_key():
    assert key_values("do_copy_at_file x=1") == [("do_copy_at_file", None), ("x", "1")]


def test_defaults_aliases_and_last_occurrence_wins():
    o = parse_top_level(BASE + ["gap_file=a.xml", "gp_file=b.xml", "sparse_jitter=1e-3", "sparse_jitter=2e-3"])
    assert o["gp_file"] == "b.xml" and o["gap_file"] == "b.xml"
    assert o["sparse_jitter"] == 2e-3
    assert o["default_sigma"] == [0.01, 1.0, 0.5, 0.0]
    assert o["e0_method"] == "isolated" and o["sparse_separate_file"] is True
    assert o["mpi_blocksize_cols"] == 32 and o["rnd_seed"] == -1  # gap_fit: 100 (speed only)
    assert o.has("gp_file") and not o.has("e0")


@pytest.mark.parametrize("text,value", [("T", True), ("true", True), ("F", False), ("FALSE", False), (None, True)])
def test_logicals(text, value):
    arg = "do_copy_at_file" if text is None else f"do_copy_at_file={text}"
    assert parse_top_level(BASE + [arg])["do_copy_at_file"] is value


@pytest.mark.parametrize("arg,match", [
    ("do_copy_at_file=1", "logical"),
    ("default_sigma={0.01 1.0 0.5}", "4 real numbers"),
    ("sparse_jitter=abc", "real number"),
    ("rnd_seed=1.5", "integer"),
    ("verbosity=verbose", "NORMAL"),
    ("e0_method=median", "isolated, average"),
    ("mpi_blocksize_rows=-1", "0 or greater"),
])
def test_invalid_values(arg, match):
    with pytest.raises(ConfigError, match=match):
        parse_top_level(BASE + [arg])


def test_unknown_key_suggests():
    with pytest.raises(ConfigError, match="unknown key 'sparse_jiter'.*did you mean 'sparse_jitter'"):
        parse_top_level(BASE + ["sparse_jiter=1e-3"])


def test_missing_mandatory():
    with pytest.raises(ConfigError, match="missing mandatory key 'default_kernel_regularisation'"):
        parse_top_level(BASE[:1] + BASE[2:])


def test_config_file_with_comments(tmp_path):
    cfg = tmp_path / "fit.cfg"
    cfg.write_text("# a comment line\nat_file=x.xyz   # trailing comment\n"
                   "gap={distance_2b cutoff=4.0 covariance_type=ard_se delta=1.0\n theta_uniform=1.0 n_sparse=10}\n"
                   "default_sigma={0.01 1.0 0.5 0.0}\n")
    o = parse_top_level([f"config_file={cfg}", "gp_file=override.xml"])
    assert o["at_file"] == "x.xyz"
    assert o["gp_file"] == "override.xml"
    assert "theta_uniform=1.0" in o.gap_pieces[0]
    assert "#" not in o.option_string


def test_config_file_missing(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        parse_top_level([f"config_file={tmp_path / 'nope.cfg'}"])


def test_strip_comments_keeps_quoted_hash():
    assert strip_comments("a='x # y' # gone\nb=1") == "a='x # y' \nb=1"


def test_gap_split():
    assert split_gap_string("A : B") == ["A", " B"]
    assert split_gap_string("{A}:{B}") == ["A", "B"]
    assert split_gap_string("soap n_species=2 species_Z={14 6} Z=14") == ["soap n_species=2 species_Z={14 6} Z=14"]


@pytest.mark.parametrize("value, pieces", [
    # what gap_fit 0.10.3 accepts (checked with its binary): a trailing separator (the TurboGAP school's
    # templates end with ': }'), a run of separators, a separator at the very start
    ("A : B : ", ["A", " B"]), ("A ; ", ["A"]), ("A ::B", ["A", "B"]), ("A :;B", ["A", "B"]), ("A :: ", ["A"]),
    ("::A", ["A"]),
])
def test_gap_split_blank_pieces_as_gap_fit(value, pieces):
    assert split_gap_string(value) == pieces


@pytest.mark.parametrize("value, number", [("A : : ", 2), (" : A : ", 1), (" :A", 1), ("A: :A", 2)])
def test_gap_split_refuses_blank_pieces_gap_fit_refuses(value, number):
    # gap_fit 0.10.3: "failed to parse gap string (number)=''"
    with pytest.raises(ConfigError, match=rf"descriptor {number} of gap=\{{.*\}} is empty"):
        split_gap_string(value)


def test_gap_split_refuses_a_blank_gap():
    with pytest.raises(ConfigError, match="names no descriptor"):
        split_gap_string(" ")


def test_gap_piece_unknown_key_and_suggestion():
    with pytest.raises(ConfigError, match=r"unknown key 'theta_unifrom' in gap descriptor 1 \(distance_2b\).*theta_uniform"):
        parse_gap_piece("distance_2b cutoff=4 covariance_type=ard_se delta=1 theta_unifrom=1 n_sparse=5", 1)


@pytest.mark.parametrize("piece,match", [
    ("distance_2b cutoff=4 covariance_type=ard_se delta=1 n_sparse=5", "exactly one of theta_file"),
    ("distance_2b cutoff=4 covariance_type=ard_se delta=1 theta_uniform=1 zeta=2 n_sparse=5", "exactly one"),
    ("distance_2b cutoff=4 covariance_type=ard_se delta=1 theta_uniform=1 n_sparse=0", "n_sparse"),
    ("distance_2b cutoff=4 covariance_type=ard_se delta=1 theta_uniform=1", "n_sparse"),
    ("distance_2b cutoff=4 covariance_type=ard_se theta_uniform=1 n_sparse=5", "missing mandatory key 'energy_scale'"),
    ("distance_2b cutoff=4 covariance_type=linear delta=1 theta_uniform=1 n_sparse=5", "covariance_type"),
    ("distance_2b cutoff=4 covariance_type=ard_se delta=1 theta_uniform=1 n_sparse=5 sparse_method=uniq", "none"),
    ("distance_2b cutoff=4 covariance_type=ard_se delta=1 theta_uniform=1 n_sparse=5 sparse_file=f", "sparse_file"),
    ("bispectrum_so4 cutoff=4 covariance_type=ard_se delta=1 theta_uniform=1 n_sparse=5", "not implemented"),
    ("cutoff=4 covariance_type=ard_se delta=1 theta_uniform=1 n_sparse=5", "no descriptor type"),
])
def test_gap_piece_errors(piece, match):
    with pytest.raises(ConfigError, match=match):
        parse_gap_piece(piece, 1).make_descriptor()


def test_descriptor_value_errors():
    spec = parse_gap_piece("distance_2b cutoff=0 covariance_type=ard_se delta=1 theta_uniform=1 n_sparse=5", 1)
    with pytest.raises(ConfigError, match="'cutoff' key .* greater than 0"):
        spec.make_descriptor()


def test_add_species_expansion_distance_2b():
    spec = parse_gap_piece("distance_2b cutoff=4 covariance_type=ard_se delta=1 theta_uniform=1 n_sparse=5", 1)
    out = expand_species([spec], [14, 6])
    assert [s.piece.split()[-2:] for s in out] == [["Z1=14", "Z2=14"], ["Z1=14", "Z2=6"], ["Z1=6", "Z2=6"]]
    assert all(s.gp["n_sparse"] == 5 for s in out)


def test_add_species_false_keeps_piece():
    spec = parse_gap_piece("distance_2b cutoff=4 covariance_type=ard_se delta=1 theta_uniform=1 n_sparse=5 "
                           "add_species=F Z1=14 Z2=6", 1)
    out = expand_species([spec], [14, 6])
    assert len(out) == 1 and out[0].piece == spec.piece


def test_every_top_level_option_registered():
    expected = {"config_file", "atoms_filename", "at_file", "gap", "e0", "local_property0", "e0_offset", "e0_method",
                "default_kernel_regularisation", "default_sigma", "default_kernel_regularisation_local_property",
                "default_local_property_sigma", "sparse_jitter", "hessian_displacement", "hessian_delta",
                "baseline_param_filename", "core_param_file", "baseline_ip_args", "core_ip_args",
                "energy_parameter_name", "local_property_parameter_name", "force_parameter_name",
                "virial_parameter_name", "stress_parameter_name", "hessian_parameter_name",
                "config_type_parameter_name", "kernel_regularisation_parameter_name", "sigma_parameter_name",
                "force_mask_parameter_name", "local_property_mask_parameter_name", "parameter_name_prefix",
                "config_type_kernel_regularisation", "config_type_sigma", "kernel_regularisation_is_per_atom",
                "sigma_per_atom", "do_copy_atoms_file", "do_copy_at_file", "sparse_separate_file",
                "sparse_use_actual_gpcov", "gap_file", "gp_file", "verbosity", "rnd_seed", "openmp_chunk_size",
                "do_ip_timing", "template_file", "sparsify_only_no_fit", "dryrun", "condition_number_norm",
                "linear_system_dump_file", "mpi_blocksize_rows", "mpi_blocksize_cols", "mpi_print_all",
                "export_covariance", "mpi_candidate_order", "report_file", "progress_interval", "linear_solver", "checkpoint_file",
                "checkpoint_interval", "extend_checkpoint", "row_chunk_mb", "training_errors", "training_errors_atoms", "test_file",
                "allow_unfitted_targets"}
    assert expected == set(TOP_LEVEL.names())
