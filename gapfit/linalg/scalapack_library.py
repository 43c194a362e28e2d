"""Finding and loading the ScaLAPACK library that matches this process's MPI (ctypes; no scalapy).

Split from :mod:`gapfit.linalg.scalapack`, which holds the solve itself.  The library is
chosen by ``$GAPFIT_SCALAPACK_LIB``, or next to the loaded libmpi (system MPI), or from the
``mkl`` wheel (MPI from pip); a ScaLAPACK that would pull in a second libmpi is refused.
"""

from __future__ import annotations

import ctypes
import glob
import os
import re
import sys
import threading
from ctypes import POINTER, byref, c_char_p, c_int, c_size_t, c_void_p

from ..errors import GapfitError, NumericalError

ENV_OVERRIDE = "GAPFIT_SCALAPACK_LIB"

# --------------------------------------------------------------------------------------------
# Exceptions


class ScalapackLoadError(GapfitError):
    """No usable ScaLAPACK library for the MPI library in use (the message says what to install)."""


class ScalapackError(NumericalError):
    """A ScaLAPACK routine returned ``info != 0``, or the factorisation is singular."""

    def __init__(self, message, routine=None, info=None):
        super().__init__(message)
        self.routine = routine
        self.info = info


class ScalapackSizeError(GapfitError, OverflowError):
    """A size, index or workspace does not fit ScaLAPACK's 32-bit integers."""


# --------------------------------------------------------------------------------------------
# Loading the library

_RTLD = getattr(os, "RTLD_LAZY", 1) | getattr(os, "RTLD_GLOBAL", 0x100)
_MPI_LIB_RE = re.compile(r"/lib(mpi|mpich)\.so[.0-9]*$")
_MKL_ORDER = ("libmkl_core.so.*", "libmkl_sequential.so.*", "libmkl_intel_lp64.so.*",
              "libmkl_blacs_{blacs}_lp64.so.*", "libmkl_scalapack_lp64.so.*")

_P = POINTER(c_int)  # scalars by reference, descriptors (c_int*9)
_PROTOTYPES = {
    # name: (restype, argtypes)
    "blacs_pinfo_": (None, [_P, _P]),
    "blacs_get_": (None, [_P, _P, _P]),
    "blacs_gridinit_": (None, [_P, c_char_p, _P, _P, c_size_t]),
    "blacs_gridinfo_": (None, [_P, _P, _P, _P, _P]),
    "blacs_gridexit_": (None, [_P]),
    "numroc_": (c_int, [_P, _P, _P, _P, _P]),
    "descinit_": (None, [_P, _P, _P, _P, _P, _P, _P, _P, _P, _P]),
    "pdgeqrf_": (None, [_P, _P, c_void_p, _P, _P, _P, c_void_p, c_void_p, _P, _P]),
    "pdormqr_": (None, [c_char_p, c_char_p, _P, _P, _P, c_void_p, _P, _P, _P, c_void_p,
                        c_void_p, _P, _P, _P, c_void_p, _P, _P, c_size_t, c_size_t]),
    "pdtrtrs_": (None, [c_char_p, c_char_p, c_char_p, _P, _P, c_void_p, _P, _P, _P,
                        c_void_p, _P, _P, _P, _P, c_size_t, c_size_t, c_size_t]),
}

_CACHE = {}
_CACHE_LOCK = threading.Lock()


class ScalapackLibrary:
    """The loaded ScaLAPACK/BLACS routines (attributes ``pdgeqrf_`` etc.) and where they came from."""

    def __init__(self, handles, path, source, mpi_flavour, mpi_files):
        self.path = path  # the file defining pdgeqrf_ (for the banner)
        self.source = source  # 'system', 'mkl-wheel' or 'override'
        self.mpi_flavour = mpi_flavour  # 'openmpi' / 'mpich' / None
        self.mpi_files = mpi_files  # libmpi files mapped when we loaded
        self._handles = handles
        for name, (restype, argtypes) in _PROTOTYPES.items():
            fn = self._lookup(name)
            fn.restype = restype
            fn.argtypes = argtypes
            setattr(self, name, fn)

    def _lookup(self, name):
        for h in reversed(self._handles):
            try:
                return getattr(h, name)
            except AttributeError:
                continue
        try:  # the global scope: every library loaded with RTLD_GLOBAL (MKL splits BLACS/ScaLAPACK)
            return getattr(ctypes.CDLL(None), name)
        except AttributeError:
            pass
        raise ScalapackLoadError(
            f"the ScaLAPACK library {self.path or '?'} has no symbol {name}: it is not a complete "
            f"ScaLAPACK+BLACS build; install libscalapack-openmpi-dev (or pip install mkl), or point "
            f"{ENV_OVERRIDE} at a complete one")

    def __repr__(self):
        return f"ScalapackLibrary({self.path!r}, source={self.source!r}, mpi={self.mpi_flavour!r})"


