"""Checkpoints of the streaming solve: a fit stopped at its time limit loses nothing, and a
finished fit can be extended with new data.

A checkpoint (``checkpoint_file=PATH``) is

* ``PATH``: the manifest (JSON): the fingerprint of the options and the data, the state
  (``folding`` or ``complete``), the generation and the names of the other files;
* ``PATH.g<G>.common.npz``: the sparse points, their cutoffs, θ and e0 (what the sparse-point
  phase chose);
* ``PATH.g<G>.rank<k>.npz``: rank k's triangular factor and the frames folded into it.

Every file is written atomically, and the manifest last, so a reader never sees a half-written
checkpoint.  A rerun with the same options and data resumes: each saved factor is folded into
rank 0's, and the frames not yet folded are shared among the ranks of the new run (which may
be a different number).  A run of generation G + 1 writes its rank-0 part, holding every frame of
generation G, before it drops generation G's files.

SIGTERM and SIGUSR1 (what SLURM sends at a time limit, or earlier with ``--signal``) make every
rank finish its chunk, write its part and stop: the job ends with exit status 75 (EX_TEMPFAIL).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import time
from typing import Dict, List, Optional

import numpy as np

from ..config.fit_config import FitConfig
from ..errors import ConfigError, GapfitError
from ..options.top_level import TOP_LEVEL, TopLevelOptions
from ..runtime.files import write_files_atomically
from ..runtime.parallel import rank0_call, rank0_only

FORMAT = "gapfit-checkpoint"
VERSION = 1
EXIT_CHECKPOINTED = 75  # EX_TEMPFAIL: try again later
DEFAULT_INTERVAL = 900.0  # seconds between periodic checkpoints



class Checkpointed(GapfitError):
    """The fit stopped (a signal) after writing a checkpoint: rerun the same command to go on."""

    exit_code = EXIT_CHECKPOINTED


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def fingerprint(opts: TopLevelOptions, data_path: Optional[str], core_text: Optional[str] = None) -> Dict[str, object]:
    """What must not change between a checkpoint and the run that resumes from it."""
    options = {opts.given.key(name): " ".join(str(value).split()) if value is not None else None
               for name, value in sorted(opts.given.items()) if TOP_LEVEL.by_name[name].fingerprint}
    data = {"file": os.path.basename(data_path), "sha256": file_sha256(data_path)} if data_path else None
    core = hashlib.sha256(core_text.encode()).hexdigest() if core_text is not None else None
    return {"options": options, "data": data, "core": core}


def difference(saved: Dict[str, object], now: Dict[str, object]) -> Optional[str]:
    """The first difference between two fingerprints, in words (None if they agree)."""
    old, new = saved.get("options", {}), now.get("options", {})
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            was = "not given" if key not in old else f"{key}={old[key]}"
            is_ = "not given" if key not in new else f"{key}={new[key]}"
            return f"the option '{key}' differs (checkpoint: {was}; now: {is_})"
    if saved.get("data") != now.get("data"):
        s, n = saved.get("data") or {}, now.get("data") or {}
        if s.get("file") != n.get("file"):
            return f"the data file differs (checkpoint: {s.get('file')}; now: {n.get('file')})"
        return f"the data file {n.get('file')} has changed since the checkpoint (its sha256 differs)"
    if saved.get("core") != now.get("core"):
        return "the core potential's parameter file has changed since the checkpoint"
    return None


class Checkpoint:
    """The files of one checkpoint (see the module docstring)."""

    def __init__(self, path: str):
        self.path = path

    def part_name(self, generation: int, rank: int) -> str:
        return f"{self.path}.g{generation}.rank{rank}.npz"

    def common_name(self, generation: int) -> str:
        return f"{self.path}.g{generation}.common.npz"

    # --- reading -------------------------------------------------------------------------
    def manifest(self) -> Optional[dict]:
        """The manifest, or None if there is no checkpoint; ConfigError if it is not one of ours."""
        try:
            with open(self.path) as fh:
                data = json.load(fh)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise ConfigError(f"checkpoint_file '{self.path}' exists but is not a gapfit checkpoint "
                              f"({exc.__class__.__name__}): move it away or choose another name") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("version") != VERSION:
            raise ConfigError(f"checkpoint_file '{self.path}' is not a gapfit checkpoint (version {VERSION})")
        return data

    def load_common(self, manifest: dict) -> dict:
        with np.load(self.common_name(manifest["generation"]), allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}

    def load_parts(self, manifest: dict) -> List[dict]:
        """Every saved rank part: {'r': factor, 'frames': folded frame indices, 'rows': row count}."""
        parts = []
        for name in manifest["parts"]:
            path = os.path.join(os.path.dirname(self.path), os.path.basename(name))
            if not os.path.exists(path):
                continue  # that rank had not written a part yet: its frames are still to do
            parts.append(_read_part(path))
        return parts

    def load_part(self, manifest: dict, rank: int) -> Optional[dict]:
        """One rank's saved part (None if it had written none)."""
        path = os.path.join(os.path.dirname(self.path), os.path.basename(manifest["parts"][rank]))
        return _read_part(path) if os.path.exists(path) else None

    # --- writing -------------------------------------------------------------------------
    def write_common(self, generation: int, arrays: Dict[str, np.ndarray]) -> None:
        write_files_atomically({self.common_name(generation): _npz_bytes(arrays)})

    def write_part(self, generation: int, rank: int, factor, frames: np.ndarray, has_u: bool) -> None:
        """A rank's factor, its rows not yet folded, and the frames they hold (``has_u``: U's rows too)."""
        r, buffered, rows = factor.state()
        write_files_atomically({self.part_name(generation, rank): _npz_bytes(
            {"r": r, "buffer": buffered, "frames": np.asarray(frames, dtype=np.int64), "rows": np.array(rows),
             "has_u": np.array(bool(has_u)), "data_stats": factor.data_stats})})

    def write_manifest(self, generation: int, n_ranks: int, state: str, fingerprint_: dict, extra=None) -> None:
        data = {"format": FORMAT, "version": VERSION, "generation": generation, "state": state,
                "ranks": n_ranks, "fingerprint": fingerprint_, "written": time.strftime("%Y-%m-%d %H:%M:%S"),
                "common": os.path.basename(self.common_name(generation)),
                "parts": [os.path.basename(self.part_name(generation, k)) for k in range(n_ranks)]}
        data.update(extra or {})
        write_files_atomically({self.path: (json.dumps(data, indent=1) + "\n").encode()})

    def remove_generation(self, generation: int, n_ranks: int) -> None:
        for name in [self.common_name(generation)] + [self.part_name(generation, k) for k in range(max(n_ranks, 64))]:
            try:
                os.unlink(name)
            except FileNotFoundError:
                pass


