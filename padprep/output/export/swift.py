"""ms-swift's cached dataset: the ``save_to_disk`` folders ``swift export --to_cached_dataset true`` writes and
``swift sft --cached_dataset DEST/train --cached_val_dataset DEST/val`` (or ``swift rlhf``) loads instead of encoding.

SFT rows hold what its template's ``encode(..., return_length=True)`` gives: ``input_ids``, ``labels`` (not
shifted, -100 where not trained), ``length`` (the row's tokens) and ``lengths`` (``[length]``, what it filters
and groups by). Preference pairs hold its RLHF encoding: ``chosen_input_ids`` / ``chosen_labels`` /
``chosen_length`` (the prompt then the chosen completion, the prompt -100), the same for ``rejected_``, and
``lengths`` (``[chosen_length, rejected_length]``). ``DEST/train`` always, ``DEST/val`` for a recipe's eval
side: the folders its own export writes. A packed build is written one conversation a row (swift packs
itself with ``--packing true``).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from padprep.layout.shards import int32_array
from padprep.output.export.axolotl import sft_table
from padprep.output.export.dest import Destination
from padprep.output.export.hfdisk import DiskDataset, list_column, sequence_feature
from padprep.output.export.llamafactory import pair_sides
from padprep.output.export.source import Side, chunks, pair_chunks, refuse_weights

NAME = "swift"
SPLITS = {"": "train", "train": "train", "eval": "val"}
_INT = {"dtype": "int32", "_type": "Value"}


def _lengths_columns(lengths: list[np.ndarray]) -> list[pa.Array]:
    """Each side's ``length`` (int32) and ``lengths``, every row's lengths as one list."""
    flat = np.stack(lengths, axis=1).reshape(-1)
    return [int32_array(n) for n in lengths] + [list_column(flat, np.full(len(lengths[0]), len(lengths), np.int64))]


def write(sides: list[Side], dest: Destination, fingerprint: str) -> dict:
    for side in sides:
        refuse_weights(side, NAME)
    pairs = sides[0].manifest.pairs
    if pairs:
        names = [f"{s}_{c}" for s in ("chosen", "rejected") for c in ("input_ids", "labels")]
        lengths_names = ["chosen_length", "rejected_length"]
    else:
        names, lengths_names = ["input_ids", "labels"], ["length"]
    schema = pa.schema([(c, pa.list_(pa.int32())) for c in names] + [(c, pa.int32()) for c in lengths_names])
    schema = schema.append(pa.field("lengths", pa.list_(pa.int32())))
    features = {c: sequence_feature() for c in names} | {c: _INT for c in lengths_names} | {"lengths": sequence_feature()}
    rows = {}
    for side in sides:
        split = SPLITS[side.name]
        data = DiskDataset(dest.path(split), schema, features, fingerprint)
        if pairs:
            for chunk in pair_chunks(side):
                arrays, lengths = [], []
                for ids, labels, n in pair_sides(chunk):
                    arrays += [list_column(ids, n), list_column(labels, n)]
                    lengths.append(n)
                data.write(pa.Table.from_arrays(arrays + _lengths_columns(lengths), schema=schema))
        else:
            for chunk in chunks(side):
                table = sft_table(chunk)
                arrays = [table.column("input_ids"), table.column("labels")]
                arrays += [pa.chunked_array([a]) for a in _lengths_columns([chunk.lengths])]
                data.write(pa.Table.from_arrays(arrays, schema=schema))
        data.close()
        rows[split] = data.rows
    return {"rows": rows}
