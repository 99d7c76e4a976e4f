"""Pass 2: the spilled rows (``spill``) -> padded shards.

``pass_two`` routes the spilled rows into one file per bucket
(input order kept), then pads (``pad``, torch) and writes (``shards``) each bucket's shards
from its file; with ``--pack`` (``pass_two_packed``) each row goes to the file of the shard its packed
row lies in, and each shard's rows are put in placement order, packed, padded and written. Memory
holds one batch or one shard, whatever the input size.

This module imports neither the template nor the tokenizer side of padprep: the pad process
(``run.padproc``) loads it with torch while pass 1 runs.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import pyarrow as pa

from padprep.config import BuildConfig, PaddingSide
from padprep.layout.bucket import assign
from padprep.layout.pack import Placement
from padprep.layout.shards import (
    WrittenShard,
    bucket_shard_name,
    float32_values,
    int32_array,
    int32_values,
    int64_values,
    log_shard,
    sources_name,
    write_shard,
    write_sources,
)
from padprep.layout.spill import SCHEMA, spill_batches, spill_bytes, stream_batches
from padprep.schema import IGNORE_INDEX, SOURCE_INPUT, SOURCE_LINE


@dataclass(frozen=True)
class ShardOptions:
    """What pass 2 reads of a build's options (it travels to the pad process)."""

    shard_tokens: int  # padded tokens per shard, at most
    padding_side: PaddingSide
    seed: int | None  # rows shuffled within each shard with this seed (None: input order)
    # A resumed build (run/checkpoint.py): shards already written whole, by file name, are not written
    # again; each shard written is logged here once durable.
    done: dict[str, WrittenShard] = field(default_factory=dict)
    log: str | None = None

    @classmethod
    def of(cls, cfg: BuildConfig, done: dict[str, WrittenShard] | None = None, log: Path | None = None) -> "ShardOptions":
        return cls(cfg.shard_tokens, cfg.padding_side, cfg.seed, done or {}, str(log) if log else None)

    def written(self, shard: WrittenShard, workdir: Path) -> WrittenShard:
        """A shard just written: made durable and logged (when the build keeps checkpoints)."""
        if self.log is not None:
            log_shard(Path(self.log), shard, Path(workdir) / shard.file)
        return shard


def pass_two(
    workdir: Path, bounds: list[int], pad_id: int, options: ShardOptions, weighted: bool, helper: bool = False
) -> list[WrittenShard]:
    """Route the spilled rows into one file per bucket (input order kept), then pad and write each
    bucket's shards from its files. Memory holds one batch or one shard, whatever the input size.

    With ``helper`` (only where no thread pool has started: ``forking.fork_call``) and a spill worth it,
    a forked helper routes the second half of the spill and then pads and writes about half of the
    buckets' tokens while this process does the rest: the same files, on two cores.
    """
    parts = 2 if helper and _helper_pays(workdir) else 1
    if parts == 1:
        routed = [route_rows(workdir, bounds)]
    else:
        from padprep.forking import fork_call

        routed = _with_helper(fork_call(route_rows, workdir, bounds, 1, 2), route_rows, workdir, bounds, 0, 2)
    plan = _bucket_plan(routed, options)
    if parts == 1:
        shards = _write_buckets(workdir, plan, pad_id, options, weighted)
    else:
        _one_torch_thread()
        mine, theirs = _halves(plan)
        halves = _with_helper(
            fork_call(_write_buckets, workdir, theirs, pad_id, options, weighted),
            _write_buckets,
            workdir,
            mine,
            pad_id,
            options,
            weighted,
        )
        shards = halves[0] + halves[1]
    return sorted(shards, key=lambda s: (s.seq_len, s.file))


def _with_helper(helper: Callable[[], Any], fn: Callable[..., Any], *args: Any) -> list:
    """``[fn(*args), the helper's result]``; the helper is waited for even when ``fn`` fails (it writes
    into the output directory, which the build then removes)."""
    try:
        mine = fn(*args)
    except BaseException:
        with contextlib.suppress(BaseException):
            helper()
        raise
    return [mine, helper()]


