"""Builds that survive being killed: one build per output at a time, and resuming where one stopped.

Beside the output ``OUT`` a build keeps (all hidden, in ``OUT``'s parent):

* ``.OUT.padprep-lock``: held with ``flock`` for the whole build, so a second build into ``OUT`` fails
  at once naming the first (its pid, host and start time are in the file). The kernel drops the lock
  when its process dies, however it dies: a lock left by a killed build is taken over, and said so.
* ``.OUT.padprep-partial/``: the output being built (shards, ``rejects.jsonl``), with pass 1's spill
  in segments (``spill-00000.arrow`` ...); renamed to ``OUT`` at the end.
* ``.OUT.padprep-state.json``: the checkpoint: the build key, the engine, and what is done. Pass 1
  checkpoints after each spill segment (its file, size and batch count, ``rejects.jsonl``'s size, the
  counts so far, the read position); pass 2 after each shard (``.OUT.padprep-shards.log``, one line a
  shard: its entry with size and sha256). Every file is fsync'd before the checkpoint that names it,
  and the state is replaced atomically (write, fsync, rename, fsync the folder), so a power loss
  never leaves a checkpoint that claims work which is not on disk.

A run with the same build key resumes from the last checkpoint whose files are whole (a torn
segment or shard, written after it, is redone); another key, another engine or padprep version, or
``--fresh``, starts over and says why. A build without a key (standard input) does not resume.
The output is the same bytes either way: segments are read back in order as one spill, and a shard
is reused only where its file has the size and sha256 it was logged with.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import shutil
import socket
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from padprep import __version__
from padprep.chat.process import ChunkStats
from padprep.errors import EXIT_USAGE, PadprepError
from padprep.failpoints import kill_point
from padprep.layout.shards import SOURCES_SUFFIX, WrittenShard, file_sha256, fsync_path
from padprep.output import location
from padprep.output.buildkey import key_changes
from padprep.output.ownership import OutputInTheWay, beside, owned_files, remove_owned
from padprep.output.rejects import Counts

STATE_VERSION = 2  # 2: the spill holds each row's source (an earlier partial build's spill cannot be resumed)
SEGMENT = "spill-{:05d}.arrow"
KEEP_COUNTS = 3  # segments whose pass-1 counts the state keeps (see ``Segment.done``)


class BuildLocked(PadprepError):
    """Another build is writing the same output (exit 2)."""

    exit_code = EXIT_USAGE


# -- the lock --------------------------------------------------------------------------------------


class BuildLock:
    """``flock`` on ``.OUT.padprep-lock`` for the length of a build (see the module's description)."""

    def __init__(self, output: Path, log=lambda message: None):
        self.output = Path(output)
        self.path = beside(output, "lock")
        self._log = log
        self._fh = None

    def __enter__(self) -> "BuildLock":
        self._made_parent = not self.path.parent.exists()  # removed again if the build leaves nothing in it
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fh = open(self.path, "a+", encoding="utf-8")
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _holder(fh)
                fh.close()
                raise BuildLocked(
                    f"{self.output}: another build is writing this output ({holder}); wait for it to end, or stop it"
                ) from None
            try:  # the file may have been removed by the build that held it, after we opened it: lock the new one
                same = os.fstat(fh.fileno()).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            fh.close()
        left = _holder(fh)
        if left:
            self._log(f"took over the lock left by a build that is no longer running ({left})")
        fh.seek(0)
        fh.truncate()
        fh.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}))
        fh.flush()
        self._fh = fh
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._fh is not None:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()  # removed while held: a clean end leaves nothing behind (a killed build leaves it)
            self._fh.close()  # closing drops the lock
            self._fh = None
            if self._made_parent:
                with contextlib.suppress(OSError):
                    self.path.parent.rmdir()  # only if empty: a build that failed before writing anything


def _holder(fh) -> str:
    fh.seek(0)
    try:
        who = json.loads(fh.read() or "null")
    except ValueError:
        return ""
    if not isinstance(who, dict):
        return ""
    return f"pid {who.get('pid')} on {who.get('host')}, started {who.get('started')}"


# -- the state -------------------------------------------------------------------------------------


@dataclass
class Position:
    """Where pass 1 stands: records done (in input order), and the Ray engine's pieces and line counts."""

    records: int = 0
    pieces: int = 0
    lines_before: dict[str, int] = field(default_factory=dict)
    bytes_read: int | None = None  # how far into the inputs reading was (for the resume message)


