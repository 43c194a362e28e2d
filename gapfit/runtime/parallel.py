"""Communication: the only module that imports mpi4py.

Everything else takes a communicator object with the small interface below.
:class:`SerialComm` is the stand-in for a single process without an MPI launcher,
so the same code runs serially and under ``mpirun``/``srun``.

Conventions (see DEVELOPERS.md): lowercase methods (``bcast``, ``gather``) move
small pickled metadata; the ``*_array`` helpers move NumPy arrays through MPI's
buffer interface.  Every collective must be reached by all ranks.
"""

from __future__ import annotations

import os
import sys

import numpy as np

# Environment variables that MPI launchers set in every rank they start.
_LAUNCHER_VARIABLES = (
    "OMPI_COMM_WORLD_SIZE",  # Open MPI mpirun
    "PMI_SIZE",  # MPICH hydra, srun --mpi=pmi2
    "PMIX_RANK",  # srun --mpi=pmix, PRRTE
    "MPI_LOCALNRANKS",  # MPICH
)


def launched_by_mpi() -> bool:
    """True when this process was started by an MPI launcher."""
    return any(name in os.environ for name in _LAUNCHER_VARIABLES)


class SerialComm:
    """A communicator of one process, with no MPI library loaded."""

    rank = 0
    size = 1
    is_mpi = False

    def barrier(self):
        pass

    def bcast(self, obj, root=0):
        return obj

    def gather(self, obj, root=0):
        return [obj]

    def allgather(self, obj):
        return [obj]

    def allreduce_sum(self, value):
        return value

    def allreduce_max(self, value):
        return value

    def scatter(self, objs, root=0):
        return objs[0]

    def bcast_array(self, array, root=0):
        return array

    def gather_rows(self, local, root=0):
        """Concatenate the ranks' arrays along axis 0 on ``root`` (None elsewhere)."""
        return np.ascontiguousarray(local)

    def gather_rows_into(self, local, append, root=0, block_bytes=1 << 25):
        append(local)

    def scatter_rows(self, array, counts, root=0):
        """Send rows ``sum(counts[:k]) : sum(counts[:k+1])`` of ``array`` to rank k."""
        return np.ascontiguousarray(array)

    def abort(self, code=1):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)

    @property
    def library(self):
        return "none (serial)"


