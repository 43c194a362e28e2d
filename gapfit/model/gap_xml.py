"""GAP XML models: writing (as gap_fit does) and reading (ours and gap_fit's).

Layout (interface notes §4 and §8): the first line is ``<LABEL>`` (no XML
declaration, which QUIP's loader cannot handle), then ``<Potential>``, then
``<GAP_params>`` with ``<GAP_data>`` (all 118 ``<e0>``), ``<gpSparse>`` with one
``<gpCoordinates>`` per coordinate, ``<command_line>`` and ``<XYZ_data>``.
Sparse points go to ``<gp_file>.sparseX.<LABEL><i>`` files (one ``%.20e`` per
line, point after point) with their MD5 in the XML, or inline.  Every line is
kept under 1024 characters, because QUIP's XML reader corrupts longer lines.

Files are written atomically: every file goes to a temporary name in the target
directory first and is renamed into place only when all of them are complete.
"""

from __future__ import annotations

import datetime
import hashlib
import os
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple
from xml.sax.saxutils import escape

import numpy as np

from ..errors import ModelError
from ..kernels.functions import BOND_REAL_SPACE, DOT_PRODUCT, THETA_KERNELS
from ..options.syntax import key_values
from ..runtime.files import write_files_atomically

# The gap_version we write: at least 1596837814 (QUIP's newest descriptor threshold) and
# not above the QUIP builds we support (quippy 0.10.3 is 1769700636; older builds reject
# larger values).
GAP_VERSION = 1700000000
MAX_LINE = 1000
NUMBERS_PER_LINE = 8


@dataclass
class CoordinateModel:
    """What the XML stores for one gpCoordinates."""

    descriptor: str  # the full gap piece
    covariance_type: int  # QUIP's code: ARD_SE, DOT_PRODUCT or PP (gapfit.kernels.functions)
    delta: float
    f0: float
    sparse_x: np.ndarray  # (M, d)
    alpha: np.ndarray  # (M,)
    sparse_cutoff: np.ndarray  # (M,)
    theta: Optional[np.ndarray] = None
    zeta: Optional[float] = None
    permutations: Optional[np.ndarray] = None  # (n_perm, d), 1-based

    @property
    def dimensions(self) -> int:
        return int(self.sparse_x.shape[1])


@dataclass
class GapModel:
    """A complete GAP model as stored in the XML."""

    label: str
    e0: np.ndarray  # (119,), index = Z
    coordinates: List[CoordinateModel]
    gap_version: int = GAP_VERSION
    fitted: bool = True
    command_line: str = ""
    xyz_lines: Optional[Sequence[str]] = None
    path: str = ""
    core_ip_args: str = ""  # a core potential's QUIP init string (e.g. "IP Glue"), if any
    core_xml: Optional[str] = None  # its parameter file, written into the model verbatim
    #: a calibrated committee member's (k_E, s0_E eV/atom, ν_E, k_F, s0_F eV/Å, ν_F) (gapfit.model.committee)
    committee_scale: Optional[Tuple[float, ...]] = None

    @property
    def has_core(self) -> bool:
        return self.core_xml is not None


