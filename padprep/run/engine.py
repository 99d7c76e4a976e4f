"""Pass 1's engines: what maps ``Processor.process`` over the chunks of the input.

Pass 1 is three steps, whatever runs it:

1. plan chunks: the records this process reads (``RecordStream``), cut every ``chunk_size``
   records (local engine), or (file, byte range) pieces that the workers read themselves (Ray);
2. map ``process`` over the chunks: a pure function of the chunk, the tokenizer and the options;
3. collect the results in input order: rows and rejects come back as if one process did it all.

The pipeline (``pipeline.py``) does the rest the same way for every engine: preflight, the spill,
rejects, pass 2 and the manifest. So the output is the same bytes whatever the engine.
"""

from __future__ import annotations

import functools
import itertools
import os
from typing import Callable, Iterator, Protocol

from padprep.chat.process import ChunkResult, FlatResult, Processor
from padprep.chat.tokenizer import TokenizerBundle
from padprep.input.formats import FileFormat, FormatOptions, with_formats
from padprep.input.read import STDIN, InputError, read_records
from padprep.input.records import RawRecord
from padprep.input.remote import is_remote
from padprep.recipe.draw import Selection
from padprep.run.parallel import ChunkRunner, WorkerPlan
from padprep.run.progress import Progress


class RecordStream:
    """The input's records as this process reads them (files in order, each tagged with its format).

    ``sample`` is the first records, taken for preflight; ``rest`` the ones after it. ``found``
    collects each file's format as it is decided (for the manifest).

    Args:
        files: the expanded inputs, in order.
        formats: ``--format`` and the field names.
        found: filled with each file's ``FileFormat``.
        progress: where reading progress and log lines go.
        digests: the sha256 each file had when the build key was computed (a URL is checked against it).
        selection: one side of a recipe: each record is read as many times as its copies say (0: skipped),
            each file with its source's format options.
        done: records a resumed build has already (``checkpoint.Position.records``): the sample is still
            read, for preflight, but ``rest`` and ``pending_sample`` hold only the records after them.

    Example:
        >>> stream = RecordStream(["a.jsonl"], FormatOptions(), {}, Progress())  # doctest: +SKIP
        >>> first = stream.take_sample(64)  # doctest: +SKIP
    """

    def __init__(
        self,
        files: list[str],
        formats: FormatOptions,
        found: dict[str, FileFormat],
        progress: Progress,
        digests: dict[str, str | None] | None = None,
        selection: Selection | None = None,
        done: int = 0,
        stored: tuple[int, dict[str, FileFormat]] | None = None,
    ):
        self.files = files
        self.stored = stored  # (k, formats): the first k files' records are the ``done`` ones, not read again
        self.digests = digests or {}
        self.selection = selection
        self.done = done
        self._skipped = False
        self._at: tuple[int, Callable[[], int]] | None = None
        self.formats = formats
        self.found = found
        self.sample: list[RawRecord] = []
        self._progress = progress
        self._records = self._read()

    def _read(self, first: int = 0) -> Iterator[RawRecord]:
        offset = sum(os.path.getsize(p) for p in self.files[:first]) if first else 0
        for path in self.files[first:]:
            on_open = functools.partial(self._opened, offset)
            records = read_records(path, on_open, self._progress.log, self.digests.get(path))
            if self.selection is None:
                yield from with_formats(path, records, self.formats, self.found, self._progress.log)
            else:
                formats = self.selection.formats.get(path, self.formats)
                yield from _copies(
                    path, with_formats(path, records, formats, self.found, self._progress.log), self.selection.copies[path]
                )
            offset += 0 if path == STDIN or is_remote(path) else os.path.getsize(path)

    def _opened(self, offset: int, tell: Callable[[], int]) -> None:
        self._at = (offset, tell)
        self._progress.reading(offset, tell)

    def bytes_read(self) -> int | None:
        """How far into the inputs reading is, in bytes on disk (None: not known)."""
        if self._at is None:
            return None
        try:
            return self._at[0] + self._at[1]()
        except (OSError, ValueError):  # the file is closed: it was read to its end
            return None

    def take_sample(self, n: int) -> list[RawRecord]:
        """Read the first ``n`` records (fewer when the input is shorter)."""
        self.sample = list(itertools.islice(self._records, n))
        return self.sample

    @property
    def pending_sample(self) -> list[RawRecord]:
        """The sample's records that are still to be processed (all of them, unless resuming)."""
        return self.sample[self.done :]

    @property
    def rest(self) -> Iterator[RawRecord]:
        """The records after the sample (after the records already done, when resuming)."""
        if not self._skipped:
            self._skipped = True
            skip = self.done - len(self.sample)
            if skip > 0 and self.stored is not None:  # whole files done (the store's): start after them, unread
                k, formats = self.stored
                self._records.close()
                for path in self.files[:k]:
                    self.found.setdefault(path, formats[path])
                self._records = self._read(k)
            elif skip > 0:
                for _ in itertools.islice(self._records, skip):
                    pass
        return self._records

    def from_start(self) -> Iterator[RawRecord]:
        """Every record still to be processed: the sample's, then the rest."""
        return itertools.chain(self.pending_sample, self.rest)

    def close(self) -> None:
        self._records.close()


