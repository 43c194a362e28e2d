"""Extended XYZ reading: a validating index pass and per-frame parsing.

Rank 0 runs :func:`index_xyz` once: one pass over the file that records each
frame's byte offset and line number, parses its comment line and checks every
atom line (column count and types), so that bad input is reported before any
work is distributed.  Each rank then parses only its own frames with
:func:`read_frames`, seeking to their offsets.  No index file is written next to
the user's data.

The comment line follows the extended XYZ conventions (as in ASE's
``key_val_str_to_dict``): ``key=value`` pairs with ``""``, ``''``, ``{}`` or
``[]`` grouping and backslash escapes; numeric values become floats/ints or
arrays, ``T``/``F`` logicals, ``_JSON ...`` JSON.  Keys keep their case; QUIP
looks them up case-insensitively, and so does :meth:`Frame.get_info`.  Unlike
ASE we accept a 6-component (Voigt) ``stress``, as gap_fit does.
"""

from __future__ import annotations

import io
import json
import os
import re
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, Iterator, List, Sequence, Tuple

import numpy as np
from ase.data import atomic_numbers, chemical_symbols

from ..descriptors.neighbours import coincident_atoms
from ..errors import DataError

_DELIMS = {'"': '"', "'": "'", "{": "}", "[": "]"}
_BOOL = {"T": True, "F": False, "true": True, "false": False, "True": True, "False": False,
         "TRUE": True, "FALSE": False}
_FLOAT_RE = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eEdD][+-]?\d+)?$|^[+-]?(nan|inf|infinity)$", re.I)
_INT_RE = re.compile(r"^[+-]?\d+$")


def parse_comment(line: str) -> Dict[str, Any]:
    """Parse an extended XYZ comment line into an ordered dict of typed values."""
    pairs: List[List[List[str]]] = [[[]]]
    delim = None
    escaped = False
    for ch in line.strip():
        if escaped:
            pairs[-1][-1].append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif delim:
            if ch == delim:
                delim = None
            else:
                pairs[-1][-1].append(ch)
        elif ch in _DELIMS:
            delim = _DELIMS[ch]
        elif ch.isspace():
            if pairs[-1] != [[]] and pairs[-1][-1] != []:
                pairs.append([[]])
            elif pairs[-1][-1] == [] and len(pairs[-1]) == 1:
                continue
        elif ch == "=":
            if pairs[-1] == [[]] and len(pairs) > 1:
                pairs.pop()
            pairs[-1].append([])
        else:
            pairs[-1][-1].append(ch)
    if delim:
        raise ValueError(f"unterminated {delim!r} quote")
    out: Dict[str, Any] = {}
    for kv in pairs:
        if not kv or kv == [[]]:
            continue
        key = "".join(kv[0])
        if not key:
            raise ValueError("a value without a key")
        if len(kv) == 1:
            out[key] = True
            continue
        value = "=".join("".join(v) for v in kv[1:])
        out[key] = _convert_value(key, value)
    return out


def _convert_value(key: str, value: str) -> Any:
    if key in ("Properties",):
        return value
    if value.startswith("_JSON "):
        try:
            data = json.loads(value[6:])
        except json.JSONDecodeError as exc:
            raise ValueError(f"key '{key}': invalid JSON ({exc.msg})") from None
        arr = np.array(data)
        return arr if arr.dtype.kind in "ifb" else data
    parts = value.replace(",", " ").split()
    if parts and all(_INT_RE.match(p) for p in parts):
        arr = np.array([int(p) for p in parts])
        return arr[0] if arr.size == 1 else arr
    if parts and all(_FLOAT_RE.match(p) for p in parts):
        arr = np.array([float(p.replace("d", "e").replace("D", "E")) for p in parts])
        return arr[0] if arr.size == 1 else arr
    if parts and all(p in _BOOL for p in parts):
        vals = [_BOOL[p] for p in parts]
        return vals[0] if len(vals) == 1 else np.array(vals)
    return value


@dataclass
class Column:
    name: str
    kind: str  # S, R, I, L
    width: int
    start: int  # first column index in the atom line


