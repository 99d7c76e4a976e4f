"""Megatron-Bridge / NeMo packed SFT: the packed Parquet layout ``GPTSFTPackedParquetDataset`` reads, from a packed build.

One row per packed row of the build (its packing kept, padding dropped), columns:

* ``input_ids`` (``list<int32>``): the row's conversations one after another;
* ``seq_start_id`` (``list<int32>``): where each conversation starts (the first is 0);
* ``loss_mask`` (``list<int8>``): **shifted**: ``loss_mask[t]`` is 1 when the token at ``t + 1`` of the same
  conversation is trained (padprep's label there is not -100), as NeMo's packing writes it (its mask "rolled by
  1 to align with labels"); the last position of each conversation is 0.

Megatron's packed collator (``GPTSFTPackedDataset.collate_fn``, which the Parquet dataset inherits) cuts each
conversation into tokens ``[s, e-1)`` and labels ``[s+1, e)`` with ``loss_mask[s:e-1]``, so it trains exactly
padprep's positions, except one rule of its own: a position whose input token is eos is never trained
(``loss_mask[tokens == eos_id] = 0``). A build that trains a token right after an eos token would lose it
there, so it is refused in one line; finding eos needs the build's tokenizer (as recorded in the manifest,
fingerprint checked).

``DEST/train.idx.parquet`` (``DEST/validation.idx.parquet`` for a recipe's eval side) and
``DEST/pack_metadata.json``, the list of per-file packing metadata its ``pad_cu_seqlens`` option reads
(``dataset_max_seqlen``, ``max_samples_per_bin``, ``min_packed_seqlen``, ``pack_size``, ...), train first.
An unpacked build is refused (build with ``--pack --max-length N``).
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from padprep.errors import EXIT_USAGE
from padprep.layout.shards import int32_array
from padprep.output.export.dest import Destination
from padprep.output.export.hfdisk import list_column
from padprep.output.export.source import ExportError, Side, chunks, refuse_weights
from padprep.schema import IGNORE_INDEX

NAME = "megatron-packed"
SPLITS = {"": "train", "train": "train", "eval": "validation"}
ROW_GROUP = 500  # rows per Parquet row group, as Megatron-Bridge's writer
SCHEMA = pa.schema(
    [("input_ids", pa.list_(pa.int32())), ("loss_mask", pa.list_(pa.int8())), ("seq_start_id", pa.list_(pa.int32()))]
)


def eos_id(side: Side) -> int:
    """The eos id of the build's tokenizer, loaded from where the manifest says, its fingerprint checked."""
    from padprep.chat.tokenizer import TokenizerError, load_tokenizer

    recorded = side.manifest.tokenizer
    source, eos = recorded.get("source"), (recorded.get("special_tokens") or {}).get("eos_token")
    why = (
        f"{NAME} needs the build's eos id (Megatron's packed collator never trains a position whose input is eos, "
        "which the export checks)"
    )
    if not source or not eos:
        raise ExportError(f"{side.path}: {why}, and its manifest names no tokenizer with an eos token", EXIT_USAGE)
    try:
        bundle = load_tokenizer(str(source))
    except TokenizerError as exc:
        raise ExportError(f"{side.path}: {why}; its tokenizer {source} cannot be loaded here ({exc})", EXIT_USAGE) from None
    if bundle.fingerprint != recorded.get("fingerprint"):
        raise ExportError(
            f"{side.path}: {why}; the tokenizer at {source} is not the one the build used (fingerprint)", EXIT_USAGE
        )
    found = bundle.tokenizer.token_to_id(eos)
    if found is None:
        raise ExportError(f"{side.path}: {why}; eos {eos!r} is not in the tokenizer at {source}", EXIT_USAGE)
    return found