def _read_part(path: str) -> dict:
    with np.load(path, allow_pickle=False) as npz:
        return {"r": npz["r"], "buffer": npz["buffer"], "frames": npz["frames"], "rows": int(npz["rows"]),
                "has_u": bool(npz["has_u"]),
                "data_stats": npz["data_stats"] if "data_stats" in npz.files else np.full(2, np.nan)}


def _npz_bytes(arrays: Dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _test_signal_after(rank: int) -> int:
    """Test hook: GAPFIT_TEST_SIGTERM_AFTER="RANK:N" sends SIGTERM to rank RANK after its N-th chunk."""
    hook = os.environ.get("GAPFIT_TEST_SIGTERM_AFTER", "")
    if ":" in hook:
        k, n = hook.split(":", 1)
        if k.strip() == str(rank):
            return int(n)
    return -1


class StopRequest:
    """Remembers SIGTERM/SIGUSR1 during a fit with a checkpoint (the previous handlers come back after).

    A signal that comes before the folding (while the data are read or the sparse points chosen)
    stops the fit after its first chunk, once there is a checkpoint to save.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGUSR1)

    def __init__(self, active: bool = True):
        self.active = active  # False: the signals keep their handlers
        self.signal: Optional[int] = None
        self._previous = {}

    def __enter__(self) -> "StopRequest":
        for sig in self.SIGNALS if self.active else ():
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: no signals
                pass
        return self

    def _handle(self, signum, frame):
        self.signal = signum

    @property
    def requested(self) -> bool:
        return self.signal is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.signal).name if self.signal is not None else ""

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}


class CheckpointRun:
    """What one run does with its checkpoint: resume from it, save to it as it folds, complete it.

    Every rank holds one and reaches the collectives.  Rank 0 reads the checkpoint, writes the
    manifest and the common part and folds the saved factors into its own; each rank writes its
    own part.
    """

    def __init__(self, comm, path: Optional[str], interval: float, fingerprint_: dict, manifest: Optional[dict],
                 common: Optional[dict], done: np.ndarray, u_folded: bool, saved_parts=None, extends=None,
                 stop: Optional[StopRequest] = None):
        self.comm = comm
        self.checkpoint = Checkpoint(path) if path else None  # None: an extension that saves nothing
        self.extends = extends  # the base fit's manifest, for an extension
        self.interval = float(interval)
        self.fingerprint = fingerprint_
        self.previous = manifest  # None: a fresh fit
        self.generation = (manifest["generation"] + 1) if manifest else 1
        self.common = common  # sparse points, θ, e0 of the previous run
        self.done = np.asarray(done, dtype=np.int64)  # frames folded by the previous runs (every rank knows)
        self.u_folded = u_folded  # U's rows are in the saved factors
        self.saved_parts = saved_parts or []  # rank 0: the previous runs' factors
        self.my_done: List[int] = []
        self.has_u = False
        self.adopt = False  # resuming with as many ranks: each rank continues its own saved part
        self.last_write = time.monotonic()
        self.stop = stop if stop is not None else StopRequest(active=False)
        self._chunks = 0

    @property
    def resuming(self) -> bool:
        return self.previous is not None or self.extends is not None

    @property
    def complete(self) -> bool:
        return bool(self.previous) and self.previous.get("state") == "complete"

    @classmethod
    def open(cls, comm, config: FitConfig, data_path: Optional[str], core_text: Optional[str],
             stop: Optional[StopRequest] = None) -> "CheckpointRun":
        """Check an existing checkpoint against this fit (ConfigError naming the difference) and load it."""
        path = config.checkpoint.file

        def read():
            fp = fingerprint(config.options, data_path, core_text)
            cp = Checkpoint(path)
            manifest = cp.manifest()
            if manifest is None:
                return fp, None, None, np.zeros(0, dtype=np.int64), False
            diff = difference(manifest["fingerprint"], fp)
            if diff:
                raise ConfigError(f"checkpoint_file '{path}' was made for another fit: {diff}. It is never mixed in: "
                                  f"rerun with the options and data it was made with, or move it away to start afresh")
            parts = cp.load_parts(manifest)
            done = np.concatenate([p["frames"] for p in parts]) if parts else np.zeros(0, dtype=np.int64)
            return fp, manifest, cp.load_common(manifest), np.unique(done), any(p["has_u"] for p in parts)
        fp, manifest, common, done, u_folded = rank0_call(comm, read)
        adopt = bool(manifest) and manifest.get("state") == "folding" and manifest["ranks"] == comm.size
        if adopt:  # the same number of ranks: each continues its own part exactly (no merging, same rounding)
            parts = [Checkpoint(path).load_part(manifest, comm.rank)]
        else:  # rank 0 folds every saved factor into its own; the frames left are shared out afresh
            parts = rank0_only(comm, lambda: Checkpoint(path).load_parts(manifest) if manifest else [])
        run = cls(comm, path, config.checkpoint.interval, fp, manifest, common, done, u_folded, parts,
                  stop=stop)
        run.adopt = adopt
        return run

    @classmethod
    def extension(cls, comm, config: FitConfig, base_manifest: dict, data_path: Optional[str],
                  core_text: Optional[str], stop: Optional[StopRequest] = None) -> "CheckpointRun":
        """An extension: the base fit's finished factor, sparse points, θ and e0; all new frames to fold."""
        base = Checkpoint(config.checkpoint.extend)
        fp = rank0_call(comm, fingerprint, config.options, data_path, core_text)
        if base_manifest["fingerprint"].get("core") != fp.get("core"):
            raise ConfigError(f"extend_checkpoint '{base.path}': the core potential's parameter file has changed "
                              f"since the base fit")
        common = rank0_call(comm, base.load_common, base_manifest)
        parts = rank0_only(comm, base.load_parts, base_manifest)
        path = config.checkpoint.file or None
        return cls(comm, path, config.checkpoint.interval, fp, None, common, np.zeros(0, dtype=np.int64),
                   True, parts, extends=base_manifest, stop=stop)

    def describe(self) -> str:
        if self.extends is not None:
            m = self.extends
            return (f"Extending the fit of checkpoint '{self.extends_path}' ({m['fingerprint']['data']['file']}, "
                    f"written {m.get('written', '?')}) with new frames; its sparse points, θ, e0 and factor are used")
        m = self.previous
        state = "a finished fit" if self.complete else f"{self.done.size} frames folded by {m['ranks']} rank(s)"
        return (f"Resuming from checkpoint '{self.checkpoint.path}' (generation {m['generation']}, written "
                f"{m.get('written', '?')}): {state}; the sparse points, θ and e0 come from it")

    # --- folding --------------------------------------------------------------------------
    def my_saved_frames(self) -> np.ndarray:
        """The frames this rank's saved part holds (when each rank continues its own part)."""
        part = self.saved_parts[0] if self.adopt and self.saved_parts and self.saved_parts[0] else None
        return part["frames"] if part is not None else np.zeros(0, dtype=np.int64)

    def begin(self, factor, common_arrays: dict, has_u: bool) -> None:
        """Take over the saved factors; write this generation's parts, common part and manifest."""
        comm = self.comm
        self.common = common_arrays
        self.has_u = has_u
        if self.adopt:
            part = self.saved_parts[0] if self.saved_parts else None
            if part is not None:
                factor.adopt(part["r"], part["buffer"], part["rows"], part["data_stats"])
                self.my_done = [int(f) for f in part["frames"]]
                self.has_u = part["has_u"]
        elif comm.rank == 0:
            for part in self.saved_parts:
                factor.merge(part["r"], part["rows"], part["data_stats"])
                if part["buffer"].shape[0]:
                    factor.add_rows(part["buffer"])
            self.has_u = self.has_u or self.u_folded
            self.my_done = [int(f) for f in self.done]
        self.saved_parts = []
        if self.checkpoint is not None:
            self.save(factor)
            if comm.rank == 0:
                self.checkpoint.write_common(self.generation, common_arrays)
            comm.barrier()
            if comm.rank == 0:
                self.checkpoint.write_manifest(self.generation, comm.size, "folding", self.fingerprint,
                                               self._extra())
                if self.previous:
                    self.checkpoint.remove_generation(self.previous["generation"], self.previous["ranks"])
        comm.barrier()
        self.last_write = time.monotonic()

    def _extra(self) -> dict:
        """The descriptors and species of the fit (what an extension needs), and the data it extends."""
        extra = {"species": [int(z) for z in self.common["species"]], "pieces": [str(p) for p in self.common["pieces"]]}
        if self.extends is not None:
            base = self.extends
            extra["extends"] = [base["fingerprint"]["data"]] + list(base.get("extends", []))
        return extra

    @property
    def extends_path(self) -> str:
        return "" if self.extends is None else self.extends.get("path", "?")

    def after_chunk(self, factor, frames) -> bool:
        """Record a folded chunk; write this rank's part when it is due.  True: stop now (a signal)."""
        self.my_done.extend(int(f) for f in frames)
        self._chunks += 1
        if self._chunks == _test_signal_after(self.comm.rank):
            os.kill(os.getpid(), signal.SIGTERM)  # test hook: a real signal, as SLURM would send
        if os.environ.get("GAPFIT_TEST_CHUNK_DELAY"):  # test hook: a slow fold, for a signal from outside
            time.sleep(float(os.environ["GAPFIT_TEST_CHUNK_DELAY"]))
        if self.stop.requested:
            return True
        if time.monotonic() - self.last_write >= self.interval:
            self.save(factor)
        return False

    def save(self, factor) -> None:
        if self.checkpoint is None:
            return
        self.checkpoint.write_part(self.generation, self.comm.rank, factor, np.asarray(self.my_done, dtype=np.int64),
                                   self.has_u)
        self.last_write = time.monotonic()

    def end(self, factor, n_frames: int) -> None:
        """After the folding: if any rank was signalled, every rank saves its part and the job stops."""
        comm = self.comm
        if self.checkpoint is None:
            return
        mine = ((self.stop.signal or 0) << 20) + comm.rank if self.stop.requested else 0
        signalled = comm.allreduce_max(mine) if comm.size > 1 else mine
        if not signalled:
            return
        sig, rank = divmod(signalled, 1 << 20)
        name = signal.Signals(sig).name + (f" (rank {rank})" if comm.size > 1 else "")
        self.save(factor)
        done = comm.allreduce_sum(len(self.my_done)) if comm.size > 1 else len(self.my_done)
        comm.barrier()
        error = Checkpointed(f"stopped by {name}: checkpoint "
                             f"'{self.checkpoint.path}' holds {done} of {n_frames} frames; rerun the same command to "
                             f"continue")
        error.collective = True
        raise error

    def finish(self, total_factor, frames_all: np.ndarray) -> None:
        """Rank 0: the finished fit as the next generation (state complete), for reruns and extensions."""
        if self.comm.rank != 0 or self.checkpoint is None:
            return
        g = self.generation + 1
        self.checkpoint.write_common(g, self.common)
        self.checkpoint.write_part(g, 0, total_factor, np.asarray(frames_all, dtype=np.int64), True)
        self.checkpoint.write_manifest(g, 1, "complete", self.fingerprint, self._extra())
        self.checkpoint.remove_generation(self.generation, self.comm.size)


# --- extending a finished fit with new data ------------------------------------------------
def read_base_manifest(path: str, comm) -> dict:
    """The manifest of the finished fit that ``extend_checkpoint`` names (collective; ConfigError if none)."""

    def read():
        manifest = Checkpoint(path).manifest()
        if manifest is None:
            raise ConfigError(f"extend_checkpoint '{path}' does not exist")
        if manifest.get("state") != "complete":
            raise ConfigError(f"extend_checkpoint '{path}' holds an unfinished fit: finish it first (rerun it with "
                              f"checkpoint_file={path})")
        return manifest
    manifest = rank0_call(comm, read)
    manifest["path"] = path
    return manifest
