"""The spill file between the passes: pass 1 appends each chunk's unpadded rows to one Arrow IPC file
(``spill_batch``: list columns sharing one offsets array); pass 2 (``pass_two``) reads it back by batch.

Imports neither the template nor the tokenizer side of padprep, nor torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np
import pyarrow as pa

from padprep.layout.shards import float32_array, int32_array
from padprep.schema import LOSS_WEIGHTS, PAIR_COLUMNS

if TYPE_CHECKING:
    from padprep.chat.pairs import FlatPairs
    from padprep.chat.process import FlatRows

SPILL = "spill.arrow"
# Loss weights are null for a chunk whose rows carry none (the usual case: nothing is written for them).
SCHEMA = pa.schema(
    [
        ("input_ids", pa.list_(pa.int32())),
        ("labels", pa.list_(pa.int32())),
        (LOSS_WEIGHTS, pa.list_(pa.float32())),
    ]
)


def spill_batch(rows: FlatRows) -> pa.RecordBatch:
    """A chunk's flat rows as list columns sharing one offsets array (no per-row conversion)."""
    offsets = int32_array(np.concatenate(([0], np.cumsum(rows.lengths))))
    ids = pa.ListArray.from_arrays(offsets, int32_array(rows.ids))
    labels = pa.ListArray.from_arrays(offsets, int32_array(rows.labels))
    if rows.weights is None:
        weights = pa.nulls(len(rows.lengths), pa.list_(pa.float32()))
    else:
        weights = pa.ListArray.from_arrays(offsets, float32_array(rows.weights))
    return pa.record_batch([ids, labels, weights], schema=SCHEMA)


def spill_batches(path: Path, part: int = 0, parts: int = 1) -> Iterator[pa.RecordBatch]:
    """The batches of the spill file's ``part``-th of ``parts`` contiguous parts, in order (read, not
    mapped: RSS stays flat). The spill is an Arrow IPC *file*: its footer lists the batches."""
    with pa.OSFile(str(path), "rb") as source:
        reader = pa.ipc.open_file(source)
        n = reader.num_record_batches
        for i in range(n * part // parts, n * (part + 1) // parts):
            yield reader.get_batch(i)


def stream_batches(path: Path) -> Iterator[pa.RecordBatch]:
    """The batches of an Arrow IPC stream file pass 2 wrote (a bucket's or a shard's routed rows), in order."""
    with pa.OSFile(str(path), "rb") as source:  # read, not mapped
        yield from pa.ipc.open_stream(source)


# A preference build's spill: TRL's three columns, unpadded.
PAIR_SCHEMA = pa.schema([(name, pa.list_(pa.int32())) for name in PAIR_COLUMNS])


def spill_pairs(pairs: FlatPairs) -> pa.RecordBatch:
    """A chunk's flat pairs as three list columns."""
    columns = []
    for values, lengths in (
        (pairs.prompt, pairs.prompt_lengths),
        (pairs.chosen, pairs.chosen_lengths),
        (pairs.rejected, pairs.rejected_lengths),
    ):
        offsets = int32_array(np.concatenate(([0], np.cumsum(lengths))))
        columns.append(pa.ListArray.from_arrays(offsets, int32_array(values)))
    return pa.record_batch(columns, schema=PAIR_SCHEMA)
