"""LLaMA-Factory's ``tokenized_path``: the ``save_to_disk`` folder its ``get_dataset`` loads instead of tokenizing.

SFT rows hold what its supervised processor writes: ``input_ids``, ``attention_mask`` (ones), ``labels``
(not shifted, -100 where not trained) and ``images`` / ``videos`` / ``audios`` (null: text only, the
collator reads them). Preference pairs hold its pairwise processor's ``chosen_input_ids``,
``chosen_attention_mask``, ``chosen_labels`` and the same for ``rejected_``: each side is the prompt and
its completion, the prompt -100. A recipe's build becomes a ``DatasetDict`` with ``train`` and
``validation`` (the split names its loader looks for). Point ``tokenized_path: DEST`` at it (with
``stage: sft`` or ``stage: dpo``); the dataset options are then ignored by LLaMA-Factory.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from padprep.output.export.axolotl import write_sides
from padprep.output.export.dest import Destination
from padprep.output.export.hfdisk import DiskDataset, list_column, null_feature, sequence_feature, write_dataset_dict
from padprep.output.export.source import PairChunk, Side, pair_chunks
from padprep.schema import IGNORE_INDEX

NAME = "llamafactory"
SPLITS = {"": "", "train": "train", "eval": "validation"}
MEDIA = ("images", "videos", "audios")
PAIR_COLUMNS = tuple(f"{side}_{c}" for side in ("chosen", "rejected") for c in ("input_ids", "attention_mask", "labels"))


def pair_sides(chunk: PairChunk) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per side (chosen, rejected): every pair's prompt + completion ids, its labels (-100 over the prompt), one after
    another, and each pair's length."""
    out = []
    for completions in (chunk.chosen, chunk.rejected):
        ids = [np.concatenate((p, c)) for p, c in zip(chunk.prompt, completions)]
        labels = [np.concatenate((np.full(len(p), IGNORE_INDEX, np.int32), c)) for p, c in zip(chunk.prompt, completions)]
        lengths = np.array([len(i) for i in ids], np.int64)
        empty = np.zeros(0, np.int32)
        out.append((np.concatenate(ids) if ids else empty, np.concatenate(labels) if labels else empty, lengths))
    return out


def write(sides: list[Side], dest: Destination, fingerprint: str) -> dict:
    media = {name: null_feature() for name in MEDIA}
    if not sides[0].manifest.pairs:
        return write_sides(sides, dest, fingerprint, NAME, SPLITS, extra=media)
    schema = pa.schema([(c, pa.list_(pa.int32())) for c in PAIR_COLUMNS] + [(c, pa.null()) for c in MEDIA])
    features = {c: sequence_feature() for c in PAIR_COLUMNS} | media
    rows = {}
    for side in sides:
        split = SPLITS[side.name]
        data = DiskDataset(dest.path(split or "."), schema, features, fingerprint)
        for chunk in pair_chunks(side):
            arrays = []
            for flat_ids, flat_labels, lengths in pair_sides(chunk):
                arrays += [
                    list_column(flat_ids, lengths),
                    list_column(np.ones(len(flat_ids), np.int32), lengths),
                    list_column(flat_labels, lengths),
                ]
            arrays += [pa.nulls(len(chunk.prompt))] * len(MEDIA)
            data.write(pa.Table.from_arrays(arrays, schema=schema))
        data.close()
        rows[split or "train"] = data.rows
    if len(sides) > 1 or sides[0].name:
        write_dataset_dict(dest.path("."), [SPLITS[s.name] for s in sides])
    return {"rows": rows}
