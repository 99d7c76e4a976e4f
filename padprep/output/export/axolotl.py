"""axolotl's pre-tokenized dataset: ``input_ids``, ``attention_mask``, ``labels``, one row a conversation, unpadded.

axolotl treats a dataset with those three columns as already tokenized and trains it as it is (no prompt
strategy, no ``type:``): ``datasets: [{path: DEST}]`` loads the folder with ``load_from_disk``. Labels are
padprep's: not shifted (the model shifts), -100 where not trained. A recipe's build becomes a
``DatasetDict`` with ``train`` and ``test`` splits, the ones axolotl picks for ``datasets:`` and ``test_datasets:``. A packed
build is written one conversation a row (axolotl packs itself with ``sample_packing``); each
conversation's labels are the packed row's, whose first label is -100 like every conversation's first token.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from padprep.output.export.dest import Destination
from padprep.output.export.hfdisk import DiskDataset, list_column, sequence_feature, write_dataset_dict
from padprep.output.export.source import Side, chunks, refuse_weights

NAME = "axolotl"
COLUMNS = ("input_ids", "attention_mask", "labels")
SPLITS = {"": "", "train": "train", "eval": "test"}  # the split names axolotl loads for datasets / test_datasets


def sft_table(chunk, columns=COLUMNS) -> pa.Table:
    """A chunk's conversations as rows of ``list<int32>`` input_ids / attention_mask / labels."""
    arrays = [
        list_column(chunk.ids, chunk.lengths),
        list_column(np.ones(len(chunk.ids), np.int32), chunk.lengths),
        list_column(chunk.labels, chunk.lengths),
    ]
    return pa.Table.from_arrays(arrays, names=list(columns))


def write_sides(
    sides: list[Side], dest: Destination, fingerprint: str, fmt: str, splits: dict[str, str], extra: dict | None = None
) -> dict:
    """Each side as one ``save_to_disk`` folder (``DEST`` itself, or ``DEST/SPLIT`` of a ``DatasetDict``); ``extra``:
    null columns after the three (name -> feature), as LLaMA-Factory's media columns."""
    extra = extra or {}
    schema = pa.schema([(c, pa.list_(pa.int32())) for c in COLUMNS] + [(c, pa.null()) for c in extra])
    features = {c: sequence_feature() for c in COLUMNS} | extra
    rows: dict[str, Any] = {}
    for side in sides:
        refuse_weights(side, fmt)
    for side in sides:
        split = splits[side.name]
        data = DiskDataset(dest.path(split or "."), schema, features, fingerprint)
        for chunk in chunks(side):
            table = sft_table(chunk)
            for name in extra:
                table = table.append_column(name, pa.nulls(table.num_rows))
            data.write(table)
        data.close()
        rows[split or "train"] = data.rows
    if len(sides) > 1 or sides[0].name:
        write_dataset_dict(dest.path("."), [splits[s.name] for s in sides])
    return {"rows": rows}


def write(sides: list[Side], dest: Destination, fingerprint: str) -> dict:
    return write_sides(sides, dest, fingerprint, NAME, SPLITS)
