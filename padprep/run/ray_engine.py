"""``--engine ray``: pass 1's chunks mapped on Ray tasks, on a local cluster or an existing one.

The chunks are pieces of the input files, (file, byte range), and the workers read them themselves:
records never travel through this process (the driver), only each piece's rows and rejects come
back, in input order, to the same spill, rejects file, pass 2 and manifest as with the local engine.
So the output is the same bytes as a local build.

* JSON Lines files are cut into ranges of about ``RANGE_BYTES``, each starting right after a
  newline (the driver reads a few bytes at each cut to find it). A worker numbers its lines from 1;
  the driver, which takes the results in order, adds the lines of the earlier ranges.
* ``.json`` files (an array, one object or JSON Lines: decided while reading) and compressed files
  cannot be cut at a byte offset: each is one piece, read whole by one worker.
* Standard input can only be read here: its records are shipped to the workers in chunks.

Each file's format is decided here, once, as the local engine decides it (``engine.detect_file_format``),
and sent with its pieces, so that both engines tag every record alike.

Ray is imported only when this engine runs (``pip install 'padprep[ray]'``). With no address (no
``--ray-address``, no ``RAY_ADDRESS``) a local cluster is started for the run, with the cores this
process may use and a small object store, and shut down after it.
"""

from __future__ import annotations

import io
import itertools
import os
import tempfile
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any, BinaryIO, Callable, Iterator

import numpy as np
import pyarrow as pa

from padprep.chat.pairs import FlatPairs
from padprep.chat.process import ChunkResult, FlatResult, FlatRows, ProcessOptions, Processor
from padprep.chat.tokenizer import TokenizerBundle
from padprep.errors import UsageError
from padprep.input.columnar import is_columnar
from padprep.input.formats import FileFormat, FormatOptions
from padprep.input.read import STDIN, InputError, is_json_array_file, read_jsonl, read_records
from padprep.input.records import RawRecord
from padprep.input.remote import is_remote
from padprep.layout.spill import PAIR_SCHEMA, SCHEMA, input_indices, spill_batch, spill_pairs
from padprep.output import location
from padprep.run.engine import RecordStream, chunked, detect_file_format
from padprep.run.parallel import available_cores
from padprep.run.progress import Progress

# Bytes of a JSON Lines file per piece (a task): large enough that a task's start-up is noise.
RANGE_BYTES = 8 << 20
# Object store of a local cluster: pieces' results are small (token ids), a few in flight.
LOCAL_OBJECT_STORE_BYTES = 256 << 20
# A task that writes (a spilled piece, a route group, a shard) and dies with its node is run again this many times.
RETRIES = 3
PIECE = "piece-{:06d}.arrow"  # a piece's rows, spilled by its worker (numbered in plan order)
INSTALL_HINT = "--engine ray needs Ray: pip install 'padprep[ray]' (or pip install 'ray[data]')"


@dataclass(frozen=True)
class Piece:
    """One task's input: a byte range of a JSON Lines file, a whole file, or records shipped from here."""

    path: str
    start: int = 0
    end: int | None = None  # None: to the end of the file
    whole: bool = False  # read with ``read_records`` (a .json or compressed file)
    records: list[RawRecord] | None = None  # shipped records (standard input)
    sha256: str | None = None  # a URL's digest when the build key was computed (the worker checks it)


def import_ray() -> Any:
    """The ``ray`` module, or a one-line ``UsageError`` saying how to install it."""
    try:
        import ray
    except ImportError:
        raise UsageError(INSTALL_HINT) from None
    return ray


def plan_pieces(
    files: list[str],
    range_bytes: int = RANGE_BYTES,
    log: Callable[[str], None] = lambda m: None,
    digests: dict[str, str | None] | None = None,
) -> Iterator[Piece]:
    """The pieces of the inputs, in input order (standard input is not planned here: see ``RayEngine``)."""
    for path in files:
        if is_remote(path):
            log(f"{path}: read whole by one worker (a URL is not cut at a byte offset)")
            yield Piece(path, whole=True, sha256=(digests or {}).get(path))
        elif path == STDIN:
            log("-: standard input cannot be read by the workers: its records are shipped to them from this process")
            yield Piece(path)
        elif is_json_array_file(path) or path.endswith((".gz", ".zst")) or is_columnar(path):
            log(f"{path}: read whole by one worker (a .json, compressed, Parquet or Arrow file is not cut at a byte offset)")
            yield Piece(path, whole=True)
        else:
            yield from _ranges(path, range_bytes)


