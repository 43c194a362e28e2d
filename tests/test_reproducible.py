"""A model is reproducible from its own file (issue 18): a fit without rnd_seed draws a seed, writes
it into the XML's <command_line> and report_file, and the command line stored in the XML fits the
same model again, α bit for bit."""

import json
import re
import shutil

import numpy as np
import pytest

from gapfit.model.gap_xml import read_model

from conftest import QUIP_TESTS, run_gapfit

# uniform's random fill and cur_points both draw from the seed; 15 of ~300 soap candidates
GAP = ("{distance_2b cutoff=4.0 covariance_type=ard_se delta=1.0 theta_uniform=0.5 n_sparse=12 sparse_method=uniform"
       " : soap l_max=3 n_max=4 atom_sigma=0.5 cutoff=4.0 covariance_type=dot_product zeta=2 delta=0.2 n_sparse=15"
       " sparse_method=cur_points}")
OPTS = ["energy_parameter_name=dft_energy", "force_parameter_name=dft_force", "virial_parameter_name=dft_virial",
        "default_sigma={0.01 1.0 0.5 0.0}", "sparse_jitter=1e-6", "do_copy_at_file=F"]


def _alpha(path):
    return np.concatenate([c.alpha for c in read_model(str(path)).coordinates])


@pytest.mark.parametrize("ranks", [None, 2])
def test_the_command_line_in_the_xml_refits_the_same_model(tmp_path, ranks):
    first, again = tmp_path / "first", tmp_path / "again"
    for folder in (first, again):
        folder.mkdir()
        shutil.copy(QUIP_TESTS / "Si.np1.xyz", folder)
    proc = run_gapfit(["at_file=Si.np1.xyz", "gap=" + GAP, "gp_file=gp.xml", "report_file=report.json", *OPTS],
                      first, mpi_ranks=ranks)
    assert proc.returncode == 0, proc.stderr
    seed = int(re.search(r"Random seed = (\d+) \(drawn", proc.stdout).group(1))
    command_line = read_model(str(first / "gp.xml")).command_line
    assert command_line.endswith(f" rnd_seed={seed}"), command_line
    assert json.loads((first / "report.json").read_text())["rnd_seed"] == seed
    # the stored command line, as gap_fit's config_file, in a folder holding the same data
    (again / "command_line.txt").write_text(command_line + "\n")
    proc = run_gapfit(["config_file=command_line.txt"], again, mpi_ranks=ranks)
    assert proc.returncode == 0, proc.stderr
    assert f"Random seed = {seed}\n" in proc.stdout  # given now, not drawn
    a, b = _alpha(first / "gp.xml"), _alpha(again / "gp.xml")
    assert a.size == 27 and np.array_equal(a, b)
    for ca, cb in zip(read_model(str(first / "gp.xml")).coordinates, read_model(str(again / "gp.xml")).coordinates):
        assert np.array_equal(ca.sparse_x, cb.sparse_x)