def parse_properties(spec: str) -> List[Column]:
    fields = spec.split(":")
    if len(fields) % 3 != 0:
        raise ValueError(f"Properties='{spec}' is not a list of name:type:count triples")
    cols, start = [], 0
    for k in range(0, len(fields), 3):
        name, kind, width = fields[k], fields[k + 1].upper(), fields[k + 2]
        if kind not in ("S", "R", "I", "L"):
            raise ValueError(f"Properties: column '{name}' has unknown type '{fields[k + 1]}' (S, R, I or L)")
        try:
            width = int(width)
        except ValueError:
            raise ValueError(f"Properties: column '{name}' has a non-integer count '{width}'") from None
        if width < 1:
            raise ValueError(f"Properties: column '{name}' has count {width}")
        cols.append(Column(name, kind, width, start))
        start += width
    return cols


def symbol_to_number(symbols: np.ndarray) -> np.ndarray:
    """Atomic numbers from element symbols (case-insensitive, like QUIP) or integers."""
    out = np.empty(len(symbols), dtype=np.int64)
    cache: Dict[str, int] = {}
    for idx, s in enumerate(symbols):
        z = cache.get(s)
        if z is None:
            key = s.capitalize()
            if key in atomic_numbers:
                z = atomic_numbers[key]
            elif _INT_RE.match(s) and 0 < int(s) < len(chemical_symbols):
                z = int(s)
            else:
                raise ValueError(f"unknown element '{s}'")
            cache[s] = z
        out[idx] = z
    return out


@dataclass
class Frame:
    """One configuration: geometry plus every comment-line key and per-atom column.

    ``cell`` rows are the lattice vectors (Å).  ``info`` and ``arrays`` keep the
    file's key names; use :meth:`get_info`/:meth:`get_array` for QUIP's
    case-insensitive lookup.
    """

    numbers: np.ndarray
    positions: np.ndarray
    cell: np.ndarray
    pbc: np.ndarray
    info: Dict[str, Any] = field(default_factory=dict)
    arrays: Dict[str, np.ndarray] = field(default_factory=dict)
    index: int = 0  # 0-based frame number in the source
    line: int = 0  # 1-based line number of the frame's atom-count line
    source: str = ""

    def __len__(self):
        return int(self.numbers.shape[0])

    @property
    def where(self) -> str:
        loc = f"frame {self.index + 1}"
        if self.line:
            loc += f" (line {self.line})"
        if self.source:
            loc += f" of {self.source}"
        return loc

    def get_info(self, name: str, default=None):
        return lookup(self.info, name, default)

    def get_array(self, name: str, default=None):
        return lookup(self.arrays, name, default)

    @property
    def volume(self) -> float:
        return abs(float(np.linalg.det(self.cell)))


def lookup(mapping: Dict[str, Any], name: str, default=None):
    """Case-insensitive key lookup, first match in order (QUIP's Dictionary)."""
    if name in mapping:
        return mapping[name]
    low = name.lower()
    for key, value in mapping.items():
        if key.lower() == low:
            return value
    return default


@dataclass
class FrameIndex:
    """Where a frame is and what its comment line says (from the index pass)."""

    index: int
    offset: int  # byte offset of the atom-count line
    nbytes: int
    line: int
    n_atoms: int
    info: Dict[str, Any]
    numbers: np.ndarray
    array_names: Tuple[str, ...]
    logical_arrays: Dict[str, np.ndarray] = field(default_factory=dict)  # per-atom T/F columns (masks)


