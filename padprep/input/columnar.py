"""Columnar inputs: Parquet files and Arrow IPC files (what ``datasets`` writes) -> ``RawRecord``, row by row.

A row becomes the record its JSON form gives (``records.json_value``), so that format detection, field
options, conversion, rejects and accounting are exactly those of JSON Lines: nested columns
(``messages`` as a list of structs, ``tools`` as a list or a JSON string) read as objects and lists,
and a null is an absent key (a struct column holds every field of every row: ``tool_calls: null``
on a user message is no field at all, as in the JSON it came from, and as transformers passes it).
Rows are numbered from 0 (``unit="row"``; a reject names ``file:row``). The reader hands on the row as
pyarrow gives it: turning it into that value (and into JSON text, for a reject) is the converting
worker's work, not the reading process's (measured: the reader's JSON text cost a Parquet build 7%).

Memory holds one batch of rows: a Parquet file is read row group by row group, an Arrow file batch
by batch, never whole.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

from padprep.input.records import RawRecord, read_so_far
from padprep.input.remote import is_remote, url_name

PARQUET_MAGIC = b"PAR1"
ARROW_FILE_MAGIC = b"ARROW1"
_BATCH_ROWS = 1024


def is_parquet(path: str) -> bool:
    """A ``.parquet`` file, or any file that starts with Parquet's magic bytes (a URL: by its suffix only)."""
    name = url_name(path)
    if name.endswith(".parquet"):
        return True
    return not is_remote(path) and _starts_with(path, PARQUET_MAGIC)


def is_arrow(path: str) -> bool:
    """An Arrow IPC file or stream: ``.arrow`` (``datasets``' ``data-*.arrow``), or the IPC file magic."""
    return url_name(path).endswith(".arrow") or (not is_remote(path) and _starts_with(path, ARROW_FILE_MAGIC))


def is_columnar(path: str) -> bool:
    return is_parquet(path) or is_arrow(path)


def _starts_with(path: str, magic: bytes) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(len(magic)) == magic
    except OSError:
        return False


def read_parquet(
    path: str, on_open: Callable[[Callable[[], int]], None] | None = None, name: str | None = None
) -> Iterator[RawRecord]:
    """The rows of a Parquet file, row group by row group; ``on_open`` gets the compressed bytes read so far.
    ``name`` is the source the records name (default ``path``; a URL read from a local copy names the URL)."""
    import pyarrow.parquet as pq

    source = pq.ParquetFile(path)
    meta = source.metadata
    done = [0]
    if on_open is not None:
        on_open(lambda: done[0])

    def batches():
        for group in range(meta.num_row_groups):
            yield from source.iter_batches(batch_size=_BATCH_ROWS, row_groups=[group])
            chunks = meta.row_group(group)
            done[0] += sum(chunks.column(c).total_compressed_size for c in range(chunks.num_columns))

    yield from _rows(name or path, batches())
    source.close()


def read_arrow(
    path: str, on_open: Callable[[Callable[[], int]], None] | None = None, name: str | None = None
) -> Iterator[RawRecord]:
    """The rows of an Arrow IPC stream (what ``datasets.save_to_disk`` writes) or IPC file, batch by batch."""
    import pyarrow as pa

    with pa.memory_map(path, "r") as source:
        if on_open is not None:
            on_open(read_so_far(source.tell, source.size()))
        try:
            reader: Any = pa.ipc.open_stream(source)
            batches = iter(reader)
        except pa.ArrowInvalid:
            source.seek(0)
            reader = pa.ipc.open_file(source)
            batches = (reader.get_batch(i) for i in range(reader.num_record_batches))
        yield from _rows(name or path, batches)


def _rows(path: str, batches) -> Iterator[RawRecord]:
    """Every row of ``batches`` as a record holding the row (``RawRecord.row``), numbered from 0 across the
    batches. Its JSON value and text are made where it is converted (a worker), not here."""
    row = 0
    for batch in batches:
        for obj in batch.to_pylist():
            yield RawRecord(path, row, None, unit="row", row=obj)
            row += 1