def _mapped_mpi_files():
    """Real paths of the libmpi / libmpich files mapped into this process (Linux)."""
    try:
        with open("/proc/self/maps") as fh:
            return sorted({line.split()[-1] for line in fh if _MPI_LIB_RE.search(line.strip())})
    except OSError:
        return []


def _mpi_flavour(comm, mpi_files):
    text = str(getattr(comm, "library", "") or "").replace("\x00", "").lower()
    if "open mpi" in text:
        return "openmpi"
    if any(k in text for k in ("mpich", "intel(r) mpi", "mvapich", "cray mpich")):
        return "mpich"
    for f in mpi_files:  # no version string: the soname tells (Open MPI: libmpi.so.40; MPICH ABI: .12)
        base = os.path.basename(f)
        if base.startswith("libmpich") or base.startswith("libmpi.so.12"):
            return "mpich"
        if base.startswith("libmpi.so.40") or base.startswith("libmpi.so.80"):
            return "openmpi"
    return None


def _from_wheel(mpi_files):
    prefix = os.path.realpath(sys.prefix) + os.sep
    return any(os.path.realpath(f).startswith(prefix) for f in mpi_files)


def _defining_file(fn, fallback):
    """The file a ctypes function lives in (dladdr), for the banner."""
    class _DlInfo(ctypes.Structure):
        _fields_ = [("dli_fname", c_char_p), ("dli_fbase", c_void_p),
                    ("dli_sname", c_char_p), ("dli_saddr", c_void_p)]
    try:
        info = _DlInfo()
        if ctypes.CDLL(None).dladdr(ctypes.cast(fn, c_void_p), byref(info)) and info.dli_fname:
            path = os.fsdecode(info.dli_fname)
            if path.startswith("/lib") and os.path.exists("/usr" + path):  # merged-/usr: prefer /usr/lib
                path = "/usr" + path
            return path
    except (AttributeError, OSError, TypeError):
        pass
    return fallback


def _try_load(files):
    """Load ``files`` in order with RTLD_LAZY|RTLD_GLOBAL; return (handles, None) or (None, error)."""
    handles = []
    for f in files:
        try:
            handles.append(ctypes.CDLL(f, mode=_RTLD))
        except OSError as exc:
            return None, f"{f}: {str(exc).split(':')[-1].strip() or exc}"
    return handles, None


def load_scalapack(comm):
    """Load (once) the ScaLAPACK library that matches the MPI library this process uses.

    * ``$GAPFIT_SCALAPACK_LIB``: a file, or several separated by ``os.pathsep`` loaded in
      that order (e.g. MKL's core, sequential, intel_lp64, blacs_*, scalapack libraries);
    * system MPI (Debian/Ubuntu): ``libscalapack-openmpi.so.2.2`` or ``libscalapack-mpich.so.2.2``,
      then unversioned names, then a ``libscalapack*.so*`` next to the loaded libmpi;
    * MPI from a PyPI wheel (libmpi under ``sys.prefix``): the ``mkl`` wheel's libraries in
      ``sys.prefix/lib`` (BLACS for Open MPI or for the MPICH ABI, "intelmpi").

    Mixing (a ScaLAPACK that pulls in a second libmpi) is refused: it hangs or crashes.
    Raises :class:`ScalapackLoadError` with a one-line message naming what was tried and
    what to install.  Returns a :class:`ScalapackLibrary`.
    """
    if not getattr(comm, "is_mpi", False):
        raise ScalapackLoadError("ScaLAPACK needs an MPI communicator (launch with mpirun/srun); "
                                 "a serial run uses LAPACK")
    with _CACHE_LOCK:
        if "lib" in _CACHE:
            return _CACHE["lib"]
        lib = _load(comm)
        _CACHE["lib"] = lib
        return lib