def _frame_from_lines(lines: Sequence[str], index: int, line_no: int, source: str) -> Frame:
    """Parse one frame from its text lines (count line, comment line, atom lines)."""
    where = f"frame {index + 1} (line {line_no}) of {source}"
    try:
        n_atoms = int(lines[0].split()[0]) if lines[0].split() else None
    except ValueError:
        n_atoms = None
    if n_atoms is None or len(lines[0].split()) != 1 and not _INT_RE.match(lines[0].split()[0]):
        raise DataError(f"{where}: expected the number of atoms, found {lines[0].strip()[:60]!r}")
    if len(lines) < 2:
        raise DataError(f"{where}: the file ends before the comment line")
    try:
        info = parse_comment(lines[1])
    except ValueError as exc:
        raise DataError(f"{where}: bad comment line: {exc}") from None
    spec = info.pop("Properties", "species:S:1:pos:R:3")
    if not isinstance(spec, str):
        raise DataError(f"{where}: Properties must be a name:type:count list")
    try:
        columns = parse_properties(spec)
    except ValueError as exc:
        raise DataError(f"{where}: {exc}") from None
    n_cols = sum(c.width for c in columns)
    atom_lines = lines[2:2 + n_atoms]
    if len(atom_lines) < n_atoms:
        raise DataError(f"{where}: the header says {n_atoms} atoms but the file ends after {len(atom_lines)}")
    table = []
    for k, text in enumerate(atom_lines):
        parts = text.split()
        if len(parts) != n_cols:
            raise DataError(f"frame {index + 1} of {source}, line {line_no + 2 + k}: expected {n_cols} columns "
                            f"(Properties={spec}), found {len(parts)}; is the atom count {n_atoms} right?")
        table.append(parts)
    table = np.array(table, dtype=object).reshape(n_atoms, n_cols) if n_atoms else np.zeros((0, n_cols), dtype=object)
    arrays: Dict[str, np.ndarray] = {}
    for col in columns:
        raw = table[:, col.start:col.start + col.width]
        try:
            if col.kind == "R":
                values = _to_float_array(raw)
            elif col.kind == "I":
                values = raw.astype(np.int64)
            elif col.kind == "L":
                values = _to_bool_array(raw)
            else:
                values = raw.astype(str)
        except ValueError:
            bad = _first_bad(raw, col.kind)
            raise DataError(f"frame {index + 1} of {source}, line {line_no + 2 + bad[0]}: column '{col.name}' "
                            f"must be {_KIND_NAME[col.kind]}, found {bad[1]!r}") from None
        arrays[col.name] = values[:, 0] if col.width == 1 else values
    numbers = _numbers(arrays, where)
    pos = lookup(arrays, "pos")
    if pos is None or np.ndim(pos) != 2 or pos.shape[1] != 3 or pos.dtype.kind != "f":
        raise DataError(f"{where}: no 'pos:R:3' column in Properties={spec}")
    for name in list(arrays):
        if name.lower() in ("pos", "species", "z"):
            del arrays[name]
    cell = info.pop("Lattice", None)
    pbc_value = info.pop("pbc", None)
    if cell is None:
        raise DataError(f"{where}: no Lattice (gap_fit needs a Lattice in every frame, even for molecules)")
    cell = np.asarray(cell, dtype=float)
    if cell.size != 9:
        raise DataError(f"{where}: Lattice must have 9 numbers, found {cell.size}")
    cell = cell.reshape(3, 3)
    if abs(np.linalg.det(cell)) < 1e-10:
        raise DataError(f"{where}: the Lattice vectors are linearly dependent (zero volume)")
    if pbc_value is None:
        pbc = np.array([True, True, True])
    else:
        pbc = np.atleast_1d(np.asarray(pbc_value))
        if pbc.dtype != bool or pbc.size != 3:
            raise DataError(f"{where}: pbc must be three logicals, e.g. pbc=\"T T T\"")
    if not np.all(np.isfinite(pos)):
        bad = int(np.argwhere(~np.isfinite(pos))[0, 0])
        raise DataError(f"frame {index + 1} of {source}, line {line_no + 2 + bad}: atom position is not finite")
    return Frame(numbers=numbers, positions=np.ascontiguousarray(pos, dtype=float), cell=cell, pbc=pbc.astype(bool),
                 info=info, arrays=arrays, index=index, line=line_no, source=source)


_KIND_NAME = {"R": "a real number", "I": "an integer", "L": "a logical (T or F)", "S": "a string"}


def _to_float_array(raw):
    flat = raw.reshape(-1)
    try:
        return flat.astype(float).reshape(raw.shape)
    except ValueError:
        return np.array([float(v.replace("d", "e").replace("D", "E")) for v in flat]).reshape(raw.shape)


def _to_bool_array(raw):
    flat = raw.reshape(-1)
    out = np.empty(flat.shape, dtype=bool)
    for k, v in enumerate(flat):
        if v not in _BOOL:
            raise ValueError(v)
        out[k] = _BOOL[v]
    return out.reshape(raw.shape)


def _first_bad(raw, kind):
    for r in range(raw.shape[0]):
        for c in range(raw.shape[1]):
            v = raw[r, c]
            try:
                if kind == "R":
                    float(v.replace("d", "e").replace("D", "E"))
                elif kind == "I":
                    int(v)
                elif kind == "L":
                    if v not in _BOOL:
                        raise ValueError
            except ValueError:
                return r, v
    return 0, raw[0, 0] if raw.size else ""