def _ranges(path: str, range_bytes: int) -> Iterator[Piece]:
    """Byte ranges of a JSON Lines file, each starting at the beginning of a line."""
    size = os.path.getsize(path)
    start = 0
    with open(path, "rb") as fh:
        while start < size:
            end = _line_start_after(fh, start + range_bytes, size)
            yield Piece(path, start, end)
            start = end


def _line_start_after(fh: BinaryIO, offset: int, size: int) -> int:
    """The offset just after the first newline at or after ``offset`` (``size`` when there is none)."""
    if offset >= size:
        return size
    fh.seek(offset)
    while block := fh.read(1 << 16):
        at = block.find(b"\n")
        if at >= 0:
            return offset + at + 1
        offset += len(block)
    return size


class _Range(io.RawIOBase):
    """A read-only view of ``[start, end)`` of a file that counts the newlines it hands out."""

    def __init__(self, fh: BinaryIO, start: int, end: int | None):
        fh.seek(start)
        self._fh, self._left, self.newlines = fh, (end - start) if end is not None else None, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        view = memoryview(buffer)
        if self._left is not None:
            view = view[: self._left]
        n = self._fh.readinto(view)
        if not n:
            return 0
        if self._left is not None:
            self._left -= n
        self.newlines += view[:n].tobytes().count(b"\n")
        return n


