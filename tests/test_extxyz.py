"""Extended XYZ reading: agreement with ASE, QUIP's case-insensitive keys, clear errors."""

import numpy as np
import pytest
from ase.io import read

from gapfit.errors import DataError
from gapfit.data.extxyz import index_xyz, parse_comment, read_frames

from conftest import QUIP_TESTS, TA_XYZ


@pytest.mark.parametrize("path", [QUIP_TESTS / "Si.np1.xyz", QUIP_TESTS / "SiC.np1.xyz", TA_XYZ])
def test_frames_agree_with_ase(path):
    entries, singles = index_xyz(str(path))
    frames = list(read_frames(str(path), entries))
    ref = read(str(path), ":")
    assert len(frames) == len(ref) == len(entries)
    for f, a, e in zip(frames, ref, entries):
        assert np.array_equal(f.numbers, a.numbers)
        assert np.array_equal(f.positions, a.positions)
        assert np.allclose(f.cell, a.cell[:])
        assert list(f.pbc) == list(a.pbc)
        assert e.n_atoms == len(a)
    assert len(singles) == sum(len(a) == 1 for a in ref)


def test_case_insensitive_lookup():
    entries, _ = index_xyz(str(QUIP_TESTS / "Si.np1.xyz"))
    frames = list(read_frames(str(QUIP_TESTS / "Si.np1.xyz"), entries))
    # one frame spells its labels DFT_energy / DFT_force: QUIP finds them as dft_energy / dft_force
    upper = [f for f in frames if "DFT_energy" in f.info]
    assert upper and upper[0].get_info("dft_energy") == upper[0].info["DFT_energy"]
    assert upper[0].get_array("dft_force").shape == (len(upper[0]), 3)


def test_comment_parsing_types():
    d = parse_comment('Lattice="1 0 0 0 1 0 0 0 1" a=1 b=2.5 c="x y" d=T e="T F T" f={1 2 3} g _JSON=1 '
                      'h="_JSON [[1, 2], [3, 4]]" s="1 2 3 4 5 6"')
    assert d["a"] == 1 and d["b"] == 2.5 and d["c"] == "x y" and d["d"] is True
    assert list(d["e"]) == [True, False, True] and list(d["f"]) == [1, 2, 3] and d["g"] is True
    assert np.array_equal(d["h"], [[1, 2], [3, 4]])
    assert d["s"].shape == (6,)  # a 6-component stress is fine (ASE refuses it)


def _write(tmp_path, text, name="bad.xyz"):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


GOOD = ('2\nLattice="5 0 0 0 5 0 0 0 5" Properties=species:S:1:pos:R:3:forces:R:3 energy=-1.0\n'
        "Si 0 0 0 0.1 0 0\nSi 1.5 1.5 1.5 -0.1 0 0\n")


def test_good_file(tmp_path):
    entries, _ = index_xyz(_write(tmp_path, GOOD * 2))
    assert [e.line for e in entries] == [1, 5]


@pytest.mark.parametrize("text,match", [
    (GOOD.replace("2\n", "3\n", 1), "file ends after 2"),
    (GOOD.replace("2\n", "3\n", 1) + GOOD, "expected 7 columns.*atom count 3"),
    (GOOD.replace("0.1 0 0", "0.x 0 0"), "line 3: column 'forces' must be a real number, found '0.x'"),
    (GOOD.replace("Si 1.5", "Qq 1.5"), "unknown element 'Qq'"),
    (GOOD.replace('Lattice="5 0 0 0 5 0 0 0 5" ', ""), "no Lattice"),
    ("two\n" + GOOD, "line 1 .* expected the number of atoms"),
    (GOOD.replace("energy=-1.0", 'energy="-1.0'), "unterminated"),
    (GOOD.replace(":forces:R:3", ":forces:X:3"), "unknown type 'X'"),
])
def test_malformed_frames(tmp_path, text, match):
    with pytest.raises(DataError, match=match):
        index_xyz(_write(tmp_path, text))


def test_missing_and_directory(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        index_xyz(str(tmp_path / "nope.xyz"))
    with pytest.raises(DataError, match="is a directory"):
        index_xyz(str(tmp_path))
    with pytest.raises(DataError, match="contains no frames"):
        index_xyz(_write(tmp_path, "\n\n"))
