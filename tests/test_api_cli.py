"""The Python API (in-memory structures, Python values) and CLI conveniences."""

import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from ase.io import read

from gapfit import ConfigError, GapFit
from gapfit.model.calculator import GapCalculator
from gapfit.model.gap_xml import read_model

from conftest import QUIP_TESTS, mpi_env, run_gapfit

GAP = "distance_2b cutoff=4.0 covariance_type=ard_se delta=1.0 theta_uniform=0.5 n_sparse=12 sparse_method=uniform"
OPTS = ["energy_parameter_name=dft_energy", "force_parameter_name=dft_force", "virial_parameter_name=dft_virial",
        "default_sigma={0.01 1.0 0.5 0.0}", "sparse_jitter=1e-4", "rnd_seed=1"]


def test_api_atoms_equals_cli_file(tmp_path):
    shutil.copy(QUIP_TESTS / "Si.np1.xyz", tmp_path)
    proc = run_gapfit(["at_file=Si.np1.xyz", "gap={" + GAP + "}", "gp_file=cli.xml", *OPTS], tmp_path)
    assert proc.returncode == 0, proc.stderr
    frames = read(str(QUIP_TESTS / "Si.np1.xyz"), ":")
    fit = GapFit(gap=GAP, energy_parameter_name="dft_energy", force_parameter_name="dft_force",
                 virial_parameter_name="dft_virial", default_sigma=[0.01, 1.0, 0.5, 0.0], sparse_jitter=1e-4,
                 rnd_seed=1, quiet=True).fit(frames)
    assert not list(tmp_path.glob("gap_new.xml"))  # the API writes only when asked
    cli = read_model(str(tmp_path / "cli.xml"))
    assert np.allclose(cli.coordinates[0].alpha, fit.alpha_[0], rtol=1e-10, atol=1e-12)
    assert np.array_equal(cli.coordinates[0].sparse_x, fit.sparse_x_[0])
    calc = fit.calculator()
    at = frames[5].copy()
    at.calc = calc
    ref = frames[5].copy()
    ref.calc = GapCalculator(str(tmp_path / "cli.xml"))
    assert at.get_potential_energy() == pytest.approx(ref.get_potential_energy(), rel=1e-12)
    written = fit.write_xml(str(tmp_path / "api.xml"))
    assert str(tmp_path / "api.xml") in written
    assert np.array_equal(read_model(str(tmp_path / "api.xml")).coordinates[0].alpha, fit.alpha_[0])


def test_api_option_string_and_dict():
    text = " ".join(["gap={" + GAP + "}", *OPTS])
    a = GapFit(text, quiet=True).fit(str(QUIP_TESTS / "Si.np1.xyz"))
    b = GapFit({"gap": GAP, "energy_parameter_name": "dft_energy", "force_parameter_name": "dft_force",
                "virial_parameter_name": "dft_virial", "default_sigma": [0.01, 1.0, 0.5, 0.0],
                "sparse_jitter": 1e-4, "rnd_seed": 1}, quiet=True).fit(str(QUIP_TESTS / "Si.np1.xyz"))
    assert np.array_equal(a.alpha_[0], b.alpha_[0])


def test_config_file_run(tmp_path):
    shutil.copy(QUIP_TESTS / "Si.np1.xyz", tmp_path)
    (tmp_path / "fit.cfg").write_text("# Si two-body fit\nat_file=Si.np1.xyz\n"
                                      "gap={" + GAP + "}  # one descriptor\n" + "\n".join(OPTS) + "\ngp_file=cfg.xml\n")
    proc = run_gapfit(["config_file=fit.cfg"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    model = read_model(str(tmp_path / "cfg.xml"))
    assert "#" not in model.command_line and "at_file=Si.np1.xyz" in model.command_line


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "gapfit", *args], capture_output=True, text=True, env=mpi_env())


def _help_entries(text):
    """{key names line: description} of a help text's key entries."""
    entries, key = {}, None
    for line in text.splitlines():
        if line.startswith("  ") and not line.startswith("   ") and " = " in line:
            key = line.strip()
            entries[key] = ""
        elif line.startswith("      ") and key:
            entries[key] += line.strip() + " "
    return entries


