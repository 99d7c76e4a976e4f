"""Pass 2 of a preference build: the spilled pairs -> unpadded shards of TRL's columns, by length bucket.

A pair's length is its prompt and its longer side (what a preference collator pads both sequences
to, less the shorter one's difference); pairs are routed to one file per bucket (input order kept),
then each bucket is cut into shards of at most ``shard_tokens // bucket`` pairs, shuffled within
the shard with ``--seed``. Shards are Arrow IPC streams with ``prompt_ids``, ``chosen_ids`` and
``rejected_ids`` as ``list<int32>``: what ``datasets`` memory-maps and ``DPOTrainer`` trains on.

With ``--padded-pairs`` (for trainers that take padded pairs) a shard holds instead, per side, the
prompt and its completion as one row padded to the bucket (``pad.pad_shard``, by position):
``chosen_input_ids`` / ``chosen_attention_mask`` / ``chosen_labels`` and the same for ``rejected_``,
``fixed_size_list<int32>[bucket]``, labels -100 on the prompt and the padding.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from padprep.layout.pass_two import ShardOptions, list_lengths, route_rows, shard_tables, spilled_sources, written_sources
from padprep.layout.shards import WrittenShard, bucket_shard_name, int32_array, int32_values, write_table
from padprep.layout.spill import PAIR_SCHEMA
from padprep.schema import IGNORE_INDEX, PAIR_COLUMNS


def pair_lengths(batch: pa.RecordBatch | pa.Table) -> np.ndarray:
    """Per pair: prompt + the longer side, in tokens."""
    prompt, chosen, rejected = (list_lengths(batch.column(i)) for i in range(3))
    return prompt + np.maximum(chosen, rejected)


def pass_two_pairs(workdir: Path, bounds: list[int], options: ShardOptions, pad_id: int | None = None) -> list[WrittenShard]:
    """Route the spilled pairs into buckets, then write each bucket's shards; the spill is left for the caller.
    With ``pad_id`` each side is written as a padded row (``--padded-pairs``)."""
    routed = route_rows(workdir, bounds, lengths_of=pair_lengths, schema=PAIR_SCHEMA)
    shards: list[WrittenShard] = []
    for bucket in sorted(routed):
        path, _ = routed[bucket]
        shards += _write_bucket(workdir, path, bucket, options, pad_id)
        path.unlink()
    return shards


def _write_bucket(workdir: Path, path: Path, bucket: int, options: ShardOptions, pad_id: int | None) -> list[WrittenShard]:
    shards: list[WrittenShard] = []
    for table in shard_tables([path], max(1, options.shard_tokens // bucket), PAIR_SCHEMA):
        shards.append(write_pair_shard(workdir, table, bucket, options, len(shards), pad_id))
    return shards


def write_pair_shard(
    workdir: Path, table: pa.Table, bucket: int, options: ShardOptions, serial: int, pad_id: int | None
) -> WrittenShard:
    """These pairs of a bucket as its shard number ``serial`` (also on a cluster's worker: ``run/cluster.py``)."""
    table = table.combine_chunks()
    if options.seed is not None:
        order = np.random.default_rng(options.seed * 1_000_003 + serial).permutation(table.num_rows)
        table = table.take(int32_array(order)).combine_chunks()
    name = bucket_shard_name(bucket, serial)
    if name in options.done:  # written whole by the run this one resumes
        return options.done[name]
    prompt, chosen, rejected = (int(list_lengths(table.column(i)).sum()) for i in range(3))
    sources = spilled_sources(table)
    table = table.select(list(PAIR_COLUMNS))  # the shard: TRL's columns; the sources go to its sidecar
    if pad_id is None:
        digest, real, pad = write_table(workdir / name, table), prompt + chosen + rejected, 0
    else:
        digest = write_table(workdir / name, _padded(table, bucket, pad_id, options.padding_side))
        real = 2 * prompt + chosen + rejected
        pad = 2 * table.num_rows * bucket - real
    return options.written(
        WrittenShard(
            file=name,
            bucket=bucket,
            rows=table.num_rows,
            seq_len=bucket,
            real_tokens=real,
            pad_tokens=pad,
            trained_tokens=chosen + rejected,
            bytes=(workdir / name).stat().st_size,
            sha256=digest,
            **written_sources(workdir, name, sources),
        ),
        workdir,
    )


def _padded(table: pa.Table, seq_len: int, pad_id: int, side) -> pa.Table:
    """Each side as prompt + completion padded to ``seq_len``: input_ids, attention_mask, labels per side."""
    from padprep.layout.pad import pad_shard  # torch: only for this layout

    prompts = _lists(table.column(0))
    arrays, fields = [], []
    for k, name in ((1, "chosen"), (2, "rejected")):
        sides = _lists(table.column(k))
        ids = np.concatenate([np.concatenate([p, c]) for p, c in zip(prompts, sides)]) if sides else np.zeros(0, np.int32)
        labels = [np.concatenate([np.full(len(p), IGNORE_INDEX, np.int32), c]) for p, c in zip(prompts, sides)]
        lengths = np.array([len(p) + len(c) for p, c in zip(prompts, sides)], np.int64)
        padded = pad_shard(ids, np.concatenate(labels) if labels else ids, lengths, seq_len, pad_id, side)
        for column, tensor in (
            ("input_ids", padded.input_ids),
            ("attention_mask", padded.attention_mask),
            ("labels", padded.labels),
        ):
            arrays.append(pa.FixedSizeListArray.from_arrays(int32_array(tensor.numpy().reshape(-1)), seq_len))
            fields.append(pa.field(f"{name}_{column}", pa.list_(pa.int32(), seq_len), nullable=False))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def _lists(column) -> list[np.ndarray]:
    """A list column's rows as int32 views (``offsets`` index ``values`` as a whole, slice or not)."""
    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    offsets = int32_values(column.offsets)
    values = int32_values(column.values) if len(column.values) else np.zeros(0, np.int32)
    return [values[int(a) : int(b)] for a, b in zip(offsets[:-1], offsets[1:])]
