"""Bad input: one line on stderr naming the culprit, non-zero exit, no new or clobbered output."""

import shutil

import pytest

from conftest import QUIP_TESTS, TA_XYZ, run_gapfit

GOOD_GAP = "gap={distance_2b cutoff=4.0 covariance_type=ard_se delta=1.0 theta_uniform=0.5 n_sparse=10 sparse_method=uniform}"
SI = ["at_file=Si.xyz", "energy_parameter_name=dft_energy", "force_parameter_name=dft_force",
      "virial_parameter_name=dft_virial", "default_sigma={0.01 1.0 0.5 0.0}", "gp_file=gp.xml",
      "do_copy_at_file=F"]

FRAME = ('2\nLattice="5 0 0 0 5 0 0 0 5" Properties=species:S:1:pos:R:3:forces:R:3 energy=-1.0\n'
         "Si 0 0 0 0.1 0 0\nSi 1.5 1.5 1.5 -0.1 0 0\n")
ISOLATED = ('1\nLattice="20 0 0 0 20 0 0 0 20" Properties=species:S:1:pos:R:3:forces:R:3 energy=-0.5\n'
            "Si 0 0 0 0 0 0\n")
TURBO = ("gap={{soap_turbo l_max=4 {} atom_sigma=0.5 rcut_hard=4.5 n_species=2 species_Z={{{{14 6}}}} "
         "n_sparse=10 delta=1 covariance_type=dot_product zeta=4}}")
TINY = ["at_file=tiny.xyz", "force_parameter_name=forces", "default_sigma={0.01 1.0 0.5 0.0}", "gp_file=gp.xml"]

CASES = {
    "unknown key in gap": (SI + ["gap={distance_2b cutoff=4.0 covariance_type=ard_se delta=1.0 theta_unifrom=0.5 "
                                 "n_sparse=10}"], "theta_unifrom"),
    "misspelt top-level key": (SI + [GOOD_GAP, "sparse_jiter=1e-3"], "sparse_jiter"),
    "missing at_file": ([a.replace("Si.xyz", "nothere.xyz") for a in SI] + [GOOD_GAP], "nothere.xyz"),
    "at_file is a directory": ([a.replace("Si.xyz", "subdir") for a in SI] + [GOOD_GAP], "subdir"),
    "wrong atom count": (TINY + [GOOD_GAP], "atom count"),
    "non-numeric field": (TINY + [GOOD_GAP], "column 'pos'"),
    "NaN force": (TINY + [GOOD_GAP], "force on atom 2"),
    "no energy key": ([a.replace("dft_energy", "dft_enrgy") for a in SI] + [GOOD_GAP], "dft_enrgy"),
    "zero sigma": ([a.replace("{0.01 1.0", "{0.0 1.0") for a in SI] + [GOOD_GAP], "energy σ"),
    "isolated atom missing": (["at_file=Ta.xyz", "default_sigma={0.01 1.0 0.5 0.0}", "gp_file=gp.xml", GOOD_GAP],
                              "isolated"),
    "cutoff <= 0": (SI + [GOOD_GAP.replace("cutoff=4.0", "cutoff=-1.0")], "'cutoff'"),
    "n_sparse <= 0": (SI + [GOOD_GAP.replace("n_sparse=10", "n_sparse=0")], "'n_sparse'"),
    "output directory missing": ([a.replace("gp_file=gp.xml", "gp_file=nodir/gp.xml") for a in SI] + [GOOD_GAP],
                                 "nodir"),
    "output directory not writable": ([a.replace("gp_file=gp.xml", "gp_file=/proc/gapfit-test.xml") for a in SI]
                                      + [GOOD_GAP], "/proc"),
    "no environments": (SI + [GOOD_GAP.replace("n_sparse=10", "n_sparse=10 add_species=F Z1=79 Z2=79")],
                        "found no environments"),
    "default_sigma with 3 numbers": ([a.replace("{0.01 1.0 0.5 0.0}", "{0.01 1.0 0.5}") for a in SI] + [GOOD_GAP],
                                     "the 'default_sigma' key on the command line must be 4 real numbers"),
    "alias in a gap piece": (SI + [GOOD_GAP.replace("theta_uniform=0.5", "theta_uniform=-0.5")],
                             "the 'theta_uniform' key"),
    "unbalanced brace": (SI + ["gap={distance_2b cutoff=4.0"], "unbalanced"),
    "misspelt descriptor": (SI + [GOOD_GAP.replace("distance_2b", "distance_2bb")],
                            "'distance_2bb' is not one; did you mean 'distance_2b'?"),
    "soapp": (SI + ["gap={soapp l_max=4 n_max=4 atom_sigma=0.5 cutoff=4 covariance_type=dot_product zeta=2 "
                    "delta=1 n_sparse=10}"], "did you mean 'soap'?"),
    "gp_file is at_file": ([a.replace("gp_file=gp.xml", "gp_file=./Si.xyz") for a in SI] + [GOOD_GAP],
                           "gp_file './Si.xyz' would overwrite the input at_file 'Si.xyz'"),
    "report_file is at_file": (SI + [GOOD_GAP, "report_file=Si.xyz"],
                               "report_file 'Si.xyz' would overwrite the input at_file 'Si.xyz'"),
    "print_sparse_index is at_file": (SI + [GOOD_GAP.replace("}", " print_sparse_index=Si.xyz}")],
                                      "print_sparse_index 'Si.xyz' of gap descriptor 1 would overwrite the input"),
    "report_file is gp_file": (SI + [GOOD_GAP, "report_file=gp.xml"], "are the same file"),
    "report_file in a missing directory": (SI + [GOOD_GAP, "report_file=nodir/report.json"],
                                           "report_file 'nodir/report.json': directory"),
    "checkpoint_file in a missing directory": (SI + [GOOD_GAP, "checkpoint_file=nodir/fit.ckpt"],
                                               "checkpoint_file 'nodir/fit.ckpt': directory"),
    "print_sparse_index in a missing directory": (SI + [GOOD_GAP.replace("}", " print_sparse_index=nodir/i.txt}")],
                                                  "print_sparse_index 'nodir/i.txt': directory"),
    "descriptor key at the top level": (SI + [GOOD_GAP, "n_sparse=300"],
                                        "'n_sparse' on the command line is a key of one descriptor: put it inside "
                                        "gap={...}"),
    "default_sigma without braces": ([a for a in SI if not a.startswith("default_sigma")]
                                     + ["default_sigma=0.01", "1.0", "0.5", "0.0", GOOD_GAP],
                                     "'1.0' on the command line is not a key: a value with spaces needs braces, "
                                     "e.g. default_sigma={0.01 1.0 0.5 0.0}"),
    # soap_turbo (issue 20): refused before the data are read, naming the key as typed
    "soap_turbo alpha_max for 3 species of 2": (SI + [TURBO.format("alpha_max={{4 4 4}}")],
                                                "the 'alpha_max' key in descriptor"),
    "soap_turbo rcut_soft above rcut_hard": (SI + [TURBO.format("alpha_max={{4 4}} rcut_soft=5.0")],
                                             "the 'rcut_soft' key"),
    "soap_turbo unknown basis": (SI + [TURBO.format("alpha_max={{4 4}} basis=poly3tab")], "the 'basis' key"),
    "soap_turbo compress_mode": (SI + [TURBO.format("alpha_max={{4 4}} compress_mode=fancy")],
                                 "the 'compress_mode' key"),
    "compressed soap K=0 with mixing": (SI + ["gap={soap l_max=4 n_max=4 atom_sigma=0.5 cutoff=4 R_mix=T "
                                              "covariance_type=dot_product zeta=2 delta=1 n_sparse=10}"], "'K' key"),
    "missing test_file": (SI + [GOOD_GAP, "test_file=nothere.xyz"], "test_file 'nothere.xyz' does not exist"),
    "missing test_file under dryrun": (SI + [GOOD_GAP, "test_file=nothere.xyz", "dryrun=T"],
                                       "test_file 'nothere.xyz' does not exist"),
    "a frame with no atoms": (TINY + [GOOD_GAP], "frame 2 (line 4) of tiny.xyz: the frame has no atoms"),
    "two atoms on one spot": (TINY + [GOOD_GAP], "frame 2 (line 4) of tiny.xyz: atom 1 (line 6) and atom 3 "
                                                 "(line 8) (Si, Si) are 0.0000 Å apart, closer than 0.01 Å"),
    "an atom on a periodic image": (TINY + [GOOD_GAP], "frame 2 (line 4) of tiny.xyz: atom 1 (line 6) and atom 3 "
                                                       "(line 8) (Si, Si) are 0.0010 Å apart"),
}