def test_help_lists_every_key_with_a_description():
    from gapfit.descriptors import REGISTRY, descriptor_class
    from gapfit.options.gp import GP_KEYS, SPARSE_METHODS
    from gapfit.options.top_level import TOP_LEVEL
    out = _cli("--help")
    assert out.returncode == 0
    entries = _help_entries(out.stdout)
    for p in TOP_LEVEL.params + GP_KEYS.params:
        line = next((k for k in entries if k.startswith(" / ".join(p.names) + " = ")), None)
        assert line is not None, p.name
        assert len(entries[line].split()) >= 3, (p.name, entries[line])
    assert "default_kernel_regularisation / default_sigma = mandatory" in out.stdout
    assert "energies (eV), forces (eV/Å), virials (eV)" in out.stdout
    for method in SPARSE_METHODS:
        assert f"\n  {method} " in out.stdout
    for name in REGISTRY:
        out = _cli("--help", name)
        assert out.returncode == 0, out.stderr
        entries = _help_entries(out.stdout)
        cls = descriptor_class(name)
        for p in cls.schema.params:
            if p.name == name:
                continue
            line = next((k for k in entries if k.startswith(" / ".join(p.names) + " = ")), None)
            assert line is not None and entries[line].strip(), (name, p.name)
        assert f"Sparse methods for {name}:" in out.stdout
        for method in cls.sparse_methods:
            assert f"\n  {method} " in out.stdout
    assert "uniform" not in _cli("--help", "soap").stdout.split("Sparse methods for soap:")[1]
    assert "uniform" in _cli("--help", "distance_2b").stdout.split("Sparse methods for distance_2b:")[1]
    out = _cli("--help", "soap")
    assert "l_max = mandatory" in out.stdout and "cutoff radius (Å)" in out.stdout


def test_help_topics_and_version():
    out = _cli("--help", "theta_uniform")
    assert out.returncode == 0 and "lengthscale_uniform / theta_uniform = 0.0" in out.stdout
    out = _cli("--help", "cur_points")
    assert out.returncode == 0 and "sparse_method=cur_points: CUR" in out.stdout
    out = _cli("--help", "soapp")
    assert out.returncode == 2 and "did you mean 'soap'?" in out.stderr and out.stdout == ""
    out = _cli()
    assert out.returncode == 2 and "mandatory" in out.stderr
    out = _cli("--version")
    assert out.returncode == 0 and out.stdout.startswith("gapfit ")


