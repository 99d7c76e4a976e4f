"""Pass 2 on the Ray cluster (``--engine ray``): the driver plans and commits, the workers route and write.

The spill (pass 1's unpadded rows) is where every node reads it: pass 1's tasks wrote their pieces there
themselves (``ray_engine``): the partial output of a local ``--output`` (a folder every node mounts, on a real
cluster), or beside an output URL (``.OUT.padprep-partial/``). Then:

1. **Route**: one task per group of consecutive spill parts (~``ROUTE_GROUP_BYTES``) puts their rows into one
   file per bucket (``route-GROUP-BUCKET.arrow``, rows in spill order) beside the spill, and returns each file's
   row count (a piece cut from a JSON Lines file gets its line offset here).
2. **Plan**: from those counts alone (groups x buckets numbers, never the rows) the driver cuts every bucket's
   rows, in spill order, into shards of ``shard_tokens // bucket`` rows, numbered as the local engine numbers
   them: each shard is a list of (route file, first row, last row). So the shards are the local engine's bytes.
   The plan is frozen beside the output (``plan.json``, with the build key): a resumed build uses it again.
3. **Write**: one task per shard reads its slices, pads and writes the shard and its sidecar in a local
   temporary folder, puts both at the destination (the partial output, or the output URL itself), then
   writes a **receipt** (the shard's entry and the build key) beside the output. A task that finds a receipt
   of this build whose shard is at the destination with its size and sha256 writes nothing: a build run
   again after a failure, or a task Ray runs again after its node died, redoes only what is missing.

A worker node that dies takes its running tasks with it; Ray runs them again on the nodes left
(``RETRIES``), and they find the receipts of what was finished. Bucketed builds are written here, SFT rows and
preference pairs; ``--pack`` is written by the driver (``layout/pass_two.py``): a packed row draws from anywhere
in the spill, so every piece would feed every shard.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import pyarrow as pa
import pyarrow.compute as pc

from padprep.errors import EXIT_USAGE, BuildFailed
from padprep.failpoints import pause_point
from padprep.layout.pairs import pair_lengths, write_pair_shard
from padprep.layout.pass_two import ShardOptions, route_rows, write_bucket_shard
from padprep.layout.shards import WrittenShard, bucket_shard_name, file_sha256, sources_name
from padprep.layout.spill import PAIR_SCHEMA, SCHEMA, SPILL
from padprep.output import location
from padprep.run.ray_engine import RETRIES, import_ray
from padprep.schema import SOURCE_LINE

ROUTE = "route-{:05d}-{:06d}.arrow"  # group of spill parts, bucket
ROUTE_GROUP_BYTES = 256 << 20  # spill bytes a route task reads (it streams them: memory holds a batch)
PROGRESS_SECONDS = 10  # how often the driver says how far pass 2 is
_NOT_SHARED = (
    f"not seen on this node ({socket.gethostname()}): on a cluster, a local --output must be a folder every node "
    "mounts at the same path (NFS, a shared volume); use one, or an output URL (--output s3://bucket/prefix)"
)


@dataclass(frozen=True)
class Slice:
    """Rows ``[start, stop)`` of one route file."""

    path: str
    start: int
    stop: int


@dataclass(frozen=True)
class ShardJob:
    """One shard of the plan: its bucket, its number, and the slices of route files that hold its rows, in order."""

    bucket: int
    serial: int
    slices: tuple[Slice, ...]


@dataclass(frozen=True)
class Where:
    """Where pass 2 on the cluster reads and writes (paths or URLs every node reaches)."""

    spill: list[tuple[str, int, int]]  # the spill's parts, in order: where, lines to add to its rows' lines, bytes
    work: str  # route files
    dest: str  # the shards and their sidecars
    receipts: str  # one receipt per written shard
    # told every file name the shard tasks will write at ``dest``, before they start (an output URL records them
    # beside itself: a killed build's files are then known as padprep's: ``publish.claim``)
    claim: Callable[[list[str]], object] | None = None


def pass_two_on_cluster(
    where: Where,
    bounds: list[int],
    pad_id: int | None,
    options: ShardOptions,
    weighted: bool,
    key: str | None,
    log: Callable[[str], None],
    pairs: bool = False,
) -> list[WrittenShard]:
    """Route on the cluster, plan here, write on the cluster (see the module); the shards written, as ``pass_two``
    returns them."""
    ray = import_ray()
    plan_at = location.join(where.receipts, "plan.json")
    plan = _frozen_plan(plan_at, key)
    if plan is None:
        plan = plan_shards(_route(ray, where, bounds, pairs), options.shard_tokens, per_bucket=pairs)
        location.write_bytes(plan_at, json.dumps(_plan_json(plan, key)).encode())
    else:
        log(f"pass 2: the shard plan of the interrupted run ({plan_at}) and its route files are used again")
    if where.claim is not None:
        names = [bucket_shard_name(job.bucket, job.serial) for job in plan]
        where.claim(names + [sources_name(name) for name in names])
    options = dataclasses.replace(options, done={}, log=None)  # the receipts are this engine's checkpoints
    write = ray.remote(num_cpus=1, max_retries=RETRIES, retry_exceptions=False)(write_shard_task)
    refs = [write.remote(job, where.dest, where.receipts, pad_id, options, weighted, key, pairs) for job in plan]
    shards, reused, said = [], 0, time.monotonic()
    for shard, was_there in _gather(ray, refs):
        shards.append(shard)
        reused += was_there
        if time.monotonic() - said >= PROGRESS_SECONDS:
            log(f"pass 2: {len(shards):,} of {len(plan):,} shards written")
            said = time.monotonic()
    if reused:
        log(f"pass 2: {reused:,} of {len(plan):,} shards were written by an earlier run (receipts checked), not again")
    return sorted(shards, key=lambda s: (s.seq_len, s.file))


def _route(ray, where: Where, bounds: list[int], pairs: bool) -> list[dict[int, tuple[str, int]]]:
    """Each group of spill parts' route files (by bucket) and their row counts, in spill order."""
    route = ray.remote(num_cpus=1, max_retries=RETRIES, retry_exceptions=False)(route_segment_task)
    groups = route_groups(where.spill, ROUTE_GROUP_BYTES)
    refs = [route.remote(group, k, bounds, where.work, pairs) for k, group in enumerate(groups)]
    return list(_gather(ray, refs))