def connect(address: str | None) -> bool:
    """Join the cluster at ``address`` (None: ``RAY_ADDRESS``, else start a local one); False when this process
    is connected already (the caller that connected it disconnects). Tasks run with one tokenizer thread, and
    with the driver's ``PADPREP_*`` variables (the test hooks of ``failpoints.py`` reach the workers)."""
    ray = import_ray()
    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS") or None
    env_vars = {"RAYON_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    # (not PADPREP_KILL_AT: its kill points are the driver's, and a worker's process group is its node's)
    env_vars.update({k: v for k, v in os.environ.items() if k.startswith("PADPREP_") and k != "PADPREP_KILL_AT"})
    env = {"env_vars": env_vars}
    if address:
        ray.init(address=address, runtime_env=env, include_dashboard=False, log_to_driver=False)
    else:
        ray.init(
            num_cpus=available_cores(),
            object_store_memory=LOCAL_OBJECT_STORE_BYTES,
            include_dashboard=False,
            log_to_driver=False,
            runtime_env=env,
            configure_logging=False,
        )
    return True


@contextmanager
def session(address: str | None) -> Iterator[None]:
    """Connected to the cluster for the ``with`` block (both passes of a build share one local cluster)."""
    started = connect(address)
    try:
        yield
    finally:
        if started:
            import_ray().shutdown()


def read_piece(piece: Piece, fmt: str | None) -> tuple[list[RawRecord], int]:
    """The records of a piece (tagged with their file's format) and the lines it spans (JSON Lines ranges)."""
    if piece.records is not None:
        records, lines = piece.records, 0
    elif piece.whole:
        records, lines = list(read_records(piece.path, expect=piece.sha256)), 0
    else:
        try:
            fh = open(piece.path, "rb")
        except OSError as exc:
            raise InputError(f"{piece.path}: cannot open ({exc.strerror or exc})") from None
        with fh:
            view = _Range(fh, piece.start, piece.end)
            records = list(read_jsonl(piece.path, io.BufferedReader(view)))
            lines = view.newlines
    if fmt is not None:
        records = [r if r.format is not None else r.with_format(fmt) for r in records]
    return records, lines


# -- inside a Ray worker --------------------------------------------------------------------------
# One Processor per (tokenizer, options) per worker process: the tokenizer is fetched once.
_processors: dict[tuple[str, ProcessOptions], Processor] = {}


def _process_piece(
    bundle_ref: list, key: str, options: ProcessOptions, piece: Piece, fmt: str | None, chunk_size: int
) -> tuple[list[FlatResult], int]:
    """A piece's results (one per ``chunk_size`` records, as the local engine cuts them) and its line count."""
    processor = _processors.get((key, options))
    if processor is None:
        import ray

        bundle: TokenizerBundle = ray.get(bundle_ref[0])  # in a list: Ray does not fetch it for each task
        processor = _processors[(key, options)] = Processor(bundle, options)
    records, lines = read_piece(piece, fmt)
    return [processor.process_flat(chunk) for chunk in chunked(iter(records), chunk_size)], lines


def _process_and_spill(
    bundle_ref: list,
    key: str,
    options: ProcessOptions,
    piece: Piece,
    fmt: str | None,
    chunk_size: int,
    target: str,
    input_index: dict[str, int],
) -> tuple[list[FlatResult], int, dict]:
    """``_process_piece``, with the piece's rows written to the spill at ``target`` (a path or URL every node
    reaches) by this worker: the results carry only the rows' lengths and counts back (``FlatRows.spilled``);
    the third value describes the file (where, bytes, batches; its lines counted from the piece's start)."""
    results, lines = _process_piece(bundle_ref, key, options, piece, fmt, chunk_size)
    pairs = options.task == "preference"
    with tempfile.TemporaryDirectory(prefix="padprep-piece-") as tmp:
        local = os.path.join(tmp, "piece.arrow")
        batches = 0
        with pa.OSFile(local, "wb") as sink, pa.ipc.new_file(sink, PAIR_SCHEMA if pairs else SCHEMA) as writer:
            for result in results:
                if len(result.rows.lengths):
                    inputs = input_indices(result.rows, input_index)
                    writer.write_batch(spill_pairs(result.rows, inputs) if pairs else spill_batch(result.rows, inputs))
                    batches += 1
        location.put_file(local, target)
        size = os.path.getsize(local)
    for result in results:
        result.rows = _lengths_only(result.rows)
    return results, lines, {"where": target, "bytes": size, "batches": batches, "lines_before": 0}


def _lengths_only(rows: FlatRows | FlatPairs) -> FlatRows:
    """What the driver needs of rows a worker spilled: their lengths (the histogram) and counts per file."""
    empty = np.zeros(0, np.int32)
    return FlatRows(empty, empty, rows.lengths, rows.per_file, per_file_tokens=rows.per_file_tokens, spilled=True)


class RayEngine:
    """Ray tasks, one per piece, a bounded number in flight, results taken back in input order.

    Args:
        bundle: the tokenizer (put in the object store once).
        files: the inputs, in order.
        formats: ``--format`` and the field names (to decide each file's format as the local engine does).
        found: each file's ``FileFormat``, filled here for the manifest.
        address: a cluster to join; None: ``RAY_ADDRESS``, else a local cluster for this run.
        progress: where log lines go.
        digests: each input's sha256 when the build key was computed (a worker checks a URL's against it).
        resume: a resumed build's position (``checkpoint.Position`` as a dict): the pieces already done.

    Example:
        >>> with RayEngine(bundle, files, formats, found, None, progress) as engine:  # doctest: +SKIP
        ...     for result in engine.results(stream, processor, 512, None): ...
    """

    def __init__(
        self,
        bundle: TokenizerBundle,
        files: list[str],
        formats: FormatOptions,
        found: dict[str, FileFormat],
        address: str | None,
        progress: Progress,
        digests: dict[str, str | None] | None = None,
        resume: dict | None = None,
        spill_to: str | None = None,
    ):
        self._ray = import_ray()
        self._spill_to = spill_to  # the workers write their rows here (pass 2 then runs on the cluster: ``cluster.py``)
        self._spilled: list[dict] = []
        self._digests = digests or {}
        self._resume_pieces = int((resume or {}).get("pieces", 0))
        self._resume_lines = dict((resume or {}).get("lines_before", {}))
        self._pieces_done = self._resume_pieces
        self._boundary: dict | None = None
        self._shipped = False
        self._bundle, self._files, self._formats, self._found = bundle, files, formats, found
        self._address = address or os.environ.get("RAY_ADDRESS") or None
        self._progress = progress
        self._started = False
        self._cpus = 1

    def describe(self) -> str:
        where = f"cluster at {self._address}" if self._address else "local cluster for this run"
        return f"ray, {where}, {self._cpus} CPU(s)"

    def __enter__(self) -> "RayEngine":
        self._started = connect(self._address)
        self._cpus = max(1, int(self._ray.cluster_resources().get("CPU", 1)))
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._started:
            self._ray.shutdown()
            self._started = False

    def head_start(self, stream: RecordStream, processor: Processor, chunk_size: int) -> None:
        """Nothing: the tasks read the inputs themselves once ``results`` plans the pieces."""

    def results(
        self, stream: RecordStream, processor: Processor, chunk_size: int, checked: ChunkResult | None
    ) -> Iterator[FlatResult]:
        """Every record processed by the workers (the preflight sample too: ``checked`` is not reused)."""
        ray = self._ray
        log = self._progress.log
        # a recipe's records come tagged by the stream, each file with its source's options
        fmts = {} if stream.selection is not None else {f: self._file_format(f) for f in self._files if f != STDIN}
        bundle_ref = [ray.put(self._bundle)]
        key = self._bundle.fingerprint
        window = 2 * self._cpus
        pending: deque = deque()
        lines_before: dict[str, int] = dict(self._resume_lines)
        submit = self._submitter(processor.options, bundle_ref, key, chunk_size)
        for piece in self._pieces(stream, chunk_size, log):
            pending.append((piece, submit(piece, fmts.get(piece.path))))
            if len(pending) >= window:
                yield from self._collect(*pending.popleft(), lines_before)
        while pending:
            yield from self._collect(*pending.popleft(), lines_before)

    def _submitter(self, options: ProcessOptions, bundle_ref: list, key: str, chunk_size: int) -> Callable:
        """``submit(piece, fmt)``: the piece's task (its rows come back, or are spilled by the worker)."""
        ray = self._ray
        if self._spill_to is None:
            task = ray.remote(num_cpus=1, max_retries=0)(_process_piece)
            return lambda piece, fmt: task.remote(bundle_ref, key, options, piece, fmt, chunk_size)
        # a worker killed with its node leaves no rows behind: its piece is run again elsewhere
        task = ray.remote(num_cpus=1, max_retries=RETRIES, retry_exceptions=False)(_process_and_spill)
        index = {f: i for i, f in enumerate(self._files)}
        numbers = itertools.count(self._resume_pieces)  # as the plan numbers pieces, resumed or not

        def submit(piece: Piece, fmt: str | None):
            target = location.join(self._spill_to, PIECE.format(next(numbers)))
            return task.remote(bundle_ref, key, options, piece, fmt, chunk_size, target, index)

        return submit

    def take_spilled(self) -> list[dict]:
        taken, self._spilled = self._spilled, []
        return taken

    def _file_format(self, path: str) -> str | None:
        """The format to tag a file's records with (None with --format, as the local stream does)."""
        found = detect_file_format(path, self._formats, self._found, self._progress.log)
        return None if self._formats.format is not None else found.format

    def _pieces(self, stream: RecordStream, chunk_size: int, log: Callable[[str], None]) -> Iterator[Piece]:
        if stream.selection is not None:  # a recipe's side: the draw decides which records, so this process reads them
            self._shipped = True
            log("recipe: the drawn records are shipped to the workers from this process")
            for chunk in chunked(stream.from_start(), chunk_size):
                yield Piece(chunk[0].source, records=chunk)
            return
        skip = self._resume_pieces  # a resumed build: the pieces the cluster finished are not read again
        for piece in plan_pieces(self._files, RANGE_BYTES, log, self._digests):
            if skip:
                skip -= 1
                continue
            if piece.path != STDIN:
                yield piece
                continue
            for chunk in chunked(_stdin_records(stream), chunk_size):  # already tagged by the stream
                yield Piece(STDIN, records=chunk)

    def _collect(self, piece: Piece, ref, lines_before: dict[str, int]) -> Iterator[FlatResult]:
        try:
            results, lines, *spilled = self._ray.get(ref)
        except self._ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            raise (cause if isinstance(cause, Exception) else exc) from None
        offset = lines_before.get(piece.path, 0)
        lines_before[piece.path] = offset + lines
        self._pieces_done += 1
        if spilled:  # counted in with the piece's last result, when a checkpoint may follow
            self._spilled.append({**spilled[0], "lines_before": offset})
        for k, result in enumerate(results):
            if offset and result.rejects:
                result.rejects = [replace(r, line=r.line + offset) for r in result.rejects]
            if offset:  # a piece's lines count from its start: the rows' sources count from the file's
                result.rows = replace(result.rows, lines=result.rows.lines + offset)
            # a resumed build can continue after a piece, not inside one
            self._boundary = {"pieces": self._pieces_done, "lines_before": dict(lines_before)} if k == len(results) - 1 else None
            yield result

    def position(self) -> dict | None:
        if self._shipped:  # records shipped from here: the record count says where to continue
            return {}
        return self._boundary


def _stdin_records(stream: RecordStream) -> Iterator[RawRecord]:
    """Standard input's records from the driver's stream (the sample's included)."""
    for rec in stream.from_start():
        if rec.source == STDIN:
            yield rec