@dataclass
class PassOne:
    """What pass 1 has counted so far: everything the manifest and pass 2 need from it."""

    counts: Counts = field(default_factory=Counts)
    stats: ChunkStats = field(default_factory=ChunkStats)
    histogram: Counter = field(default_factory=Counter)

    def to_json(self) -> dict:
        return {
            "counts": {
                f.name: dict(v) if isinstance(v := getattr(self.counts, f.name), dict) else v
                for f in dataclasses.fields(self.counts)
            },
            "stats": dataclasses.asdict(self.stats),
            "histogram": {str(k): v for k, v in self.histogram.items()},
        }

    @classmethod
    def from_json(cls, obj: dict) -> "PassOne":
        counts = Counts()
        for k, v in obj["counts"].items():
            setattr(counts, k, Counter(v) if isinstance(getattr(counts, k), Counter) else v)
        return cls(counts, ChunkStats(**obj["stats"]), Counter({int(k): v for k, v in obj["histogram"].items()}))


@dataclass
class Segment:
    """One checkpointed spill segment and the state of pass 1 right after it."""

    file: str
    bytes: int
    batches: int
    rejects_bytes: int
    position: Position
    # pass 1's counts right after this segment: kept for the last KEEP_COUNTS segments only (a resume goes on
    # from the last whole one; the counts hold the length histogram: kept for every segment, the state and
    # this process would grow with the build's duration)
    done: PassOne | None
    lengths: str | None = None  # --pack: the .npy of this segment's row lengths (beside the state)
    # Pieces Ray workers spilled themselves before this checkpoint, in order (``ray_engine._process_and_spill``'s
    # dicts: where, bytes, batches, lines_before); their rows come before this segment's own in the spill.
    pieces: list[dict] = field(default_factory=list)


