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
                                     "default_kernel_regularisation"),
    "unbalanced brace": (SI + ["gap={distance_2b cutoff=4.0"], "unbalanced"),
}

TINY_FILES = {
    "wrong atom count": ISOLATED + FRAME.replace("2\n", "3\n", 1) + FRAME,
    "non-numeric field": ISOLATED + FRAME.replace("1.5 1.5 1.5", "1.5 abc 1.5"),
    "NaN force": ISOLATED + FRAME.replace("-0.1 0 0", "-0.1 0 nan"),
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
    before = sorted(p.name for p in tmp_path.iterdir())
    proc = run_gapfit(args, tmp_path, timeout=120)
    assert proc.returncode != 0, proc.stdout + proc.stderr
    err = proc.stderr.strip()
    assert err.count("\n") == 0, f"stderr is not one line:\n{err}"
    assert err.startswith("gapfit: error:"), err
    assert culprit in err, err
    assert "Traceback" not in proc.stdout + proc.stderr
    assert (tmp_path / "gp.xml").read_bytes() == sentinel
    assert sorted(p.name for p in tmp_path.iterdir()) == before