def _numbers(arrays, where):
    species = lookup(arrays, "species")
    if species is not None:
        try:
            return symbol_to_number(np.asarray(species).reshape(-1))
        except ValueError as exc:
            raise DataError(f"{where}: {exc}") from None
    z = lookup(arrays, "Z")
    if z is not None and np.asarray(z).dtype.kind == "i":
        return np.asarray(z, dtype=np.int64).reshape(-1)
    raise DataError(f"{where}: no 'species:S:1' (or 'Z:I:1') column in Properties")


def _iter_frame_blocks(fh, source: str) -> Iterator[Tuple[int, int, int, List[str]]]:
    """Yield (offset, nbytes, line_no, lines) for each frame of a binary file handle."""
    line_no = 0
    offset = fh.tell()
    while True:
        start = offset
        raw = fh.readline()
        if not raw:
            return
        line_no += 1
        offset += len(raw)
        text = raw.decode("utf-8", errors="replace")
        if not text.strip():
            # blank lines between or after frames are tolerated
            continue
        first_line = line_no
        parts = text.split()
        if len(parts) < 1 or not _INT_RE.match(parts[0]) or int(parts[0]) < 0:
            raise DataError(f"line {line_no} of {source}: expected the number of atoms of frame, "
                            f"found {text.strip()[:60]!r}")
        n_atoms = int(parts[0])
        lines = [text]
        for _ in range(n_atoms + 1):
            raw = fh.readline()
            if not raw:
                break
            line_no += 1
            offset += len(raw)
            lines.append(raw.decode("utf-8", errors="replace"))
        yield start, offset - start, first_line, lines


#: Atoms closer than this (Å) are the same atom twice: corrupt data, not a structure.
COINCIDENT_ATOMS = 0.01


def check_atoms_apart(frame: Frame) -> None:
    """Refuse a frame without atoms, and one with two atoms on one spot (closer than COINCIDENT_ATOMS),
    naming them."""
    if len(frame) == 0:
        raise DataError(f"{frame.where}: the frame has no atoms (its first line is 0): remove it")
    pair = coincident_atoms(frame.positions, frame.cell, frame.pbc, COINCIDENT_ATOMS)
    if pair is None:
        return
    i, j, distance = pair

    def atom(k):
        return f"atom {k + 1} (line {frame.line + 2 + k})" if frame.line else f"atom {k + 1}"
    raise DataError(f"{frame.where}: {atom(i)} and {atom(j)} ({chemical_symbols[frame.numbers[i]]}, "
                    f"{chemical_symbols[frame.numbers[j]]}) are {distance:.4f} Å apart, closer than "
                    f"{COINCIDENT_ATOMS} Å (counting periodic images): the same atom twice?")


def _open_xyz(path: str, key: str = "at_file"):
    """``path`` opened for reading, or a DataError naming it (``key``: as the user typed it)."""
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise DataError(f"{key} '{path}' does not exist") from None
    except IsADirectoryError:
        raise DataError(f"{key} '{path}' is a directory, not an extended XYZ file") from None
    except OSError as exc:
        raise DataError(f"{key} '{path}' cannot be read: {exc.strerror}") from None


def check_readable(path: str, key: str = "at_file") -> None:
    """An extended XYZ file that can be opened (the preflight's check of at_file)."""
    _open_xyz(path, key).close()


def index_xyz(path: str, validate=None, key: str = "at_file") -> Tuple[List[FrameIndex], List[Frame]]:
    """Validate every frame of ``path`` and index them.

    Returns the index entries, and (for convenience of e0 detection) the parsed
    single-atom frames.  Raises :class:`DataError` naming the frame and line of
    the first problem.  ``validate(frame)``, if given, is called on every parsed
    frame (to check targets on rank 0 before any work is distributed).
    """
    source = os.path.basename(path)
    entries: List[FrameIndex] = []
    single_atom: List[Frame] = []
    with _open_xyz(path, key) as fh:
        for k, (offset, nbytes, line_no, lines) in enumerate(_iter_frame_blocks(fh, source)):
            frame = _frame_from_lines(lines, k, line_no, source)
            check_atoms_apart(frame)
            if validate is not None:
                validate(frame)
            entries.append(FrameIndex(index=k, offset=offset, nbytes=nbytes, line=line_no, n_atoms=len(frame),
                                      info=frame.info, numbers=frame.numbers,
                                      array_names=tuple(frame.arrays),
                                      logical_arrays={k: v for k, v in frame.arrays.items() if v.dtype == bool}))
            if len(frame) == 1:
                single_atom.append(frame)
    if not entries:
        raise DataError(f"{key} '{path}' contains no frames")
    return entries, single_atom