def route_groups(spill: list[tuple[str, int, int]], group_bytes: int) -> list[list[tuple[str, int]]]:
    """Consecutive spill parts, about ``group_bytes`` a group: one route task each, so that route files (and the
    plan's slices) number groups x buckets, not pieces x buckets (8 MiB pieces: 146,700 at a billion rows)."""
    groups: list[list[tuple[str, int]]] = []
    size = group_bytes
    for where, lines, n in spill:
        if size >= group_bytes:
            groups.append([])
            size = 0
        groups[-1].append((where, lines))
        size += n
    return groups


def _gather(ray, refs: list) -> Iterator:
    """The tasks' results in submission order; the first task error is raised as its cause (one line)."""
    for ref in refs:
        try:
            yield ray.get(ref)
        except ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            raise (cause if isinstance(cause, Exception) else exc) from None


def plan_shards(routed: list[dict[int, tuple[str, int]]], shard_tokens: int, per_bucket: bool = False) -> list[ShardJob]:
    """Every bucket's rows (the route files of segment after segment) cut into shards of ``shard_tokens // bucket``
    rows, numbered across buckets in bucket order (``per_bucket``: from 0 in each bucket, as pairs are):
    ``pass_two``'s (``pass_two_pairs``') shards, from the row counts alone."""
    jobs: list[ShardJob] = []
    serial = 0
    for bucket in sorted(set().union(*routed) if routed else ()):
        serial = 0 if per_bucket else serial
        files = [seg[bucket] for seg in routed if bucket in seg]
        per_shard = max(1, shard_tokens // bucket)
        pending: list[Slice] = []
        room = per_shard
        for path, rows in files:
            at = 0
            while at < rows:
                take = min(room, rows - at)
                pending.append(Slice(path, at, at + take))
                at += take
                room -= take
                if room == 0:
                    jobs.append(ShardJob(bucket, serial, tuple(pending)))
                    serial, pending, room = serial + 1, [], per_shard
        if pending:
            jobs.append(ShardJob(bucket, serial, tuple(pending)))
            serial += 1
    return jobs


def _plan_json(plan: list[ShardJob], key: str | None) -> dict:
    return {"build_key": key, "shards": [dataclasses.asdict(job) for job in plan]}


def _frozen_plan(where: str, key: str | None) -> list[ShardJob] | None:
    """The plan an interrupted run of this build froze (written once every route file was), when every route file
    it names is still there; None: route again."""
    if key is None:
        return None
    try:
        record = json.loads(location.read_bytes(where))
        plan = [
            ShardJob(job["bucket"], job["serial"], tuple(Slice(**part) for part in job["slices"])) for job in record["shards"]
        ]
    except (FileNotFoundError, ValueError, TypeError, KeyError):
        return None
    if record.get("build_key") != key:
        return None
    if not all(location.exists(path) for path in {part.path for job in plan for part in job.slices}):
        return None
    return plan


# -- inside a Ray worker --------------------------------------------------------------------------


def route_segment_task(
    parts: list[tuple[str, int]], index: int, bounds: list[int], work: str, pairs: bool = False
) -> dict[int, tuple[str, int]]:
    """Consecutive parts of the spill routed to one file per bucket at ``work``, rows in order (each part's rows'
    lines counted from their file's start: its ``lines_before`` added, for a piece cut from a JSON Lines file);
    each file's location and row count."""
    with tempfile.TemporaryDirectory(prefix="padprep-route-") as tmp:
        for k, (part, lines_before) in enumerate(parts):
            local = Path(tmp) / SPILL.format(k)
            _fetch(part, local)
            if lines_before:
                _add_lines(local, lines_before)
        routed = (
            route_rows(Path(tmp), bounds, lengths_of=pair_lengths, schema=PAIR_SCHEMA) if pairs else route_rows(Path(tmp), bounds)
        )
        out = {}
        for bucket, (path, rows) in routed.items():
            target = location.join(work, ROUTE.format(index, bucket))
            location.put_file(path, target)
            out[bucket] = (target, rows)
        return out


def _add_lines(path: Path, lines_before: int) -> None:
    """Rewrite a spill part with ``lines_before`` added to every row's line (a fetched copy, never the original)."""
    with pa.OSFile(str(path), "rb") as source:
        table = pa.ipc.open_file(source).read_all()
    at = table.schema.get_field_index(SOURCE_LINE)
    table = table.set_column(at, SOURCE_LINE, pc.add(table.column(at), pa.scalar(lines_before, pa.int64())))
    path.unlink()  # (a link to the original when it is a local file)
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        for batch in table.to_batches():
            writer.write_batch(batch)


def write_shard_task(
    job: ShardJob,
    dest: str,
    receipts: str,
    pad_id: int | None,
    options: ShardOptions,
    weighted: bool,
    key: str | None,
    pairs: bool = False,
) -> tuple[WrittenShard, bool]:
    """Pad and write one shard of the plan at ``dest``, then its receipt; (the shard, False). A shard this build
    wrote before (a receipt of this key, the files at ``dest`` with their sizes and sha256s): (it, True)."""
    receipt = location.join(receipts, f"{bucket_shard_name(job.bucket, job.serial)}.json")
    done = _receipted(receipt, dest, key)
    if done is not None:
        return done, True
    pause_point("cluster-shard", job.serial)
    with tempfile.TemporaryDirectory(prefix="padprep-shard-") as tmp:
        table = _rows(job.slices, Path(tmp), PAIR_SCHEMA if pairs else SCHEMA)
        if pairs:
            shard = write_pair_shard(Path(tmp), table, job.bucket, options, job.serial, pad_id)
        else:
            shard = write_bucket_shard(Path(tmp), table, job.bucket, pad_id, options, job.serial, weighted)
        for name in (shard.file, shard.sources):
            if name:
                location.put_file(Path(tmp) / name, location.join(dest, name))
    location.write_bytes(receipt, json.dumps({"build_key": key, "shard": dataclasses.asdict(shard)}).encode())
    return shard, False


def _receipted(receipt: str, dest: str, key: str | None) -> WrittenShard | None:
    """The shard a receipt of this build names, when its files at ``dest`` are whole (size and sha256)."""
    if key is None:
        return None
    try:
        record = json.loads(location.read_bytes(receipt))
        shard = WrittenShard(**record["shard"])
    except (FileNotFoundError, ValueError, TypeError, KeyError):
        return None
    if record.get("build_key") != key:
        return None
    checks = [(shard.file, shard.bytes, shard.sha256)]
    if shard.sources:
        checks.append((shard.sources, None, shard.sources_sha256))
    for name, size, digest in checks:
        if not _same(location.join(dest, name), size, digest):
            return None
    return shard


def _same(where: str, size: int | None, digest: str | None) -> bool:
    """The file at ``where`` has this size (when given) and sha256."""
    have = location.size(where)
    if have is None or (size is not None and have != size):
        return False
    with tempfile.TemporaryDirectory(prefix="padprep-check-") as tmp:
        local = Path(tmp) / "file"
        _fetch(where, local)
        return file_sha256(local) == digest


def _fetch(where: str, local: Path) -> None:
    """``where`` available at ``local``: linked when it is a local file, else copied."""
    if not location.is_url(where):
        if not os.path.exists(where):
            raise BuildFailed(f"{where}: {_NOT_SHARED}", EXIT_USAGE)
        os.symlink(os.path.abspath(where), local)
        return
    location.get_file(where, local)


def _rows(slices: tuple[Slice, ...], tmp: Path, schema: pa.Schema) -> pa.Table:
    """The rows of these slices, in order, as one table."""
    batches: list[pa.RecordBatch] = []
    for k, part in enumerate(slices):
        local = tmp / f"slice-{k}.arrow"
        _fetch(part.path, local)
        batches += _stream_rows(local, part.start, part.stop)
        with contextlib.suppress(FileNotFoundError):
            local.unlink()
    return pa.Table.from_batches(batches, schema=schema)


def _stream_rows(path: Path, start: int, stop: int) -> list[pa.RecordBatch]:
    """Rows ``[start, stop)`` of a route file (an Arrow IPC stream), read batch by batch up to ``stop``."""
    out: list[pa.RecordBatch] = []
    at = 0
    with pa.OSFile(str(path), "rb") as source:
        for batch in pa.ipc.open_stream(source):
            lo, hi = max(start - at, 0), min(stop - at, batch.num_rows)
            if lo < hi:
                out.append(batch.slice(lo, hi - lo))
            at += batch.num_rows
            if at >= stop:
                break
    return out


# -- on the driver: where the cluster reads and writes, and what is left after -----------------------


def run_pass_two(
    cfg,
    checkpoint,
    bounds: list[int],
    pad_id: int | None,
    weighted: bool,
    key: str | None,
    log: Callable[[str], None],
    pairs: bool = False,
) -> list[WrittenShard]:
    """Pass 2 of a bucketed build on the cluster (``pipeline._passes``): the spill where the nodes read it, the
    shards written, then the route files, the workers' spill pieces and the receipts removed."""
    where = _where(cfg, checkpoint, log)
    shards = pass_two_on_cluster(where, bounds, pad_id, ShardOptions.of(cfg), weighted, key, log, pairs)
    _check_written(where.dest, shards)
    for name in location.names(where.work):
        if name.startswith(("route-", "piece-")):
            location.remove(location.join(where.work, name))
    location.remove_tree(where.receipts)
    if where.work != str(checkpoint.path):  # the spill beside an output URL
        location.remove_tree(where.work)
    return shards


def _check_written(dest: str, shards: list[WrittenShard]) -> None:
    """Every shard the tasks say they wrote is at ``dest`` with its size, and its sidecar beside it, as this process
    sees it: a local folder that is not shared would leave them on the workers' disks, and the manifest naming them
    would be a lie."""
    present = location.listing(dest)
    for shard in shards:
        for name, size in ((shard.file, shard.bytes), (shard.sources, None)):
            if name and (name not in present or (size is not None and present[name] != size)):
                raise BuildFailed(f"{location.join(dest, name)}: written by a worker, {_NOT_SHARED}", EXIT_USAGE)


def _where(cfg, checkpoint, log: Callable[[str], None]) -> Where:
    """A local output: its partial folder holds everything (on a real cluster, a folder every node mounts).
    An output URL: the spill is beside it (``.OUT.padprep-partial/``: the workers' pieces, and any segment this
    process spilled, put there now) and the shards go straight to it, once the old output there is retired (its
    manifest gone first: no reader sees a manifest naming replaced shards)."""
    from padprep.output.ownership import beside
    from padprep.run.checkpoint import spill_location

    url = cfg.publish_to
    shared = spill_location(cfg, checkpoint.path)
    if not url:
        return Where(checkpoint.spill(), shared, shared, str(beside(cfg.output, "receipts")))
    from padprep.output.publish import claim, retire_old

    spill = []
    for part, lines, size in checkpoint.spill():
        if not location.is_url(part):  # a segment of this process (rows from the store, say): put beside the output
            target = location.join(shared, Path(part).name)
            if location.size(target) != size:
                location.put_file(part, target)
            part = target
        spill.append((part, lines, size))
    retire_old(url)
    return Where(spill, shared, url, location.beside_url(url, "receipts"), lambda names: claim(url, names))