# Below this much spill a helper's fork and start cost more than it saves.
_HELPER_SPILL_BYTES = 8 << 20


def _helper_pays(workdir: Path) -> bool:
    """A second core, and a spill big enough that a helper saves more than its fork costs."""
    return len(os.sched_getaffinity(0)) > 1 and spill_bytes(workdir) >= _HELPER_SPILL_BYTES


def _one_torch_thread() -> None:
    """Before forking the helper that pads: two processes on two cores, so torch's own threads would spin
    against the other process's. (torch is imported: the helper path runs in the pad process.)"""
    import torch

    torch.set_num_threads(1)


def route_rows(
    workdir: Path,
    bounds: list[int],
    part: int = 0,
    parts: int = 1,
    lengths_of: Callable[[pa.RecordBatch], np.ndarray] | None = None,
    schema: pa.Schema = SCHEMA,
) -> dict[int, tuple[Path, int]]:
    """One stream file per bucket that received rows of this part of the spill, and its row count.
    ``lengths_of`` gives a batch's row lengths (default: its first column's lists; pairs measure their own)."""
    paths: dict[int, Path] = {}
    rows: dict[int, int] = {}
    with contextlib.ExitStack() as stack:
        writers: dict[int, pa.ipc.RecordBatchStreamWriter] = {}
        for batch in spill_batches(workdir, part, parts):
            which = assign(lengths_of(batch) if lengths_of else list_lengths(batch.column(0)), bounds)
            for k in np.unique(which):
                bucket = bounds[int(k)]
                if bucket not in writers:
                    paths[bucket] = workdir / f"route-{bucket:06d}-{part}.arrow"
                    sink = stack.enter_context(pa.OSFile(str(paths[bucket]), "wb"))
                    writers[bucket] = stack.enter_context(pa.ipc.new_stream(sink, schema))
                take = np.flatnonzero(which == k)
                writers[bucket].write_batch(batch.take(int32_array(take)))
                rows[bucket] = rows.get(bucket, 0) + len(take)
    return {bucket: (paths[bucket], rows[bucket]) for bucket in paths}


@dataclass(frozen=True)
class _BucketJob:
    bucket: int
    paths: list[Path]  # the bucket's route files, in spill order
    rows: int
    first_serial: int  # shards are numbered across buckets, in bucket order

    @property
    def tokens(self) -> int:
        return self.rows * self.bucket