def make_label(now: Optional[datetime.datetime] = None) -> str:
    """gap_fit's label GAP_<y>_<m>_<d>_<utc offset min>_<h>_<min>_<s>_<ms>, no zero padding."""
    now = now or datetime.datetime.now().astimezone()
    offset = now.utcoffset()
    off_min = int(offset.total_seconds() // 60) if offset is not None else 0
    return (f"GAP_{now.year}_{now.month}_{now.day}_{off_min}_{now.hour}_{now.minute}_{now.second}_"
            f"{now.microsecond // 1000}")


def _num(x: float) -> str:
    return repr(float(x))


def _wrap_numbers(values, indent: str) -> List[str]:
    text = [_num(v) for v in np.ravel(values)]
    return [indent + " ".join(text[i:i + NUMBERS_PER_LINE]) for i in range(0, len(text), NUMBERS_PER_LINE)]


def _cdata(text: str) -> str:
    return "<![CDATA[" + text.replace("]]>", "]]]]><![CDATA[>") + "]]>"


def _cdata_lines(text: str, indent: str) -> List[str]:
    """A CDATA section split over physical lines < MAX_LINE without changing its text content.

    Breaks sit inside XML comments, which are not part of the character data.
    """
    pieces = [text[i:i + MAX_LINE - 60] for i in range(0, len(text), MAX_LINE - 60)] or [""]
    if len(pieces) == 1:
        return [indent + _cdata(text)]
    out = []
    for k, piece in enumerate(pieces):
        line = (indent if k == 0 else "-->") + _cdata(piece)
        if k < len(pieces) - 1:
            line += "<!--"
        out.append(line)
    return out


def array_file_bytes(values) -> bytes:
    """QUIP's array files (fwrite_array_d): one ``%.20e`` value per line, in the order given."""
    return "".join("%.20e\n" % v for v in np.asarray(values, dtype=float).reshape(-1)).encode("ascii")


def sparse_file_bytes(sparse_x: np.ndarray) -> bytes:
    """The sparseX file: the sparse points one after another (column-major d×M)."""
    return array_file_bytes(sparse_x)


def render(model: GapModel, gp_basename: str, separate_sparse: bool = True):
    """The XML text and the sparseX files (name → bytes) of a model."""
    label = model.label
    lines: List[str] = [f"<{label}>"]
    if model.has_core:
        # as gap_fit: QUIP's Sum of the core and the GAP, the core's parameter file verbatim
        init = f"Sum init_args_pot1={{{model.core_ip_args.strip()}}} init_args_pot2={{IP GAP label={label}}}"
        lines.append(f'<Potential label="{label}" init_args="{escape(init, {chr(34): "&quot;"})}"/>')
        lines.extend(model.core_xml.rstrip("\n").split("\n"))
    else:
        lines.append(f'<Potential label="{label}" init_args="IP GAP label={label}"/>')
    lines += [f'<GAP_params label="{label}" gap_version="{model.gap_version}">',
              f'  <GAP_data do_core="{"T" if model.has_core else "F"}">']
    for z in range(1, 119):
        lines.append(f'    <e0 Z="{z}" value="{_num(model.e0[z])}"/>')
    lines.append("  </GAP_data>")
    lines.append(f'  <gpSparse label="{label}" n_coordinate="{len(model.coordinates)}" '
                 f'fitted="{"T" if model.fitted else "F"}">')
    files = {}
    for i, c in enumerate(model.coordinates, start=1):
        lines.extend(_coordinate_lines(c, f"{label}{i}", gp_basename, separate_sparse, files))
    lines.append("  </gpSparse>")
    if model.command_line:
        lines.append("  <command_line>")
        lines.extend(_cdata_lines(model.command_line, "    "))
        lines.append("  </command_line>")
    if model.xyz_lines is not None:
        lines.append("  <XYZ_data>")
        for text in model.xyz_lines:
            lines.extend(_cdata_lines(text.rstrip("\r\n"), "    "))
        lines.append("  </XYZ_data>")
    if model.committee_scale is not None:  # gapfit's own element: QUIP skips elements it does not know
        k_e, s0_e, nu_e, k_f, s0_f, nu_f = (_num(v) for v in model.committee_scale)
        lines.append(f'  <gapfit_committee energy_scale="{k_e}" energy_floor="{s0_e}" energy_dof="{nu_e}" '
                     f'forces_scale="{k_f}" forces_floor="{s0_f}" forces_dof="{nu_f}"/>')
    lines.append("</GAP_params>")
    lines.append(f"</{label}>")
    for ln in lines:
        if len(ln) >= 1024:
            raise ModelError(f"a line of {len(ln)} characters in the GAP XML (QUIP's reader corrupts lines of 1024 "
                             f"and more): shorten the core potential's parameter file's lines")
    return "\n".join(lines) + "\n", files


def _coordinate_lines(c: CoordinateModel, clabel: str, gp_basename: str, separate_sparse: bool,
                      files: dict) -> List[str]:
    """One <gpCoordinates> element; its sparseX file (name → bytes) goes into ``files``."""
    attrs = [f'label="{clabel}"', f'dimensions="{c.dimensions}"', f'signal_variance="{_num(c.delta)}"',
             f'signal_mean="{_num(c.f0)}"', 'sparsified="T"',
             f'n_permutations="{1 if c.permutations is None else len(c.permutations)}"',
             f'covariance_type="{c.covariance_type}"']
    if c.covariance_type == DOT_PRODUCT:
        attrs.append(f'zeta="{_num(c.zeta)}"')
    attrs.append(f'n_sparseX="{c.sparse_x.shape[0]}"')
    if separate_sparse:
        fname = f"{gp_basename}.sparseX.{clabel}"
        data = sparse_file_bytes(c.sparse_x)
        files[fname] = data
        attrs.append(f'sparseX_filename="{fname}"')
        attrs.append(f'sparseX_md5sum="{hashlib.md5(data).hexdigest()}"')
    lines = _element_lines("    <gpCoordinates", attrs, ">")
    if c.covariance_type in THETA_KERNELS:
        lines.append("      <theta>")
        lines.extend(_wrap_numbers(c.theta, "        "))
        lines.append("      </theta>")
    lines.append("      <descriptor>" + escape(c.descriptor) + "</descriptor>")
    perms = c.permutations if c.permutations is not None else np.arange(1, c.dimensions + 1)[None, :]
    if c.covariance_type in (DOT_PRODUCT, BOND_REAL_SPACE):
        perms = np.array([[1]])
    for p, perm in enumerate(perms, start=1):
        lines.append(f'      <permutation i="{p}">')
        lines.extend(_wrap_numbers_int(perm, "        "))
        lines.append("      </permutation>")
    for s in range(c.sparse_x.shape[0]):
        head = f'      <sparseX i="{s + 1}" alpha="{_num(c.alpha[s])}" sparseCutoff="{_num(c.sparse_cutoff[s])}"'
        if separate_sparse:
            lines.append(head + "/>")
        elif c.dimensions <= 50:
            lines.append(head + ">")
            lines.extend(_wrap_numbers(c.sparse_x[s], "        "))
            lines.append("      </sparseX>")
        else:
            lines.append(head + ' sliced="T">')
            for j in range(0, c.dimensions, 50):
                j_end = min(j + 50, c.dimensions)
                lines.append(f'        <sparseX_slice start="{j + 1}" end="{j_end}">')
                lines.extend(_wrap_numbers(c.sparse_x[s, j:j_end], "          "))
                lines.append("        </sparseX_slice>")
            lines.append("      </sparseX>")
    lines.append("    </gpCoordinates>")
    return lines


def _wrap_numbers_int(values, indent):
    text = [str(int(v)) for v in np.ravel(values)]
    per = 20
    return [indent + " ".join(text[i:i + per]) for i in range(0, len(text), per)]


def _element_lines(start: str, attrs: List[str], end: str) -> List[str]:
    """An element's start tag, attributes wrapped onto continuation lines when long."""
    out, cur = [], start
    for a in attrs:
        if len(cur) + 1 + len(a) > MAX_LINE - 10:
            out.append(cur)
            cur = "        " + a
        else:
            cur += " " + a
    out.append(cur + end)
    return out






def write_model(model: GapModel, gp_file: str, separate_sparse: bool = True) -> List[str]:
    """Write the XML (and sparseX files) atomically; returns the paths written."""
    directory = os.path.dirname(gp_file)
    text, files = render(model, os.path.basename(gp_file), separate_sparse)
    contents = {os.path.join(directory, name): data for name, data in files.items()}
    contents[gp_file] = text.encode("utf-8")
    write_files_atomically(contents)
    return list(contents)


# --------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------

def read_model(path: str) -> GapModel:
    """Read a GAP XML written by gapfit or gap_fit (distance_2b/soap, ARD_SE/dot product)."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise ModelError(f"cannot read GAP model '{path}': {exc.strerror}") from None
    from lxml import etree  # lazy: writing a model needs no XML parser
    try:
        parser = etree.XMLParser(huge_tree=True, remove_comments=True, strip_cdata=False)
        root = etree.fromstring(data, parser=parser)
    except etree.XMLSyntaxError as exc:
        raise ModelError(f"GAP model '{path}' is not well-formed XML: {exc}") from None
    label, core_args, core_xml = _potential_label(root, data, path)
    params = None
    for gp in root.iter("GAP_params"):
        if label is None or gp.get("label") == label:
            params = gp
            break
    if params is None:
        raise ModelError(f"GAP model '{path}' has no <GAP_params> element" + (f" with label {label}" if label else ""))
    label = params.get("label", label or "")
    e0 = np.zeros(119)
    gdata = params.find("GAP_data")
    if gdata is not None:
        if gdata.get("e0") is not None:
            e0[1:] = float(gdata.get("e0"))
        for el in gdata.findall("e0"):
            e0[int(el.get("Z"))] = _float(el.get("value"))
    sparse = params.find("gpSparse")
    if sparse is None:
        raise ModelError(f"GAP model '{path}' has no <gpSparse>")
    base = os.path.dirname(os.path.abspath(path))
    coords = [_coordinate(el, base, path) for el in sparse.findall("gpCoordinates")]
    command_line = params.findtext("command_line", default="") or ""
    committee = params.find("gapfit_committee")
    scale = None if committee is None else tuple(_float(committee.get(key, default)) for key, default in (
        ("energy_scale", "1"), ("energy_floor", "0"), ("energy_dof", "1000"), ("forces_scale", "1"),
        ("forces_floor", "0"), ("forces_dof", "1000")))
    return GapModel(committee_scale=scale, label=label, e0=e0, coordinates=coords, gap_version=int(params.get("gap_version", "0")),
                    fitted=sparse.get("fitted", "T").strip().upper().startswith("T"),
                    command_line=command_line.strip(), path=path, core_ip_args=core_args, core_xml=core_xml)


def _potential_label(root, data: bytes, path: str):
    """(the GAP's label, the core's init string, the core's XML) from the first <Potential>."""
    label, core_args, core_xml = None, "", None
    for pot in root.iter("Potential"):
        args = pot.get("init_args", "")
        if args.split()[:1] == ["Sum"]:  # gap_fit's core + GAP: Sum init_args_pot1={core} init_args_pot2={IP GAP ...}
            parts = _sum_parts(args, path)
            core_args = parts.get("init_args_pot1", "")
            args = parts.get("init_args_pot2", "")
            core_xml = data.decode("utf-8", "replace")  # QUIP gives the core's reader the whole file
        for tok in args.replace("{", " ").replace("}", " ").split():
            if tok.startswith("label="):
                label = tok.split("=", 1)[1]
        break
    return label, core_args, core_xml


def _coordinate(el, base: str, path: str) -> CoordinateModel:
    """One <gpCoordinates>: kernel, sparse points (inline or in their sparseX file), α and cutoffs."""
    d = int(el.get("dimensions"))
    ctype = int(el.get("covariance_type"))
    theta = el.find("theta")
    theta = np.array([_float(t) for t in theta.text.split()]) if theta is not None and theta.text else None
    zeta = el.get("zeta")
    zeta = _float(zeta) if zeta is not None else (float(theta[0]) if ctype == DOT_PRODUCT and theta is not None
                                                  else None)
    alphas, cutoffs, rows = [], [], []
    for sx in el.findall("sparseX"):
        alphas.append(_float(sx.get("alpha")))
        cutoffs.append(_float(sx.get("sparseCutoff", "1.0")))
        if sx.get("sliced", "F").upper().startswith("T"):
            vals = []
            for sl in sx.findall("sparseX_slice"):
                vals.extend(_float(t) for t in (sl.text or "").split())
            rows.append(vals)
        else:
            rows.append([_float(t) for t in (sx.text or "").split()])
    fname = el.get("sparseX_filename")
    if fname:
        sparse_x = _sparse_x_file(os.path.join(base, fname), fname, el.get("sparseX_md5sum"),
                                  int(el.get("n_sparseX", "0")), d, path)
    else:
        sparse_x = np.array(rows, dtype=float).reshape(len(rows), d) if rows else np.zeros((0, d))
    perms = [[int(v) for v in (p.text or "").split()] for p in el.findall("permutation")]
    return CoordinateModel(
        descriptor=el.findtext("descriptor", default=""), covariance_type=ctype,
        delta=_float(el.get("signal_variance")), f0=_float(el.get("signal_mean", "0")), sparse_x=sparse_x,
        alpha=np.array(alphas), sparse_cutoff=np.array(cutoffs), theta=theta, zeta=zeta,
        permutations=np.array(perms) if perms and ctype in THETA_KERNELS else None)


def _sparse_x_file(fpath: str, fname: str, md5, m: int, d: int, path: str) -> np.ndarray:
    """The m×d sparse points of a sparseX file, checked against the MD5 sum the XML gives."""
    try:
        with open(fpath, "rb") as fh:
            raw = fh.read()
    except OSError:
        raise ModelError(f"GAP model '{path}': sparseX file '{fname}' is missing") from None
    if md5 and hashlib.md5(raw).hexdigest() != md5.strip():
        raise ModelError(f"GAP model '{path}': sparseX file '{fname}' does not match its MD5 sum")
    values = np.array([_float(t) for t in raw.decode("ascii", "replace").split()])
    if values.size != m * d:
        raise ModelError(f"GAP model '{path}': sparseX file '{fname}' has {values.size} values, expected {m}x{d}")
    return values.reshape(m, d)


def _sum_parts(args: str, path: str) -> dict:
    """``Sum init_args_pot1={...} init_args_pot2={...}`` → {name: inner text}."""
    parts = {k: (v or "").strip() for k, v in key_values(args, what=f"the Potential init_args of '{path}'")}
    if "init_args_pot1" not in parts or "init_args_pot2" not in parts:
        raise ModelError(f"GAP model '{path}': a Sum potential needs init_args_pot1 and init_args_pot2")
    if not parts["init_args_pot2"].startswith("IP GAP"):
        raise ModelError(f"GAP model '{path}': the second potential of its Sum is not IP GAP")
    return parts


def _float(text) -> float:
    return float(str(text).strip().replace("d", "e").replace("D", "E"))