def test_unused_targets_are_warned_about(tmp_path):
    """ASE writes 'forces'; gap_fit's default force_parameter_name is 'force': stop and say so, or with
    allow_unfitted_targets=T go on as gap_fit does, saying so in a warning and in the end-of-run summary."""
    frames = [f for f in read(str(QUIP_TESTS / "Si.np1.xyz"), ":") if "dft_energy" in f.info and "dft_force" in f.arrays]
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.io import write
    for atoms in frames:
        atoms.calc = SinglePointCalculator(atoms, energy=atoms.info.pop("dft_energy"),
                                           forces=atoms.arrays.pop("dft_force"))
        atoms.info.pop("dft_virial", None)
    write(str(tmp_path / "ase.xyz"), frames, format="extxyz")
    gap = "gap={" + GAP + "}"
    proc = run_gapfit(["at_file=ase.xyz", gap, "default_sigma={0.01 1.0 0.5 0.0}", "gp_file=gp.xml",
                       "sparse_jitter=1e-4", "e0_method=average"], tmp_path)
    assert proc.returncode == 1 and not (tmp_path / "gp.xml").exists(), proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and proc.stderr.strip().endswith(
        "their forces would not be fitted; set force_parameter_name=forces to fit them, or "
        "allow_unfitted_targets=T to fit without them (as gap_fit would)"), proc.stderr
    proc = run_gapfit(["at_file=ase.xyz", gap, "default_sigma={0.01 1.0 0.5 0.0}", "gp_file=gp.xml",
                       "sparse_jitter=1e-4", "e0_method=average", "allow_unfitted_targets=T"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    summary = proc.stdout.split("== Not fitted or evaluated")[1]
    assert "their forces are not fitted; set force_parameter_name=forces" in summary, summary
    warning = next(line for line in proc.stderr.splitlines() if "'force'" in line)
    assert warning.startswith(f"gapfit: warning: {len(frames)} of {len(frames)} frames carry the per-atom array "
                              f"'forces' (also: 'gap_forces', "), warning
    assert warning.endswith("but no 'force' (force_parameter_name=force, gap_fit default): their forces are not "
                            "fitted; set force_parameter_name=forces to fit them"), warning
    # named as the user typed it, and silent once the option is right
    proc = run_gapfit(["at_file=ase.xyz", gap, "default_sigma={0.01 1.0 0.5 0.0}", "gp_file=gp.xml",
                       "sparse_jitter=1e-4", "e0_method=average", "energy_parameter_name=dft_energy",
                       "force_parameter_name=forces"], tmp_path)
    assert proc.returncode != 0 and "no frame has the energy key 'dft_energy'" in proc.stderr  # an error, as before
    proc = run_gapfit(["at_file=ase.xyz", gap, "default_sigma={0.01 1.0 0.5 0.0}", "gp_file=gp.xml",
                       "sparse_jitter=1e-4", "e0_method=average", "force_parameter_name=forces"], tmp_path)
    assert proc.returncode == 0 and "'forces'" not in proc.stderr, proc.stderr
    assert "set virial_parameter_name=gap_virial" in proc.stderr  # Si.np1 carries gap_fit's predictions too


def test_unused_energy_and_stress_keys(tmp_path):
    from gapfit.config.targets import TargetNames
    from gapfit.data.targets import unused_target_warnings
    from gapfit.data.extxyz import FrameIndex
    from gapfit.options.top_level import parse_top_level

    def entry(info, arrays=()):
        return FrameIndex(index=0, offset=0, nbytes=0, line=1, n_atoms=2, info=info, numbers=np.zeros(2, int),
                          array_names=tuple(arrays))
    opts = parse_top_level(["at_file=x", "gap={distance_2b}", "default_sigma={1 1 1 1}",
                            "energy_parameter_name=dft_energy"])
    names = TargetNames.from_options(opts.values)
    entries = [entry({"energy": 1.0, "stress": np.zeros(6)}, ["forces"]), entry({"dft_energy": 1.0, "virial": 0})]
    found = [text for _, _, text in unused_target_warnings(
        entries, names, lambda kind: (opts.key(f"{kind}_parameter_name"), opts.has(f"{kind}_parameter_name")))]
    assert found[0].startswith("1 of 2 frames carry the key 'energy' but no 'dft_energy' "
                               "(energy_parameter_name=dft_energy): ")
    assert "set force_parameter_name=forces" in found[1]
    assert len(found) == 2  # the first frame's stress is used: virial_parameter_name's fallback


def test_export_covariance_and_condition_number(tmp_path):
    shutil.copy(QUIP_TESTS / "Si.np1.xyz", tmp_path)
    proc = run_gapfit(["at_file=Si.np1.xyz", "gap={" + GAP + "}", "gp_file=gp.xml", "export_covariance=T",
                       "condition_number_norm=I", *OPTS], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "Condition number (log10)" in proc.stdout
    r_file = list(tmp_path.glob("gp.xml.R.*"))
    assert len(r_file) == 1
    r = np.loadtxt(r_file[0]).reshape(12, 12, order="F")
    assert np.allclose(np.tril(r, -1), 0) and np.all(np.diag(r) != 0)


def test_large_frames_in_pieces_give_the_same_model(monkeypatch):
    """A frame bigger than the chunk budget is processed centre-atom group by group."""
    from gapfit.solve import rows
    kw = dict(gap=[GAP, "soap l_max=3 n_max=4 atom_sigma=0.5 cutoff=3.5 covariance_type=dot_product delta=0.5 "
                        "zeta=2 n_sparse=20 sparse_method=cur_points"],
              energy_parameter_name="dft_energy", force_parameter_name="dft_force",
              virial_parameter_name="dft_virial", default_sigma=[0.01, 1, 0.5, 0], sparse_jitter=1e-5, rnd_seed=3,
              quiet=True)
    whole = GapFit(**kw).fit(str(QUIP_TESTS / "SiC.np1.xyz"))
    monkeypatch.setattr(rows, "CHUNK_BYTES", 200_000)  # every 64-atom frame is split
    pieces = GapFit(**kw).fit(str(QUIP_TESTS / "SiC.np1.xyz"))
    for a, b in zip(whole.alpha_, pieces.alpha_):
        assert np.abs(a - b).max() <= 1e-8 * np.abs(a).max()


def test_dryrun_estimates_memory_and_writes_nothing(tmp_path):
    shutil.copy(QUIP_TESTS / "SiC.np1.xyz", tmp_path)
    proc = run_gapfit(["at_file=SiC.np1.xyz", "gap={" + GAP + " : soap l_max=3 n_max=4 atom_sigma=0.5 cutoff=3.5 "
                       "covariance_type=dot_product delta=0.5 zeta=2 n_sparse=20 sparse_method=cur_points}",
                       "gp_file=gp.xml", "dryrun=T", *OPTS], tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "Memory estimate" in out and "descriptor gradients of the whole data set" in out
    assert "smallest P for the dense path on this machine: 1" in out  # both paths' memory (issue 9)
    assert "the streaming path fits this machine on one process" in out
    assert not list(tmp_path.glob("gp.xml*"))
    # the instances it counts are those the fit then chooses from (pairs for distance_2b, not atoms)
    table = out.split("coordinate  descriptor")[1].split("  A: ")[0]
    counted = [int(line.split()[3]) for line in table.splitlines()[2:] if line.strip()[:1].isdigit()]
    proc = run_gapfit(["at_file=SiC.np1.xyz", "gap={" + GAP + " : soap l_max=3 n_max=4 atom_sigma=0.5 cutoff=3.5 "
                       "covariance_type=dot_product delta=0.5 zeta=2 n_sparse=20 sparse_method=cur_points}",
                       "gp_file=gp.xml", "sparsify_only_no_fit=T", *OPTS], tmp_path)
    assert proc.returncode == 0, proc.stderr
    chosen = [int(w.split()[-2]) for w in re.findall(r"sparse points \(\w+\) from \d+ instances", proc.stdout)]
    assert counted == chosen and len(chosen) >= 3, (counted, chosen)


@pytest.mark.parametrize("ranks, solver", [(None, "dense"), (None, "streaming"), (2, "streaming")])
def test_dryrun_estimates_the_wall_time(tmp_path, ranks, solver):
    """dryrun=T times the fit's own code on a sample (gapfit.fit.dryrun_time) and prints each phase once
    (rank 0), with a total that is their sum; nothing is written.  How good the prediction is is a
    benchmark's question (benchmarks/dryrun_prediction.py), not a test's."""
    shutil.copy(QUIP_TESTS / "SiC.np1.xyz", tmp_path)
    proc = run_gapfit(["at_file=SiC.np1.xyz", "gap={" + GAP + " : soap l_max=3 n_max=4 atom_sigma=0.5 cutoff=3.5 "
                       "covariance_type=dot_product delta=0.5 zeta=2 n_sparse=20 sparse_method=cur_points}",
                       "gp_file=gp.xml", "dryrun=T", f"linear_solver={solver}", *OPTS], tmp_path, mpi_ranks=ranks,
                      training_errors=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("Wall time estimate (dryrun=T)") == 1
    block = proc.stdout.split("Wall time estimate (dryrun=T)")[1]
    phases = ["sparse points", "descriptors and K_NM rows",
              "fold into the (M+1)² factor" if solver == "streaming" else "dense QR", "training errors"]
    seconds = []
    for phase in phases:
        line = next(line for line in block.splitlines() if line.strip().startswith(phase))
        seconds.append(float(line.strip()[len(phase):].split()[0]))
    assert all(s > 0 for s in seconds), seconds
    total = float(re.search(r"total about ([0-9.e+-]+) s", block).group(1))
    assert total == pytest.approx(sum(seconds), rel=0.02)
    assert f"on {ranks or 1} rank(s)" in block
    assert not list(tmp_path.glob("gp.xml*"))


@pytest.mark.parametrize("umask", [0o077, 0o022])
def test_written_files_keep_the_users_umask(tmp_path, umask):
    """Issue 19: the model and its sparseX files get the mode open() would give them (0600 under umask
    077, 0644 under 022), not a forced 0644."""
    import os
    import stat
    frames = read(str(QUIP_TESTS / "Si.np1.xyz"), ":")
    old = os.umask(umask)
    try:
        GapFit(gap=GAP, energy_parameter_name="dft_energy", force_parameter_name="dft_force",
               virial_parameter_name="dft_virial", default_sigma=[0.01, 1.0, 0.5, 0.0], sparse_jitter=1e-4,
               rnd_seed=1, gp_file=str(tmp_path / "gp.xml"), report_file=str(tmp_path / "report.json"),
               quiet=True).fit(frames)
    finally:
        os.umask(old)
    written = sorted(tmp_path.iterdir())
    assert len(written) >= 3  # the XML, a sparseX file, the report
    for path in written:
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, (path.name, oct(path.stat().st_mode))


@pytest.mark.parametrize("keywords, message", [
    ({"default_sigmaa": [0.01, 1, 0.5, 0]}, "unknown keyword 'default_sigmaa' for GapFit; did you mean 'default_sigma'?"),
    ({"n_sparce": 30}, "unknown keyword 'n_sparce' for GapFit; did you mean 'n_sparse' (a key of one descriptor: "
                       "inside gap)?"),
    ({"n_sparse": 30}, "'n_sparse' is a key of one descriptor, not a keyword of GapFit: put it inside gap"),
])
def test_api_refuses_unknown_keywords_when_made(keywords, message):
    """Before any data are read, in the API's words (not 'on the command line')."""
    from gapfit import GapFit
    with pytest.raises(ConfigError) as err:
        GapFit(at_file="nothere.xyz", **keywords)
    assert str(err.value).startswith(message), str(err.value)

