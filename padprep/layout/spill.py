"""The spill between the passes: pass 1 appends each chunk's unpadded rows to Arrow IPC files, one
segment per checkpoint (``spill-00000.arrow``, ...; ``spill_batch``: list columns sharing one offsets
array); pass 2 (``pass_two``) reads the segments back in order, batch by batch, as one spill.

Imports neither the template nor the tokenizer side of padprep, nor torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np
import pyarrow as pa

from padprep.layout.shards import float32_array, int32_array, int64_array
from padprep.schema import LOSS_WEIGHTS, PAIR_COLUMNS, SOURCE_INPUT, SOURCE_LINE

if TYPE_CHECKING:
    from padprep.chat.pairs import FlatPairs
    from padprep.chat.process import FlatRows

SPILL = "spill-{:05d}.arrow"  # segment k of the spill (run/checkpoint.py closes one per checkpoint)
# Loss weights are null for a chunk whose rows carry none (the usual case: nothing is written for them).
# Each row's source travels with it to its shard: the input (its index in the build's inputs) and the line.
SCHEMA = pa.schema(
    [
        ("input_ids", pa.list_(pa.int32())),
        ("labels", pa.list_(pa.int32())),
        (LOSS_WEIGHTS, pa.list_(pa.float32())),
        (SOURCE_INPUT, pa.int32()),
        (SOURCE_LINE, pa.int64()),
    ]
)


def spill_batch(rows: FlatRows, inputs: np.ndarray) -> pa.RecordBatch:
    """A chunk's flat rows as list columns sharing one offsets array (no per-row conversion); ``inputs``:
    each row's input, as its index in the build's inputs."""
    offsets = int32_array(np.concatenate(([0], np.cumsum(rows.lengths))))
    ids = pa.ListArray.from_arrays(offsets, int32_array(rows.ids))
    labels = pa.ListArray.from_arrays(offsets, int32_array(rows.labels))
    if rows.weights is None:
        weights = pa.nulls(len(rows.lengths), pa.list_(pa.float32()))
    else:
        weights = pa.ListArray.from_arrays(offsets, float32_array(rows.weights))
    sources = [int32_array(inputs), int64_array(rows.lines)]
    return pa.record_batch([ids, labels, weights, *sources], schema=SCHEMA)


def input_indices(rows: FlatRows | FlatPairs, input_index: dict[str, int]) -> np.ndarray:
    """Each row's (pair's) input, as its index in the build's inputs (``input_index``: input -> index)."""
    return np.array([input_index[f] for f in rows.files], np.int32)[rows.file_of]


def spill_files(workdir: Path) -> list[Path]:
    """The spill's segments, in order."""
    return sorted(Path(workdir).glob("spill-*.arrow"))


def spill_batches(workdir: Path, part: int = 0, parts: int = 1) -> Iterator[pa.RecordBatch]:
    """The batches of the spill's ``part``-th of ``parts`` contiguous parts (counted in batches over all its
    segments), in order; read, not mapped: RSS stays flat. Segments are Arrow IPC *files*: footers list the batches."""
    files = spill_files(workdir)
    counts = []
    for path in files:
        with pa.OSFile(str(path), "rb") as source:
            counts.append(pa.ipc.open_file(source).num_record_batches)
    total = sum(counts)
    first, last = total * part // parts, total * (part + 1) // parts
    at = 0
    for path, n in zip(files, counts):
        lo, hi = max(first - at, 0), min(last - at, n)
        if lo < hi:
            with pa.OSFile(str(path), "rb") as source:
                reader = pa.ipc.open_file(source)
                for i in range(lo, hi):
                    yield reader.get_batch(i)
        at += n


def spill_bytes(workdir: Path) -> int:
    return sum(p.stat().st_size for p in spill_files(workdir))


def stream_batches(path: Path) -> Iterator[pa.RecordBatch]:
    """The batches of an Arrow IPC stream file pass 2 wrote (a bucket's or a shard's routed rows), in order."""
    with pa.OSFile(str(path), "rb") as source:  # read, not mapped
        yield from pa.ipc.open_stream(source)


# A preference build's spill: TRL's three columns, unpadded, and each pair's source.
PAIR_SCHEMA = pa.schema(
    [*((name, pa.list_(pa.int32())) for name in PAIR_COLUMNS), SCHEMA.field(SOURCE_INPUT), SCHEMA.field(SOURCE_LINE)]
)


def spill_pairs(pairs: FlatPairs, inputs: np.ndarray) -> pa.RecordBatch:
    """A chunk's flat pairs as three list columns, and their sources (``inputs``: as ``spill_batch``'s)."""
    columns = []
    for values, lengths in (
        (pairs.prompt, pairs.prompt_lengths),
        (pairs.chosen, pairs.chosen_lengths),
        (pairs.rejected, pairs.rejected_lengths),
    ):
        offsets = int32_array(np.concatenate(([0], np.cumsum(lengths))))
        columns.append(pa.ListArray.from_arrays(offsets, int32_array(values)))
    return pa.record_batch([*columns, int32_array(inputs), int64_array(pairs.lines)], schema=PAIR_SCHEMA)