class Checkpoint:
    """The partial output of one build and its checkpoints (see the module's description).

    Args:
        output: the build's output directory.
        key: the build key (None: no resuming; the partial output is still where the build works).
        engine: the engine's name; a partial state made by another engine is not resumed.
        fresh: start over even where a partial state could be resumed.
        log: where the resume (or start-over) line goes.
        parts: what the key hashes (``buildkey.key_parts``), kept in the state: a start-over says what changed.
        mirror: a folder beside an output URL (``.OUT.padprep-state/``) where every checkpoint is copied too (the
            state and the small files of the partial output), so that a driver on another machine resumes the build
            (--engine ray to a URL: the rows themselves are already there, spilled by the workers).
    """

    def __init__(
        self,
        output: Path,
        key: str | None,
        engine: str,
        fresh: bool,
        log=lambda message: None,
        parts: dict | None = None,
        mirror: str | None = None,
    ):
        self.output = Path(output)
        self.mirror = mirror if key is not None else None
        self.parts = parts
        self.path = beside(output, "partial")
        self.state_path = beside(output, "state.json")
        self.shards_log = beside(output, "shards.log")
        self.key, self.engine = key, engine
        self.segments: list[Segment] = []
        self.phase = "pass1"
        self.bounds: list[int] | None = None
        self.hazards: list[dict] = []  # preflight's, for the manifest of a build resumed after pass 1
        self.found: dict[str, list] = {}  # each file's [format, origin], likewise
        self.from_store = False  # pass 1 came from the tokenized store (``adopt``)
        self._log = log
        state = None if fresh else self._load()
        why = "--fresh" if fresh else self._refusal(state)
        if state is not None and why is None:
            self._resume(state)
        else:
            if why and (self.path.exists() or self.state_path.exists()):
                log(f"starting over: {why}")
            self._clear()
        self.path.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def left_after_commit(output: Path, key: str | None) -> None:
        """An up-to-date output whose build was killed after its rename: the state it left goes."""
        state_path = beside(output, "state.json")
        try:
            state = json.loads(state_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return
        if state.get("build_key") == key:
            shutil.rmtree(beside(output, "partial"), ignore_errors=True)
            _remove_state(output)

    # -- what was done ---------------------------------------------------------------------------

    @property
    def resumed(self) -> bool:
        return bool(self.segments) or self.phase != "pass1"

    @property
    def position(self) -> Position:
        return self.segments[-1].position if self.segments else Position()

    @property
    def done(self) -> PassOne:
        return self.segments[-1].done if self.segments else PassOne()

    @property
    def rejects_bytes(self) -> int:
        return self.segments[-1].rejects_bytes if self.segments else 0

    def segment_files(self) -> list[Path]:
        return [self.path / s.file for s in self.segments]

    def lengths(self) -> list:
        """--pack: the row lengths of every checkpointed spill batch, in order (one array per batch)."""
        import numpy as np

        out = []
        for s in self.segments:
            if s.lengths:
                saved = np.load(self.state_path.parent / s.lengths)
                out += np.split(saved["lengths"], np.cumsum(saved["batches"])[:-1]) if len(saved["batches"]) else []
        return out

    def done_shards(self) -> dict[str, WrittenShard]:
        """Pass 2's shards already written whole: logged, and on disk with their size and sha256."""
        out: dict[str, WrittenShard] = {}
        if self.phase != "pass2" or not self.shards_log.is_file():
            return out
        for line in self.shards_log.read_text(encoding="utf-8").splitlines():
            try:
                shard = WrittenShard(**json.loads(line))
            except (ValueError, TypeError):
                continue  # a torn last line
            path = self.path / shard.file
            sidecar = self.path / shard.sources if shard.sources else None
            if (
                path.is_file()
                and path.stat().st_size == shard.bytes
                and file_sha256(path) == shard.sha256
                and (sidecar is None or (sidecar.is_file() and file_sha256(sidecar) == shard.sources_sha256))
            ):
                out[shard.file] = shard
        return out

    # -- checkpoints -----------------------------------------------------------------------------

    def next_segment(self) -> Path:
        return self.path / SEGMENT.format(len(self.segments))

    def add_segment(self, path: Path, batches: int, rejects, position: Position, done: PassOne, lengths=None, pieces=()) -> None:
        """Make a closed spill segment and everything counted up to it durable, then record it (with the pieces
        Ray workers spilled before it: written whole, put where they are, before their task returned)."""
        fsync_path(path)
        rejects.flush()
        os.fsync(rejects.fileno())
        lengths_file = self._save_lengths(lengths) if lengths is not None else None
        done = PassOne.from_json(json.loads(json.dumps(done.to_json())))  # a copy: pass 1 keeps counting
        size = path.stat().st_size
        self.segments.append(Segment(path.name, size, batches, rejects.tell(), position, done, lengths_file, list(pieces)))
        for old in self.segments[:-KEEP_COUNTS]:
            old.done = None
        self._save()
        kill_point("pass1")

    def spill(self) -> list[tuple[str, int, int]]:
        """The whole spill, in order, as (where, lines to add to its rows' lines, bytes): each segment's pieces
        spilled by Ray workers, then the rows this process spilled into the segment itself."""
        out: list[tuple[str, int, int]] = []
        for seg in self.segments:
            out += [(p["where"], p["lines_before"], p["bytes"]) for p in seg.pieces]
            if seg.batches:
                out.append((str(self.path / seg.file), 0, seg.bytes))
        return out

    def _save_lengths(self, lengths: list) -> str:
        """--pack: a segment's rows' lengths, per spill batch, beside the state; the file's name."""
        import numpy as np

        lengths_file = f"{self.state_path.name}.lengths-{len(self.segments):05d}.npz"
        target = self.state_path.parent / lengths_file
        flat = np.concatenate(lengths) if lengths else np.zeros(0, np.int32)
        with open(target, "wb") as fh:
            np.savez(fh, lengths=flat, batches=np.array([len(x) for x in lengths], np.int64))
        fsync_path(target)
        return lengths_file

    def adopt(self, segments: list[tuple[Path, int]], done: PassOne, lengths: list[list] | None) -> None:
        """Pass 1 taken from the tokenized store (``padprep/store``): its segments, placed in the partial
        output, recorded as done (``lengths``: --pack's, per segment). A build resumed from such a state
        goes on in pass 2, or starts over: the store's segments carry no counts of their own."""
        rejects_bytes = (self.path / "rejects.jsonl").stat().st_size
        for i, (path, batches) in enumerate(segments):
            lengths_file = self._save_lengths(lengths[i]) if lengths is not None else None
            position = Position(done.counts.read)
            self.segments.append(Segment(path.name, path.stat().st_size, batches, rejects_bytes, position, done, lengths_file))
        for old in self.segments[:-KEEP_COUNTS]:
            old.done = None
        self.from_store = True

    def start_pass_two(self, bounds: list[int], hazards: list[dict], found: dict[str, list]) -> None:
        """Pass 1 is done: what pass 2 and the manifest need of it is recorded."""
        self.phase, self.bounds, self.hazards, self.found = "pass2", list(bounds), hazards, found
        self._save()
        kill_point("between")

    def finished(self) -> None:
        """Manifest written: only the rename is left."""
        self.phase = "written"
        self._save()

    def commit(self) -> None:
        """The partial output becomes ``output``, then the state goes. An old output there is replaced only
        when it still holds nothing but padprep's files (``ownership.py``), and only those are removed."""
        kill_point("rename")
        old, names = None, []
        if os.path.lexists(self.output):
            try:
                names = owned_files(self.output)  # again: a file may have been put there during the build
            except OutputInTheWay as exc:
                raise OutputInTheWay(f"{exc}; the finished build is kept: run the same command again to put it in place")
            old = beside(self.output, f"old-{os.getpid()}")
            os.replace(self.output, old)
        os.replace(self.path, self.output)
        _fsync_dir(self.output.parent)
        if old is not None:
            left = remove_owned(old, names)
            if left:
                self._log(f"kept {old}: files appeared in the old output while it was replaced ({', '.join(left)})")
        self.discard_state()

    def discard_state(self) -> None:
        _remove_state(self.output)
        if self.mirror is not None:
            location.remove_tree(self.mirror)

    def abort(self) -> None:
        """A build that failed for good (not one interrupted): nothing of it is kept."""
        self._clear()

    # -- internals -------------------------------------------------------------------------------

    def _load(self) -> dict | None:
        if self.mirror is not None and not self.state_path.exists():
            self._restore()
        try:
            return json.loads(self.state_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def _refusal(self, state: dict | None) -> str | None:
        """Why a partial state cannot be resumed (None: it can)."""
        if state is None:
            # the partial output is made at start, the state at the first checkpoint: an interrupt came between
            stopped = "the interrupted build was stopped before its first checkpoint (nothing to resume)"
            return stopped if self.path.exists() else None
        if self.key is None:
            return "standard input cannot be resumed"
        if state.get("version") != STATE_VERSION or state.get("padprep_version") != __version__:
            return f"the partial build was made by padprep {state.get('padprep_version')}"
        if state.get("build_key") != self.key:
            return f"this build differs from the partial build in {key_changes(state.get('key_parts'), self.parts)}"
        if state.get("engine") != self.engine:
            return f"the partial build ran on the {state.get('engine')} engine"
        return None

    def _resume(self, state: dict) -> None:
        self.phase, self.bounds = state.get("phase", "pass1"), state.get("bounds")
        self.hazards, self.found = state.get("hazards") or [], state.get("found") or {}
        for s in state.get("segments", []):
            done = PassOne.from_json(s["done"]) if s.get("done") is not None else None
            seg = Segment(**{**s, "position": Position(**s["position"]), "done": done})
            if self.phase != "written" and not (_whole(self.path / seg.file, seg) and _pieces_whole(seg)):  # written: spill gone
                self._log(f"redoing from {seg.file}: the checkpointed file (or a piece the workers spilled) is not whole")
                self.phase = "pass1"
                break
            self.segments.append(seg)
        if self.segments and self.segments[-1].done is None:  # torn before the last segments whose counts are kept
            self._log("starting over: a spill segment older than the last checkpoints is not whole")
            self._clear()
            return
        if self.phase == "pass1" and state.get("from_store"):  # no counts to go on from: pass 1 again, whole
            self._log("starting over: the tokenized rows taken from the store are not whole in the partial build")
            self._clear()
            return
        self.from_store = bool(state.get("from_store"))
        if self.phase == "pass1":  # what pass 1 wrote after its last checkpoint is not part of the build
            kept = {s.file for s in self.segments} | {Path(p["where"]).name for s in self.segments for p in s.pieces}
            for p in [*self.path.glob("spill-*.arrow"), *self.path.glob("piece-*.arrow")]:
                if p.name not in kept:
                    p.unlink()
            for p in [*self.path.glob("*.arrow"), *self.path.glob(f"*{SOURCES_SUFFIX}")]:
                if not p.name.startswith(("spill-", "piece-")):
                    p.unlink()  # shards, their sidecars or route files of a pass 2 that must run again
            with contextlib.suppress(FileNotFoundError):
                self.shards_log.unlink()
            rejects = self.path / "rejects.jsonl"
            if rejects.exists():
                with open(rejects, "r+b") as fh:
                    fh.truncate(self.rejects_bytes)
        if self.engine != "ray":  # (the cluster's route files are named by its frozen plan: ``cluster.py``)
            for p in self.path.glob("route-*.arrow"):
                p.unlink()

    def _save(self) -> None:
        state = {
            "version": STATE_VERSION,
            "padprep_version": __version__,
            "build_key": self.key,
            "key_parts": self.parts,
            "engine": self.engine,
            "phase": self.phase,
            "bounds": self.bounds,
            "hazards": self.hazards,
            "found": self.found,
            "from_store": self.from_store,
            "segments": [_segment_json(s) for s in self.segments],
        }
        if self.key is None:
            return  # nothing to resume from: no state to keep
        tmp = self.state_path.with_name(self.state_path.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(state, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.state_path)
        _fsync_dir(self.state_path.parent)
        if self.mirror is not None:
            self._push()

    def _push(self) -> None:
        """The checkpoint copied beside the output URL: the partial output's files that changed, then the state."""
        there = location.listing(location.join(self.mirror, "partial"))
        for path in sorted(self.path.iterdir()):
            if path.is_file() and there.get(path.name) != path.stat().st_size:
                location.put_file(path, location.join(self.mirror, "partial", path.name))
        location.put_file(self.state_path, location.join(self.mirror, "state.json"))

    def _restore(self) -> None:
        """A checkpoint kept beside the output URL (none on this machine): fetched, to be resumed as one made here."""
        if not location.exists(location.join(self.mirror, "state.json")):
            return
        files = location.listing(location.join(self.mirror, "partial"))
        self.path.mkdir(parents=True, exist_ok=True)
        for name in files:
            location.get_file(location.join(self.mirror, "partial", name), self.path / name)
        location.get_file(location.join(self.mirror, "state.json"), self.state_path)
        self._log(f"the checkpoint kept beside the output ({self.mirror}) fetched: resuming from it")

    def _clear(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        shutil.rmtree(beside(self.output, "receipts"), ignore_errors=True)  # the cluster's pass 2 (``cluster.py``)
        self.discard_state()
        self.segments, self.phase, self.bounds, self.hazards, self.found = [], "pass1", None, [], {}
        self.from_store = False


def _remove_state(output: Path) -> None:
    """The checkpoint files kept beside ``output`` (the state, pass 2's log, --pack's lengths)."""
    state = beside(output, "state.json")
    for p in [state, beside(output, "shards.log"), *state.parent.glob(f"{state.name}.lengths-*.npz")]:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


def _whole(path: Path, seg: Segment) -> bool:
    """A segment as checkpointed: its size, and an Arrow file footer listing its batches."""
    try:
        if path.stat().st_size != seg.bytes:
            return False
        with pa.OSFile(str(path), "rb") as source:
            return pa.ipc.open_file(source).num_record_batches == seg.batches
    except (OSError, pa.ArrowException):
        return False


def _segment_json(seg: Segment) -> dict:
    fields = {f.name: getattr(seg, f.name) for f in dataclasses.fields(seg) if f.name not in ("done", "position")}
    done = seg.done.to_json() if seg.done is not None else None
    return {**fields, "done": done, "position": dataclasses.asdict(seg.position)}


def _pieces_whole(seg: Segment) -> bool:
    """The pieces Ray workers spilled before this checkpoint are where they were put, with their sizes."""
    return all(location.size(p["where"]) == p["bytes"] for p in seg.pieces)


def spill_location(cfg, partial: Path) -> str:
    """Where Ray workers spill their rows when pass 2 runs on the cluster: the partial output (on a real cluster,
    a folder every node mounts), or beside an output URL (``.OUT.padprep-partial/``)."""
    return location.beside_url(cfg.publish_to, "partial") if cfg.publish_to else str(partial)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # some file systems cannot sync a folder
        fsync_path(path)


def describe_resume(checkpoint: Checkpoint, total_bytes: int | None) -> str:
    """``resuming: 61% of the input already done (12,345 records), ...``"""
    if checkpoint.phase == "written":
        return "resuming: the build was complete; only its final rename was left"
    pos = checkpoint.position
    share = (
        f"{pos.bytes_read / total_bytes:.0%} of the input" if total_bytes and pos.bytes_read is not None else "part of the input"
    )
    what = f"resuming: {share} already done ({pos.records:,} records)"
    if checkpoint.phase == "pass2":
        what = f"resuming in pass 2: all {pos.records:,} records done"
    return what


__all__ = ["BuildLock", "BuildLocked", "Checkpoint", "PassOne", "Position", "describe_resume"]