def _load(comm):
    mpi_files = _mapped_mpi_files()
    flavour = _mpi_flavour(comm, mpi_files)
    mpi_desc = mpi_files[0] if mpi_files else (str(getattr(comm, "library", "?")).replace("\x00", "") or "?")
    override = os.environ.get(ENV_OVERRIDE, "").strip()
    tried = []

    if override:
        source = "override"
        files = [f for f in override.split(os.pathsep) if f]
        handles, err = _try_load(files)
        if handles is None:
            raise ScalapackLoadError(
                f"cannot load ScaLAPACK from {ENV_OVERRIDE}={override!r} ({err}); fix the path or unset it")
    elif mpi_files and _from_wheel(mpi_files):
        source = "mkl-wheel"
        libdir = os.path.join(sys.prefix, "lib")
        blacs = "openmpi" if flavour == "openmpi" else "intelmpi"
        files = []
        for pat in _MKL_ORDER:
            hits = sorted(glob.glob(os.path.join(libdir, pat.format(blacs=blacs))))
            if not hits:
                raise ScalapackLoadError(
                    f"MPI comes from a Python wheel ({mpi_desc}) but {os.path.join(libdir, pat.format(blacs=blacs))} "
                    f"is missing: `pip install mkl` (x86_64), or set {ENV_OVERRIDE} to a ScaLAPACK built for this MPI")
            files.append(hits[0])
        handles, err = _try_load(files)
        if handles is None:
            raise ScalapackLoadError(f"cannot load the mkl wheel's ScaLAPACK ({err}): reinstall with "
                                     f"`pip install --force-reinstall mkl`, or set {ENV_OVERRIDE}")
    else:
        source = "system"
        flavours = [flavour] if flavour else ["openmpi", "mpich"]
        candidates = []
        for fl in flavours:
            candidates += [f"libscalapack-{fl}.so.2.2", f"libscalapack-{fl}.so"]
        for f in mpi_files:  # e.g. Fedora/Spack/modules: ScaLAPACK installed next to libmpi
            candidates += sorted(glob.glob(os.path.join(os.path.dirname(f), "libscalapack*.so*")))
        handles = None
        for cand in dict.fromkeys(candidates):
            handles, err = _try_load([cand])
            if handles is not None:
                files = [cand]
                break
            tried.append(err)
        if handles is None:
            pkg = f"libscalapack-{flavour or 'openmpi'}-dev"
            raise ScalapackLoadError(
                f"no ScaLAPACK for {flavour or 'this MPI'} ({mpi_desc}): tried {'; '.join(tried[:2])}. "
                f"Install it: `apt-get install {pkg}` (MPI from pip instead: `pip install mkl`), "
                f"or set {ENV_OVERRIDE}=/path/to/libscalapack.so")

    lib = ScalapackLibrary(handles, files[-1], source, flavour, mpi_files)
    lib.path = _defining_file(lib.pdgeqrf_, files[-1])

    after = _mapped_mpi_files()
    extra = [f for f in after if f not in mpi_files]
    if mpi_files and extra:
        msg = (f"ScaLAPACK {lib.path} loaded a second MPI library {extra[0]} next to {mpi_files[0]} "
               f"(mpi4py's): use the ScaLAPACK built for that MPI (`apt-get install "
               f"libscalapack-{flavour or 'openmpi'}-dev` for system MPI, `pip install mkl` for MPI from pip)")
        if source != "override":
            raise ScalapackLoadError(msg)
        import warnings
        warnings.warn(msg + f" [{ENV_OVERRIDE} is set, continuing]", RuntimeWarning, stacklevel=3)
    return lib


def limit_blas_threads(comm, n=None):
    """Cap the BLAS/OpenMP thread pools (numpy's and ScaLAPACK's) at ``n`` threads per rank.

    ``n=None``: 1 when running under MPI with more than one rank, else nothing is changed
    (returns None).  Loads ScaLAPACK first under MPI so that its BLAS (e.g. Debian's
    OpenBLAS, a different copy from numpy's) is capped as well.  Returns the
    ``threadpoolctl.threadpool_limits`` object (keep it, or call ``restore_original_limits()``).
    """
    if n is None:
        if not getattr(comm, "is_mpi", False) or comm.size <= 1:
            return None
        n = 1
    if getattr(comm, "is_mpi", False):
        load_scalapack(comm)
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=int(n))


def scalapack_info(comm, mb=None, nb=None):
    """What the banner prints: library file, its origin, the MPI library, grid and block sizes.

    Returns a dict with keys ``library``, ``source``, ``mpi``, ``grid``, ``mb``, ``nb`` and
    ``text`` (e.g. ``"ScaLAPACK: /usr/lib/x86_64-linux-gnu/libscalapack-openmpi.so.2.2
    (system), grid 2x1, mb=500, nb=100"``).  Loads the library (so it raises
    :class:`ScalapackLoadError` when there is none); serial: ``library`` is None.
    """
    mpi = str(getattr(comm, "library", "")).replace("\x00", "").strip()
    if not getattr(comm, "is_mpi", False):
        return {"library": None, "source": None, "mpi": mpi, "grid": (1, 1), "mb": mb, "nb": nb,
                "text": "ScaLAPACK: not used (serial run, LAPACK)"}
    lib = load_scalapack(comm)
    text = f"ScaLAPACK: {lib.path} ({lib.source}), grid {comm.size}x1"
    if mb is not None:
        text += f", mb={mb}"
    if nb is not None:
        text += f", nb={nb}"
    return {"library": lib.path, "source": lib.source, "mpi": mpi, "grid": (comm.size, 1),
            "mb": mb, "nb": nb, "text": text}