def read_frames(path: str, entries: Iterable[FrameIndex]) -> Iterator[Frame]:
    """Parse the frames listed in ``entries`` by seeking to their offsets."""
    source = os.path.basename(path)
    with open(path, "rb") as fh:
        for e in entries:
            fh.seek(e.offset)
            data = fh.read(e.nbytes).decode("utf-8", errors="replace")
            lines = data.splitlines(keepends=True)
            yield _frame_from_lines(lines, e.index, e.line, source)


def frame_from_atoms(atoms, index: int = 0) -> Frame:
    """Convert an :class:`ase.Atoms` (with an optional SinglePointCalculator) to a Frame."""
    info = dict(atoms.info)
    arrays = {k: np.asarray(v) for k, v in atoms.arrays.items() if k not in ("numbers", "positions")}
    calc = getattr(atoms, "calc", None)
    results = getattr(calc, "results", {}) if calc is not None else {}
    for key, value in results.items():
        if key in ("forces", "energies", "charges", "magmoms"):
            arrays.setdefault(key, np.asarray(value))
        elif key == "stress":
            info.setdefault("stress", np.asarray(value))
        else:
            info.setdefault(key, value)
    cell = np.asarray(atoms.cell[:], dtype=float)
    if abs(np.linalg.det(cell)) < 1e-10:
        raise DataError(f"frame {index + 1}: the structure has no cell (gap_fit needs a Lattice in every frame; "
                        f"set atoms.cell, e.g. a large box for molecules)")
    return Frame(numbers=np.asarray(atoms.numbers, dtype=np.int64), positions=np.asarray(atoms.positions, dtype=float),
                 cell=cell, pbc=np.asarray(atoms.pbc, dtype=bool), info=info, arrays=arrays, index=index)


class XyzFileSource:
    """Frames from an extended XYZ file: rank 0 indexes, every rank reads its own frames."""

    def __init__(self, path: str, key: str = "at_file"):
        self.path = path
        self.name = path
        self.key = key  # the option that named the file, for error messages

    def index(self, validate=None):
        return index_xyz(self.path, validate, self.key)

    def read(self, entries: Sequence[FrameIndex]) -> Iterator[Frame]:
        return read_frames(self.path, entries)

    def text_lines(self) -> List[str]:
        with open(self.path, "r", encoding="utf-8", errors="replace") as fh:
            return fh.read().splitlines()


class MemorySource:
    """Frames given in memory (ase.Atoms or Frame objects), for the Python API."""

    def __init__(self, structures, name: str = "<in-memory structures>"):
        frames = []
        for k, s in enumerate(structures):
            if isinstance(s, Frame):
                frame = s
                frame.index = k
            else:
                frame = frame_from_atoms(s, k)
            frame.source = name
            frames.append(frame)
        self.frames = frames
        self.name = name
        self._atoms = structures

    def index(self, validate=None):
        entries, singles = [], []
        for f in self.frames:
            check_atoms_apart(f)
            if validate is not None:
                validate(f)
            entries.append(FrameIndex(index=f.index, offset=0, nbytes=0, line=0, n_atoms=len(f), info=f.info,
                                      numbers=f.numbers, array_names=tuple(f.arrays),
                                      logical_arrays={k: v for k, v in f.arrays.items()
                                                      if np.asarray(v).dtype == bool}))
            if len(f) == 1:
                singles.append(f)
        if not entries:
            raise DataError("no structures were given")
        return entries, singles

    def read(self, entries: Sequence[FrameIndex]) -> Iterator[Frame]:
        for e in entries:
            yield self.frames[e.index]

    def text_lines(self) -> List[str]:
        buf = io.StringIO()
        try:
            from ase.io import write  # lazy: ase.io is heavy, and only do_copy_at_file of in-memory frames needs it
            write(buf, list(self._atoms), format="extxyz")
        except Exception:  # Frames that are not Atoms: nothing to copy
            return []
        return buf.getvalue().splitlines()