def packed_rows(chunk, eos: int) -> tuple[pa.Table, dict]:
    """A packed shard's rows as Megatron's packed columns, and their packing figures.

    Raises:
        ExportError: a trained token right after an eos token, which Megatron would not train.
    """
    ids, labels, lengths = chunk.ids, chunk.labels, chunk.lengths
    starts = np.concatenate(([0], np.cumsum(lengths, dtype=np.int64)))[:-1]
    trained = labels != IGNORE_INDEX
    mask = np.zeros(len(ids), np.int8)
    mask[:-1] = trained[1:]
    ends = starts + lengths - 1
    mask[ends] = 0  # the last position of each conversation predicts nothing of it
    after_eos = np.zeros(len(ids), bool)
    after_eos[1:] = ids[:-1] == eos
    after_eos[starts] = False  # a conversation's first token is predicted by none of its own
    lost = int((trained & after_eos).sum())
    if lost:
        raise ExportError(
            f"{lost} trained tokens follow an eos token, which Megatron's packed collator never trains "
            "(loss_mask[tokens == eos_id] = 0): exporting would drop them silently",
            EXIT_USAGE,
        )
    row_starts = np.concatenate(([0], np.cumsum(chunk.per_row, dtype=np.int64)))
    row_tokens = np.add.reduceat(lengths, row_starts[:-1]) if len(lengths) else np.zeros(0, np.int64)
    within = starts - np.repeat(np.concatenate(([0], np.cumsum(row_tokens)))[:-1], chunk.per_row)
    table = pa.Table.from_arrays(
        [
            list_column(ids, row_tokens),
            pa.ListArray.from_arrays(int32_array(np.concatenate(([0], np.cumsum(row_tokens)))), pa.array(mask, pa.int8())),
            list_column(within.astype(np.int32), chunk.per_row),
        ],
        schema=SCHEMA,
    )
    figures = {
        "max_seqlen": int(lengths.max(initial=0)),
        "max_per_row": int(chunk.per_row.max(initial=0)),
        "min_row": int(row_tokens.min(initial=1 << 62)),
        "rows": len(row_tokens),
        "sequences": len(lengths),
        "tokens": int(row_tokens.sum()),
    }
    return table, figures


def write(sides: list[Side], dest: Destination, fingerprint: str) -> dict:
    for side in sides:
        refuse_weights(side, NAME)
        if side.manifest.pairs:
            raise ExportError(f"{side.path}: a preference-pair build; {NAME} holds SFT rows", EXIT_USAGE)
        if not side.manifest.packed:
            raise ExportError(
                f"{side.path}: not a packed build; {NAME} keeps padprep's packing: build it with --pack --max-length N",
                EXIT_USAGE,
            )
    eos = eos_id(sides[0])
    rows, metadata = {}, []
    for side in sides:
        split = SPLITS[side.name]
        pack_size = int(side.manifest.options.get("max_length") or 0)
        totals = {"max_seqlen": 0, "max_per_row": 0, "min_row": 1 << 62, "rows": 0, "sequences": 0, "tokens": 0}
        with pq.ParquetWriter(str(dest.path(f"{split}.idx.parquet")), SCHEMA) as writer:
            for chunk in chunks(side):
                table, figures = packed_rows(chunk, eos)
                writer.write_table(table, row_group_size=ROW_GROUP)
                for key in ("max_seqlen", "max_per_row"):
                    totals[key] = max(totals[key], figures[key])
                totals["min_row"] = min(totals["min_row"], figures["min_row"])
                for key in ("rows", "sequences", "tokens"):
                    totals[key] += figures[key]
        rows[split] = totals["rows"]
        metadata.append(
            {
                "dataset_max_seqlen": totals["max_seqlen"],
                "max_samples_per_bin": totals["max_per_row"],
                "packing_factor": round(totals["sequences"] / max(totals["rows"], 1), 2),
                "packing_efficiency": round(100 * totals["tokens"] / max(totals["rows"] * pack_size, 1), 2),
                "pack_size": pack_size,
                "min_packed_seqlen": totals["min_row"] if totals["rows"] else 0,
            }
        )
    dest.path("pack_metadata.json").write_text(json.dumps(metadata) + "\n", encoding="utf-8")
    return {"rows": rows}
