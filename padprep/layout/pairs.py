"""Pass 2 of a preference build: the spilled pairs -> unpadded shards of TRL's columns, by length bucket.

A pair's length is its prompt and its longer side (what a preference collator pads both sequences
to, less the shorter one's difference); pairs are routed to one file per bucket (input order kept),
then each bucket is cut into shards of at most ``shard_tokens // bucket`` pairs, shuffled within
the shard with ``--seed``. Shards are Arrow IPC streams with ``prompt_ids``, ``chosen_ids`` and
``rejected_ids`` as ``list<int32>``: what ``datasets`` memory-maps and ``DPOTrainer`` trains on.
No torch: nothing is padded.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import pyarrow as pa

from padprep.layout.bucket import assign
from padprep.layout.pass_two import ShardOptions
from padprep.layout.shards import WrittenShard, int32_array, int32_values, write_table
from padprep.layout.spill import PAIR_SCHEMA, SPILL, spill_batches


def pair_lengths(batch: pa.RecordBatch | pa.Table) -> np.ndarray:
    """Per pair: prompt + the longer side, in tokens."""
    prompt, chosen, rejected = (_lengths(batch.column(i)) for i in range(3))
    return prompt + np.maximum(chosen, rejected)


def pass_two_pairs(workdir: Path, bounds: list[int], options: ShardOptions) -> list[WrittenShard]:
    """Route the spilled pairs into buckets, then write each bucket's shards; the spill is left for the caller."""
    routed = _route(workdir, bounds)
    shards: list[WrittenShard] = []
    for bucket in sorted(routed):
        shards += _write_bucket(workdir, routed[bucket], bucket, options)
        routed[bucket].unlink()
    return shards


def _route(workdir: Path, bounds: list[int]) -> dict[int, Path]:
    paths: dict[int, Path] = {}
    with contextlib.ExitStack() as stack:
        writers = {}
        for batch in spill_batches(workdir / SPILL):
            which = assign(pair_lengths(batch), bounds)
            for k in np.unique(which):
                bucket = bounds[int(k)]
                if bucket not in writers:
                    paths[bucket] = workdir / f"route-{bucket:06d}.arrow"
                    sink = stack.enter_context(pa.OSFile(str(paths[bucket]), "wb"))
                    writers[bucket] = stack.enter_context(pa.ipc.new_stream(sink, PAIR_SCHEMA))
                writers[bucket].write_batch(batch.take(int32_array(np.flatnonzero(which == k))))
    return paths


def _write_bucket(workdir: Path, path: Path, bucket: int, options: ShardOptions) -> list[WrittenShard]:
    per_shard = max(1, options.shard_tokens // bucket)
    shards: list[WrittenShard] = []
    pending: list[pa.RecordBatch] = []
    count = 0
    with pa.OSFile(str(path), "rb") as source:
        for batch in pa.ipc.open_stream(source):
            pending.append(batch)
            count += batch.num_rows
            while count >= per_shard:
                table = pa.Table.from_batches(pending, schema=PAIR_SCHEMA)
                shards.append(_flush(workdir, table.slice(0, per_shard), bucket, options, len(shards)))
                rest = table.slice(per_shard)
                pending, count = rest.to_batches(), rest.num_rows
    if count:
        shards.append(_flush(workdir, pa.Table.from_batches(pending, schema=PAIR_SCHEMA), bucket, options, len(shards)))
    return shards


def _flush(workdir: Path, table: pa.Table, bucket: int, options: ShardOptions, serial: int) -> WrittenShard:
    table = table.combine_chunks()
    if options.seed is not None:
        order = np.random.default_rng(options.seed * 1_000_003 + serial).permutation(table.num_rows)
        table = table.take(int32_array(order)).combine_chunks()
    name = f"bucket-{bucket:06d}-{serial:05d}.arrow"
    digest = write_table(workdir / name, table)
    prompt, chosen, rejected = (int(_lengths(table.column(i)).sum()) for i in range(3))
    return WrittenShard(
        file=name,
        bucket=bucket,
        rows=table.num_rows,
        seq_len=bucket,
        real_tokens=prompt + chosen + rejected,
        pad_tokens=0,
        trained_tokens=chosen + rejected,
        bytes=(workdir / name).stat().st_size,
        sha256=digest,
    )


def _lengths(column) -> np.ndarray:
    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    offsets = int32_values(column.offsets).astype(np.int64)
    return np.diff(offsets)