def _copies(path: str, records: Iterator[RawRecord], copies) -> Iterator[RawRecord]:
    """Each record as many times as ``copies`` (one count per record, in read order) says; a file that
    holds another number of records than when the recipe drew from it is an input error."""
    counts = copies.tolist()
    seen = 0
    for rec in records:
        if seen == len(counts):
            seen += 1
            break
        yield from itertools.repeat(rec, counts[seen])
        seen += 1
    if seen != len(counts):
        raise InputError(
            f"{path}: the file changed while the recipe was built (it held {len(counts):,} records when drawn from); run again"
        )


def chunked(records: Iterator[RawRecord], size: int) -> Iterator[list[RawRecord]]:
    """Lists of ``size`` records (the last one shorter)."""
    it = iter(records)
    while chunk := list(itertools.islice(it, size)):
        yield chunk


class Engine(Protocol):
    """Maps ``Processor.process`` over the input's chunks; a context manager that owns its workers.

    ``head_start`` lets the workers begin on the records after the preflight sample, with the
    options preflight starts from, while this process runs preflight (an engine may ignore it).
    ``results`` yields one ``FlatResult`` per chunk, in input order, made with the final
    processor's options. ``checked`` is the preflight sample's result when its rows may be reused
    (the sample is then not processed again); an engine that reads the inputs itself ignores it and
    processes every record.
    """

    def describe(self) -> str: ...

    def __enter__(self) -> "Engine": ...

    def __exit__(self, exc_type, exc, tb) -> None: ...

    def head_start(self, stream: RecordStream, processor: Processor, chunk_size: int) -> None: ...

    def position(self) -> dict | None:
        """Where a resumed run of this engine can continue after the results yielded so far (fields of
        ``checkpoint.Position`` beside the record count), or None where it cannot stop (inside a Ray piece)."""
        ...

    def take_spilled(self) -> list[dict]:
        """The spill pieces its workers wrote themselves since the last call, in order (the dicts
        ``ray_engine._process_and_spill`` returns): their rows came back as lengths only (``FlatRows.spilled``). [] for an engine that does not."""
        ...

    def results(
        self, stream: RecordStream, processor: Processor, chunk_size: int, checked: ChunkResult | None
    ) -> Iterator[FlatResult]: ...


class LocalEngine:
    """This machine: one process, or a pool of worker processes (``parallel.ChunkRunner``).

    Args:
        plan: from ``parallel.plan_workers``.
        bundle: the tokenizer, handed to the workers when they start.
        processor: the processor preflight starts from; forked workers inherit it (no second compile).

    Example:
        >>> with LocalEngine(plan_workers(0, size), bundle, processor) as engine:  # doctest: +SKIP
        ...     engine.head_start(stream, processor, 512)
        ...     for result in engine.results(stream, processor, 512, None): ...
    """

    def __init__(self, plan: WorkerPlan, bundle: TokenizerBundle, processor: Processor | None = None):
        self.plan = plan
        self._runner = ChunkRunner(plan, bundle, processor)

    def describe(self) -> str:
        return f"local, {self.plan.describe()}"

    def __enter__(self) -> "LocalEngine":
        self._runner.__enter__()  # workers start before this process tokenizes anything
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._runner.__exit__(exc_type, exc, tb)

    def head_start(self, stream: RecordStream, processor: Processor, chunk_size: int) -> None:
        self._runner.head_start(chunked(stream.rest, chunk_size), processor.options)

    def position(self) -> dict | None:
        return {}  # results come a chunk at a time, in input order: the record count says it all

    def take_spilled(self) -> list[dict]:
        return []  # this process spills every row

    def results(
        self, stream: RecordStream, processor: Processor, chunk_size: int, checked: ChunkResult | None
    ) -> Iterator[FlatResult]:
        rest = chunked(stream.rest, chunk_size)
        if checked is None:  # the sample is processed again, with the final options, ahead of the rest
            return self._runner.results(rest, processor, first=chunked(iter(stream.pending_sample), chunk_size))
        # the sample's rows are already made: the build does not make them twice
        return itertools.chain([checked.flat()], self._runner.results(rest, processor))


def detect_file_format(path: str, formats: FormatOptions, found: dict[str, FileFormat], log: Callable[[str], None]) -> FileFormat:
    """The format of one file as the record stream decides it (``formats.with_formats``), read on its own.

    Reads records only until the format is decided (at most ``DETECT_MAX_RECORDS``).
    """
    if path not in found:
        records = with_formats(path, read_records(path), formats, found, log)
        try:
            for rec in records:
                if rec.format is not None or path in found:
                    break
        finally:
            records.close()
    return found.get(path, FileFormat(None, "no record of a known shape"))
