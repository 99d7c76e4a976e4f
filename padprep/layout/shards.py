"""Stage 8, write: padded tensors -> Arrow IPC stream shards, plus ``manifest.json``, atomically.

Shards use the IPC *stream* format (what ``datasets`` writes; ``Dataset.from_file`` memory-maps it)
with ``fixed_size_list<int32>[seq_len]`` columns, so a shard maps to a ``(rows, seq_len)`` tensor
without a copy. Shards are written into the build's partial output beside ``OUT``
(``run/checkpoint.py``), which is renamed into place at the end: a failed or interrupted build never
leaves a directory that looks complete.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from padprep.failpoints import kill_point
from padprep.schema import (  # noqa: F401 (re-exported)
    COLUMNS,
    LOSS_WEIGHTS,
    MANIFEST,
    PACKED_COLUMNS,
    REJECTS,
    SEQ_LENS,
    SOURCE_INPUT,
    SOURCE_LINE,
    SOURCES_SUFFIX,
)

if TYPE_CHECKING:  # pad imports torch, which ``inspect`` and reading shards do not need
    from padprep.layout.pad import PaddedShard


@dataclass(frozen=True)
class WrittenShard:
    """What writing one shard produced: its file, shape, token counts and digest (the manifest's shard entry).

    ``sequences`` and ``fill``: packed shards only."""

    file: str
    bucket: int
    rows: int
    seq_len: int
    real_tokens: int
    pad_tokens: int
    trained_tokens: int
    bytes: int
    sha256: str
    sequences: int | None = None
    fill: float | None = None
    sources: str | None = None  # the sidecar naming each row's (each sequence's) record (``write_sources``)
    sources_sha256: str | None = None


def int32_array(values: np.ndarray) -> pa.Array:
    """A numpy integer array as an Arrow int32 array, sharing memory when it already is int32.

    Built from the buffer directly: ``pa.array(ndarray)`` would import pandas (a third of a second
    of start-up) to check for pandas types.
    """
    return _from_numpy(values, np.int32, pa.int32())


def int32_values(array: pa.Array) -> np.ndarray:
    """An Arrow int32 array (no nulls) as a read-only numpy view (``to_numpy`` would import pandas)."""
    return _to_numpy(array, np.int32)


def int64_array(values: np.ndarray) -> pa.Array:
    """A numpy integer array as an Arrow int64 array, from its buffer (as ``int32_array``)."""
    return _from_numpy(values, np.int64, pa.int64())


def int64_values(array: pa.Array) -> np.ndarray:
    """An Arrow int64 array (no nulls) as a read-only numpy view."""
    return _to_numpy(array, np.int64)


def float32_array(values: np.ndarray) -> pa.Array:
    """A numpy array as an Arrow float32 array, from its buffer (as ``int32_array``)."""
    return _from_numpy(values, np.float32, pa.float32())


def float32_values(array: pa.Array) -> np.ndarray:
    """An Arrow float32 array (no nulls) as a read-only numpy view."""
    return _to_numpy(array, np.float32)


def _from_numpy(values: np.ndarray, dtype, arrow_type: pa.DataType) -> pa.Array:
    values = np.ascontiguousarray(values, dtype=dtype)
    return pa.Array.from_buffers(arrow_type, len(values), [None, pa.py_buffer(values)])


def _to_numpy(array: pa.Array, dtype) -> np.ndarray:
    if array.null_count:
        raise ValueError(f"{np.dtype(dtype).name} values: the array has nulls")
    data = np.frombuffer(array.buffers()[1], dtype=dtype) if len(array) else np.zeros(0, dtype)
    return data[array.offset : array.offset + len(array)]


def shard_schema(seq_len: int, packed: bool = False, weighted: bool = False) -> pa.Schema:
    """``fixed_size_list<int32>[seq_len]`` columns; a packed shard adds ``position_ids`` and ``seq_lens``
    (``list<int32>``); a weighted one ``loss_weights`` (``fixed_size_list<float32>[seq_len]``)."""
    fields = [pa.field(c, pa.list_(pa.int32(), seq_len), nullable=False) for c in (PACKED_COLUMNS if packed else COLUMNS)]
    if packed:
        fields.append(pa.field(SEQ_LENS, pa.list_(pa.int32()), nullable=False))
    if weighted:
        fields.append(pa.field(LOSS_WEIGHTS, pa.list_(pa.float32(), seq_len), nullable=False))
    return pa.schema(fields)


def write_shard(path: Path, shard: "PaddedShard") -> str:
    """Write one shard; returns its sha256."""
    rows, seq_len = shard.input_ids.shape
    tensors = (shard.input_ids, shard.attention_mask, shard.labels) + ((shard.position_ids,) if shard.packed else ())
    arrays = [pa.FixedSizeListArray.from_arrays(int32_array(t.numpy().reshape(-1)), seq_len) for t in tensors]
    if shard.packed:
        offsets = int32_array(np.concatenate(([0], np.cumsum(shard.seq_counts, dtype=np.int64))))
        arrays.append(pa.ListArray.from_arrays(offsets, int32_array(shard.seq_lens)))
    weighted = shard.loss_weights is not None
    if weighted:
        arrays.append(pa.FixedSizeListArray.from_arrays(float32_array(shard.loss_weights.numpy().reshape(-1)), seq_len))
    return write_table(path, pa.Table.from_arrays(arrays, schema=shard_schema(seq_len, shard.packed, weighted)))


def bucket_shard_name(bucket: int, serial: int) -> str:
    """The file of a bucketed shard (SFT rows or pairs): ``bucket-BUCKET-SERIAL.arrow``."""
    return f"bucket-{bucket:06d}-{serial:05d}.arrow"


def sources_name(shard_file: str) -> str:
    """The sidecar of shard ``NAME.arrow``: ``NAME.sources.parquet`` (a glob for ``*.arrow`` leaves it out)."""
    return shard_file.removesuffix(".arrow") + SOURCES_SUFFIX


def write_sources(path: Path, sources: np.ndarray, seq_counts: np.ndarray | None = None) -> str:
    """Write a shard's sidecar: per sequence, in the shard's order, its row, its place in the row, its input
    (index in the manifest's ``inputs``) and its line there (``sources``: sequences x (input, line); ``seq_counts``:
    sequences per row of a packed shard, else one a row). Returns its sha256."""
    import pyarrow.parquet as pq

    counts = np.ones(len(sources), np.int64) if seq_counts is None else seq_counts.astype(np.int64)
    row = np.repeat(np.arange(len(counts), dtype=np.int32), counts)
    sequence = (np.arange(len(row)) - np.repeat(np.cumsum(counts) - counts, counts)).astype(np.int32)
    arrays = [int32_array(row), int32_array(sequence), int32_array(sources[:, 0]), int64_array(sources[:, 1])]
    table = pa.Table.from_arrays(arrays, names=list(_SOURCE_COLUMNS))
    with open(path, "wb") as fh:
        hashing = _HashingWriter(fh)
        with pa.PythonFile(hashing, mode="w") as sink:
            pq.write_table(table, sink)
    return hashing.sha256.hexdigest()


def read_sources(path: Path) -> dict[str, np.ndarray]:
    """A shard's sidecar as columns (``row``, ``sequence``, ``source_input``, ``source_line``)."""
    import pyarrow.parquet as pq

    table = pq.read_table(path, columns=list(_SOURCE_COLUMNS))
    return {name: _to_numpy(table.column(name).combine_chunks(), dtype) for name, dtype in _SOURCE_COLUMNS.items()}


_SOURCE_COLUMNS = {"row": np.int32, "sequence": np.int32, SOURCE_INPUT: np.int32, SOURCE_LINE: np.int64}


def write_table(path: Path, table: pa.Table) -> str:
    """Write a table as one Arrow IPC stream file; returns its sha256 (hashed on the way out)."""
    with open(path, "wb") as fh:
        hashing = _HashingWriter(fh)
        with pa.PythonFile(hashing, mode="w") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
    return hashing.sha256.hexdigest()


class _HashingWriter:
    """A file that hashes what goes through it: the shard's sha256 without reading the file back."""

    def __init__(self, fh):
        self.fh, self.sha256 = fh, hashlib.sha256()

    def write(self, data) -> int:
        self.sha256.update(data)
        return self.fh.write(data)

    def flush(self) -> None:
        self.fh.flush()

    @property
    def closed(self) -> bool:
        return self.fh.closed

    def close(self) -> None:  # the caller's ``with open(...)`` closes the file
        self.fh.flush()


def fsync_path(path: Path) -> None:
    """Make a written file (or a folder's entries) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def log_shard(log_path: Path, shard: WrittenShard, path: Path) -> None:
    """A resumable build's pass-2 checkpoint: the shard file made durable, then its entry appended to the log
    (one JSON line, itself made durable): a shard is reused on resume only where it was logged."""
    fsync_path(path)
    if shard.sources is not None:
        fsync_path(path.parent / shard.sources)
    with open(log_path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(dataclasses.asdict(shard)) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    kill_point("pass2")


def read_shard(path: Path) -> dict[str, np.ndarray]:
    """A shard's columns as ``(rows, seq_len)`` int32 arrays (memory-mapped, no copy).

    A packed shard also gives ``position_ids`` (``(rows, seq_len)``), ``seq_lens`` (every sequence's
    length, row after row, flat) and ``seq_lens_offsets`` (``rows + 1``: row ``r``'s sequences are
    ``seq_lens[offsets[r]:offsets[r + 1]]``).
    """
    with pa.memory_map(str(path), "r") as source:
        table = pa.ipc.open_stream(source).read_all()
    packed = SEQ_LENS in table.column_names
    out = {}
    for name in PACKED_COLUMNS if packed else COLUMNS:
        col = table.column(name).combine_chunks()
        seq_len = col.type.list_size
        out[name] = int32_values(col.flatten()).reshape(-1, seq_len)
    if packed:
        col = table.column(SEQ_LENS).combine_chunks()
        offsets = int32_values(col.offsets)
        out[SEQ_LENS] = int32_values(col.values)[offsets[0] : offsets[-1]] if len(offsets) else np.zeros(0, np.int32)
        out["seq_lens_offsets"] = offsets - offsets[0] if len(offsets) else np.zeros(1, np.int32)
    if LOSS_WEIGHTS in table.column_names:
        col = table.column(LOSS_WEIGHTS).combine_chunks()
        out[LOSS_WEIGHTS] = float32_values(col.flatten()).reshape(-1, col.type.list_size)
    return out


def file_sha256(path: Path | str, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def write_json(path: Path, obj: dict) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