class MPIComm:
    """A thin wrapper around an mpi4py communicator (COMM_WORLD by default)."""

    is_mpi = True

    def __init__(self, comm=None):
        from mpi4py import MPI  # the one import of mpi4py in gapfit

        self._MPI = MPI
        self.comm = MPI.COMM_WORLD if comm is None else comm
        self.rank = self.comm.Get_rank()
        self.size = self.comm.Get_size()

    @property
    def library(self):
        # Open MPI's string ends in a NUL byte, which makes grep call a log file binary
        return self._MPI.Get_library_version().replace("\0", "").splitlines()[0].strip()

    @property
    def handle(self):
        """The underlying mpi4py communicator (for the ScaLAPACK binding)."""
        return self.comm

    def barrier(self):
        self.comm.Barrier()

    def bcast(self, obj, root=0):
        return self.comm.bcast(obj, root=root)

    def gather(self, obj, root=0):
        return self.comm.gather(obj, root=root)

    def allgather(self, obj):
        return self.comm.allgather(obj)

    def allreduce_sum(self, value):
        return self.comm.allreduce(value, op=self._MPI.SUM)

    def allreduce_max(self, value):
        return self.comm.allreduce(value, op=self._MPI.MAX)

    def scatter(self, objs, root=0):
        return self.comm.scatter(objs, root=root)

    def bcast_array(self, array, root=0):
        """Broadcast a NumPy array; non-root ranks may pass None."""
        meta = (array.shape, array.dtype.str) if self.rank == root else None
        shape, dtype = self.comm.bcast(meta, root=root)
        if self.rank != root:
            array = np.empty(shape, dtype=np.dtype(dtype))
        else:
            array = np.ascontiguousarray(array)
        if array.size:
            self.comm.Bcast(array, root=root)
        return array

    def gather_rows(self, local, root=0):
        local = np.ascontiguousarray(local)
        row_shape = local.shape[1:]
        counts = self.comm.gather(local.shape[0], root=root)
        row_size = int(np.prod(row_shape, dtype=np.int64))
        if self.rank == root:
            out = np.empty((sum(counts),) + row_shape, dtype=local.dtype)
            sizes = np.array(counts, dtype=np.int64) * row_size
            _check_int32(sizes.sum(), "gathered array")
            self.comm.Gatherv(local, [out, sizes], root=root)
            return out
        self.comm.Gatherv(local, None, root=root)
        return None

    def scatter_rows(self, array, counts, root=0):
        counts = [int(c) for c in counts]
        if self.rank == root:
            array = np.ascontiguousarray(array)
            meta = (array.shape[1:], array.dtype.str)
        else:
            meta = None
        row_shape, dtype = self.comm.bcast(meta, root=root)
        row_size = int(np.prod(row_shape, dtype=np.int64))
        out = np.empty((counts[self.rank],) + tuple(row_shape), dtype=np.dtype(dtype))
        if self.rank == root:
            sizes = np.array(counts, dtype=np.int64) * row_size
            _check_int32(sizes.sum(), "scattered array")
            self.comm.Scatterv([array, sizes], out, root=root)
        else:
            self.comm.Scatterv(None, out, root=root)
        return out

    def gather_rows_into(self, local, append, root=0, block_bytes=1 << 25):
        """Every rank's float64 rows, in rank order, passed to ``append`` on ``root`` a block at a time
        (so the gathered rows need not fit in memory: ``append`` may write them to a file)."""
        local = np.asarray(local, dtype=np.float64)
        counts = self.comm.gather(local.shape[0], root=root)
        row_shape = local.shape[1:]
        step = max(1, block_bytes // (8 * max(int(np.prod(row_shape, dtype=np.int64)), 1)))
        if self.rank != root:
            for start in range(0, local.shape[0], step):
                self.send_array(local[start:start + step], root, tag=7)
            return
        for rank, count in enumerate(counts):
            for start in range(0, count, step):
                rows = min(step, count - start)
                append(local[start:start + rows] if rank == root else
                       self.recv_array((rows,) + row_shape, rank, tag=7))

    def send_array(self, array, dest, tag=0):
        """Send a float64 array to one rank (point to point; the receiver knows its shape)."""
        self.comm.Send(np.ascontiguousarray(array, dtype=np.float64), dest=dest, tag=tag)

    def recv_array(self, shape, source, tag=0):
        out = np.empty(shape, dtype=np.float64)
        self.comm.Recv(out, source=source, tag=tag)
        return out

    def send_obj(self, obj, dest, tag=0):
        self.comm.send(obj, dest=dest, tag=tag)

    def recv_obj(self, source, tag=0):
        return self.comm.recv(source=source, tag=tag)

    def abort(self, code=1):
        sys.stdout.flush()
        sys.stderr.flush()
        self.comm.Abort(code)


def _check_int32(n, what):
    if n >= 2**31:
        raise OverflowError(f"{what} has {n} elements, more than MPI's 32-bit counts allow; use more ranks")


def get_comm(use_mpi=None):
    """The world communicator: MPI when launched by mpirun/srun, else serial.

    ``use_mpi`` forces the choice (True/False); None detects the launcher.
    """
    if use_mpi is None:
        use_mpi = launched_by_mpi()
    if not use_mpi:
        return SerialComm()
    return MPIComm()


def rank_prefix(comm) -> str:
    """``[rank k/P] `` for messages printed by one rank of several."""
    if comm.size > 1:
        return f"[rank {comm.rank}/{comm.size}] "
    return ""


def rank0_call(comm, function, *args, **kwargs):
    """Run ``function`` on rank 0 only and give every rank its result or its exception.

    All ranks must call this (it broadcasts).  An exception raised on rank 0 is
    re-raised on every rank, so all fail together with the same message instead
    of hanging in the next collective (ASE's ``parallel_function`` pattern).
    """
    outcome = None
    if comm.rank == 0:
        try:
            outcome = (None, function(*args, **kwargs))
        except Exception as exc:  # noqa: BLE001 - re-raised below on every rank
            outcome = (exc, None)
    if comm.size > 1:
        try:
            outcome = comm.bcast(outcome, root=0)
        except Exception as exc:  # an unpicklable exception: send its text
            if comm.rank == 0:
                raise
            raise RuntimeError(str(exc)) from None
    exc, result = outcome
    if exc is not None:
        exc.collective = True  # raised identically on every rank: only rank 0 reports it
        raise exc
    return result


def rank0_only(comm, function, *args, **kwargs):
    """Run ``function`` on rank 0; its result stays there (None elsewhere).

    All ranks must call this: only a possible exception is broadcast, so that
    every rank fails together.  Use it for results that are then scattered.
    """
    result, failure = None, None
    if comm.rank == 0:
        try:
            result = function(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - re-raised below on every rank
            failure = exc
    if comm.size > 1:
        failure = comm.bcast(failure, root=0)
    if failure is not None:
        failure.collective = True
        raise failure
    return result