def _bucket_plan(routed: list[dict[int, tuple[Path, int]]], options: ShardOptions) -> list[_BucketJob]:
    """Every bucket's route files (one per part of the spill) and the serial number of its first shard."""
    jobs, serial = [], 0
    for bucket in sorted(set().union(*routed)):
        parts = [part[bucket] for part in routed if bucket in part]
        rows = sum(n for _, n in parts)
        jobs.append(_BucketJob(bucket, [path for path, _ in parts], rows, serial))
        per_shard = max(1, options.shard_tokens // bucket)
        serial += -(-rows // per_shard)
    return jobs


def _halves(jobs: list[_BucketJob]) -> tuple[list[_BucketJob], list[_BucketJob]]:
    """Two lists of buckets with about the same padded tokens each (largest first to the lighter)."""
    halves: tuple[list[_BucketJob], list[_BucketJob]] = ([], [])
    load = [0, 0]
    for job in sorted(jobs, key=lambda j: -j.tokens):
        side = 0 if load[0] <= load[1] else 1
        halves[side].append(job)
        load[side] += job.tokens
    return halves


def _write_buckets(
    workdir: Path, jobs: list[_BucketJob], pad_id: int, options: ShardOptions, weighted: bool
) -> list[WrittenShard]:
    shards: list[dict] = []
    for job in jobs:
        shards += _write_bucket(workdir, job, pad_id, options, weighted)
        for path in job.paths:
            path.unlink()
    return shards


def _write_bucket(workdir: Path, job: _BucketJob, pad_id: int, options: ShardOptions, weighted: bool) -> list[WrittenShard]:
    """Pad and write one bucket's rows, ``shard_tokens // bucket`` rows a shard."""
    shards: list[WrittenShard] = []
    for table in shard_tables(job.paths, max(1, options.shard_tokens // job.bucket), SCHEMA):
        shards.append(write_bucket_shard(workdir, table, job.bucket, pad_id, options, job.first_serial + len(shards), weighted))
    return shards


def shard_tables(paths: list[Path], per_shard: int, schema: pa.Schema) -> Iterator[pa.Table]:
    """The rows of these stream files, in order, as tables of ``per_shard`` rows (the last one: the rest).
    Memory holds one shard's rows and one batch."""
    pending: list[pa.RecordBatch] = []
    count = 0
    with contextlib.ExitStack() as stack:
        for path in paths:
            for batch in pa.ipc.open_stream(stack.enter_context(pa.OSFile(str(path), "rb"))):
                pending.append(batch)
                count += batch.num_rows
                while count >= per_shard:
                    table = pa.Table.from_batches(pending, schema=schema)
                    yield table.slice(0, per_shard)
                    rest = table.slice(per_shard)
                    pending, count = rest.to_batches(), rest.num_rows
                    pa.default_memory_pool().release_unused()  # a shard's buffers go back to the OS, not to a cache
    if count:
        yield pa.Table.from_batches(pending, schema=schema)


def list_lengths(column: pa.ListArray | pa.ChunkedArray) -> np.ndarray:
    """Each list's length, from the offsets (no per-row work)."""
    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    return np.diff(int32_values(column.offsets))


def write_bucket_shard(
    workdir: Path, take: pa.Table, bucket: int, pad_id: int, options: ShardOptions, serial: int, weighted: bool
) -> WrittenShard:
    """Pad and write these rows of a bucket as shard number ``serial`` (also on a cluster's worker: ``run/cluster.py``)."""
    name = bucket_shard_name(bucket, serial)
    if name in options.done:  # written whole by the run this one resumes
        return options.done[name]
    from padprep.layout.pad import pad_shard, shuffle_rows  # imports torch (over a second): not needed by an up-to-date build

    rows = take.num_rows
    ids_col, labels_col = take.column(0).combine_chunks(), take.column(1).combine_chunks()
    lengths = list_lengths(ids_col)
    flat_ids, flat_labels = int32_values(ids_col.flatten()), int32_values(labels_col.flatten())
    weights = _flat_weights(take, flat_labels, lengths) if weighted else None
    padded = pad_shard(flat_ids, flat_labels, lengths, bucket, pad_id, options.padding_side, weights, spilled_sources(take))
    if options.seed is not None:
        padded = shuffle_rows(padded, options.seed * 1_000_003 + serial)
    digest = write_shard(workdir / name, padded)
    real = int(lengths.sum())
    return options.written(
        WrittenShard(
            file=name,
            bucket=bucket,
            rows=rows,
            seq_len=bucket,
            real_tokens=real,
            pad_tokens=rows * bucket - real,
            trained_tokens=int(np.count_nonzero(flat_labels != IGNORE_INDEX)),
            bytes=(workdir / name).stat().st_size,
            sha256=digest,
            **written_sources(workdir, name, padded.sources),
        ),
        workdir,
    )


def spilled_sources(take: pa.Table) -> np.ndarray:
    """The rows' sources as spilled (input index, line), one row of the result per row of ``take``."""
    inputs = int32_values(take.column(SOURCE_INPUT).combine_chunks())
    lines = int64_values(take.column(SOURCE_LINE).combine_chunks())
    return np.stack([inputs.astype(np.int64), lines], axis=1) if len(lines) else np.zeros((0, 2), np.int64)


def written_sources(workdir: Path, shard_file: str, sources: np.ndarray, seq_counts: np.ndarray | None = None) -> dict:
    """Write the shard's sidecar (``shards.write_sources``); its name and sha256, for the shard's entry."""
    name = sources_name(shard_file)
    return {"sources": name, "sources_sha256": write_sources(workdir / name, sources, seq_counts)}


def _flat_weights(take: pa.Table, flat_labels: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Every token's loss weight: as spilled where a row has them, else 1 where it trains and 0 elsewhere."""
    out = (flat_labels != IGNORE_INDEX).astype(np.float32)
    column = take.column(2).combine_chunks()
    if column.null_count == len(column):
        return out
    given = np.diff(int32_values(column.offsets)) > 0  # a null entry is empty; a row's weights never are
    out[np.repeat(given, lengths)] = float32_values(column.flatten())
    return out


# Files open at once while routing packed rows to their shards; more shards are routed in two steps.
_FANOUT = 64


def pass_two_packed(
    workdir: Path,
    placement: Placement,
    pad_id: int,
    options: ShardOptions,
    weighted: bool,
    batch_rows: list[int] | None = None,
    helper: bool = False,
) -> list[WrittenShard]:
    """Route the spilled rows into one file per shard (input order kept), then put each shard's rows
    in placement order, pack, pad and write it. Memory holds one batch or one shard.

    With ``helper`` (as for ``pass_two``) and ``batch_rows`` (rows in each spilled batch), a forked
    helper routes the second half of the spill, then packs, pads and writes the second half of the shards.
    """
    capacity = placement.capacity
    per_shard = max(1, options.shard_tokens // capacity)  # rows of ``capacity`` tokens per shard
    n_shards = -(-placement.bins // per_shard)
    shard_of_row = placement.bin_of // per_shard
    parts = 2 if helper and batch_rows and _helper_pays(workdir) else 1
    if parts == 1:
        routed = [_scatter(spill_batches(workdir), shard_of_row, n_shards, workdir, "pack")]
    else:
        from padprep.forking import fork_call

        routed = _with_helper(
            fork_call(_scatter_part, workdir, shard_of_row, n_shards, batch_rows, 1),
            _scatter_part,
            workdir,
            shard_of_row,
            n_shards,
            batch_rows,
            0,
        )
    jobs = [[part[serial] for part in routed] for serial in range(n_shards)]  # each shard's files, spill order
    if parts == 1:
        return _write_packed(workdir, jobs, 0, placement, per_shard, pad_id, options, weighted)
    _one_torch_thread()
    half = n_shards // 2
    return sum(
        _with_helper(
            fork_call(_write_packed, workdir, jobs[half:], half, placement, per_shard, pad_id, options, weighted),
            _write_packed,
            workdir,
            jobs[:half],
            0,
            placement,
            per_shard,
            pad_id,
            options,
            weighted,
        ),
        [],
    )


def _scatter_part(workdir: Path, shard_of_row: np.ndarray, n_shards: int, batch_rows: list[int], part: int) -> list[Path]:
    """``_scatter`` of one half of the spill's batches (``batch_rows``: rows in each batch)."""
    n = len(batch_rows)
    first, last = n * part // 2, n * (part + 1) // 2
    rows = int(sum(batch_rows[:first])), int(sum(batch_rows[:last]))
    return _scatter(spill_batches(workdir, part, 2), shard_of_row[rows[0] : rows[1]], n_shards, workdir, f"pack{part}")


def _write_packed(
    workdir: Path,
    jobs: list[list[Path]],
    first_serial: int,
    placement: Placement,
    per_shard: int,
    pad_id: int,
    options: ShardOptions,
    weighted: bool,
) -> list[WrittenShard]:
    """Pack, pad and write the shards numbered from ``first_serial`` on, each from its files."""
    shards: list[dict] = []
    for serial, paths in enumerate(jobs, first_serial):
        first, last = serial * per_shard, min((serial + 1) * per_shard, placement.bins)
        final = placement.order[placement.starts[first] : placement.starts[last]]  # spill indices, placement order
        tables = []
        for path in paths:
            with pa.OSFile(str(path), "rb") as source:
                tables.append(pa.ipc.open_stream(source).read_all())
        table = pa.concat_tables(tables)  # this shard's rows, in spill order
        table = table.take(int32_array(np.searchsorted(np.sort(final), final)))
        seq_counts = np.diff(placement.starts[first : last + 1])
        shards.append(_flush_packed(workdir, table, seq_counts, placement.capacity, pad_id, options, serial, weighted))
        for path in paths:
            path.unlink()
        del table, tables
        pa.default_memory_pool().release_unused()
    return shards


def _scatter(batches: Iterable[pa.RecordBatch], dest: np.ndarray, n_dest: int, workdir: Path, name: str) -> list[Path]:
    """Split a sequence of row batches into one file per destination (``dest[i]``: row ``i``'s), each
    in the batches' order. At most ``_FANOUT`` files are open: with more destinations, rows go to
    groups of destinations first and each group file is split again."""
    if n_dest <= _FANOUT:
        return _split(batches, dest, [workdir / f"{name}-{d:05d}.arrow" for d in range(n_dest)], name)
    per_group = -(-n_dest // _FANOUT)
    group = dest // per_group
    groups = _split(batches, group, [workdir / f"{name}-{g}.arrow" for g in range(-(-n_dest // per_group))], name)
    paths: list[Path] = []
    for g, path in enumerate(groups):
        first = g * per_group
        paths += _scatter(stream_batches(path), dest[group == g] - first, min(per_group, n_dest - first), workdir, f"{name}-{g}")
        path.unlink()
    return paths


def _split(batches: Iterable[pa.RecordBatch], dest: np.ndarray, paths: list[Path], name: str) -> list[Path]:
    """One pass over ``batches``: row ``i`` goes to ``paths[dest[i]]`` (every path is written, rows in order)."""
    with contextlib.ExitStack() as stack:
        writers = [stack.enter_context(pa.ipc.new_stream(stack.enter_context(pa.OSFile(str(p), "wb")), SCHEMA)) for p in paths]
        done = 0
        for batch in batches:
            which = dest[done : done + batch.num_rows]
            done += batch.num_rows
            for k in np.unique(which):
                writers[int(k)].write_batch(batch.take(int32_array(np.flatnonzero(which == k))))
    if done != len(dest):
        raise RuntimeError(f"internal: the rows routed to {name} are {done}, the placement's {len(dest)}")
    return paths


def _flush_packed(
    workdir: Path,
    take: pa.Table,
    seq_counts: np.ndarray,
    seq_len: int,
    pad_id: int,
    options: ShardOptions,
    serial: int,
    weighted: bool,
) -> WrittenShard:
    """Pack these sequences (in order, ``seq_counts[r]`` to row ``r``), pad and write them as one shard."""
    name = f"packed-{seq_len:06d}-{serial:05d}.arrow"
    if name in options.done:  # written whole by the run this one resumes
        return options.done[name]
    from padprep.layout.pad import pad_packed_shard, shuffle_rows  # imports torch: not needed by an up-to-date build

    ids_col, labels_col = take.column(0).combine_chunks(), take.column(1).combine_chunks()
    seq_lens = list_lengths(ids_col)
    flat_ids, flat_labels = int32_values(ids_col.flatten()), int32_values(labels_col.flatten())
    weights = _flat_weights(take, flat_labels, seq_lens) if weighted else None
    padded = pad_packed_shard(flat_ids, flat_labels, seq_lens, seq_counts, seq_len, pad_id, weights, spilled_sources(take))
    if options.seed is not None:
        padded = shuffle_rows(padded, options.seed * 1_000_003 + serial)
    digest = write_shard(workdir / name, padded)
    rows, real = len(seq_counts), int(seq_lens.sum())
    return options.written(
        WrittenShard(
            file=name,
            bucket=seq_len,
            rows=rows,
            seq_len=seq_len,
            sequences=len(seq_lens),
            real_tokens=real,
            pad_tokens=rows * seq_len - real,
            fill=real / (rows * seq_len),
            trained_tokens=int((padded.labels != IGNORE_INDEX).sum()),  # each sequence's first label now -100
            bytes=(workdir / name).stat().st_size,
            sha256=digest,
            **written_sources(workdir, name, padded.sources, padded.seq_counts),
        ),
        workdir,
    )