TINY_FILES = {
    "wrong atom count": ISOLATED + FRAME.replace("2\n", "3\n", 1) + FRAME,
    "non-numeric field": ISOLATED + FRAME.replace("1.5 1.5 1.5", "1.5 abc 1.5"),
    "NaN force": ISOLATED + FRAME.replace("-0.1 0 0", "-0.1 0 nan"),
    "two atoms on one spot": ISOLATED + FRAME.replace("2\n", "3\n", 1) + "Si 0 0 0 0 0 0\n",
    "an atom on a periodic image": ISOLATED + FRAME.replace("2\n", "3\n", 1) + "Si 4.999 5 0 0 0 0\n",
    "a frame with no atoms": ISOLATED + "0\nLattice=\"5 0 0 0 5 0 0 0 5\" energy=-1.0 pbc=\"T T T\"\n" + FRAME,
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input(tmp_path, case):
    args, culprit = CASES[case]
    shutil.copy(QUIP_TESTS / "Si.np1.xyz", tmp_path / "Si.xyz")
    shutil.copy(TA_XYZ, tmp_path / "Ta.xyz")
    (tmp_path / "subdir").mkdir()
    (tmp_path / "tiny.xyz").write_text(TINY_FILES.get(case, ISOLATED + FRAME))
    sentinel = b"<existing model: must survive a failed run>\n"
    (tmp_path / "gp.xml").write_bytes(sentinel)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    proc = run_gapfit(args, tmp_path, timeout=120)
    assert proc.returncode != 0, proc.stdout + proc.stderr
    err = proc.stderr.strip()
    assert err.count("\n") == 0, f"stderr is not one line:\n{err}"
    assert err.startswith("gapfit: error:"), err
    assert culprit in err, err
    assert "Traceback" not in proc.stdout + proc.stderr
    if proc.returncode == 2:  # a bad option: refused before the banner, nothing printed
        assert proc.stdout == "", proc.stdout
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before
