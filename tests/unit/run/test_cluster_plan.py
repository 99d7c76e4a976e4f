"""Pass 2 on the cluster without a cluster: ``run/cluster.py``'s plan, route and write functions called directly.

The plan must be ``pass_two``'s (the same shards, numbered alike, from the route counts alone), a shard task
must write the local engine's bytes, and a receipt must be trusted only when it is this build's and its files
are whole. The multi-node runs are in tests/e2e/test_cluster.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from padprep.chat.process import FlatRows
from padprep.config import PaddingSide
from padprep.layout.pairs import pass_two_pairs
from padprep.layout.pass_two import ShardOptions, pass_two
from padprep.layout.spill import PAIR_SCHEMA, SCHEMA, SPILL, spill_batch
from padprep.run import cluster
from padprep.run.cluster import ShardJob, Slice, plan_shards, route_groups, route_segment_task, write_shard_task
from padprep.schema import SOURCE_LINE

BOUNDS = [8, 16, 32]


def _rows(lengths: list[int], first_line: int) -> FlatRows:
    rng = np.random.default_rng(first_line)
    total = sum(lengths)
    ids = rng.integers(3, 1000, total).astype(np.int32)
    labels = np.where(rng.random(total) < 0.5, -100, ids).astype(np.int32)
    lines = np.arange(first_line, first_line + len(lengths), dtype=np.int64)
    return FlatRows(
        ids,
        labels,
        np.array(lengths, np.int64),
        {"in.jsonl": len(lengths)},
        lines=lines,
        files=("in.jsonl",),
        file_of=np.zeros(len(lengths), np.int32),
    )


def _segment(path: Path, batches: list[list[int]], first_line: int = 1) -> Path:
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, SCHEMA) as writer:
        line = first_line
        for lengths in batches:
            writer.write_batch(spill_batch(_rows(lengths, line), np.zeros(len(lengths), np.int32)))
            line += len(lengths)
    return path


def _lengths(rng, n: int) -> list[int]:
    return rng.integers(1, 33, n).tolist()


def test_the_plan_cuts_each_bucket_in_spill_order_and_numbers_shards_across_buckets():
    routed = [{8: ("a8", 5), 32: ("a32", 1)}, {}, {8: ("b8", 4), 16: ("b16", 7)}]
    plan = plan_shards(routed, shard_tokens=32)  # 4 rows of 8, 2 of 16, 1 of 32 a shard
    assert [(j.bucket, j.serial) for j in plan] == [(8, 0), (8, 1), (8, 2), (16, 3), (16, 4), (16, 5), (16, 6), (32, 7)]
    assert plan[0].slices == (Slice("a8", 0, 4),)
    assert plan[1].slices == (Slice("a8", 4, 5), Slice("b8", 0, 3))
    assert plan[2].slices == (Slice("b8", 3, 4),)
    assert plan[6].slices == (Slice("b16", 6, 7),)
    assert plan_shards([], 32) == []


def test_route_groups_are_consecutive_parts_of_about_the_group_size():
    spill = [("a", 0, 100), ("b", 7, 100), ("c", 0, 250), ("d", 0, 1), ("e", 3, 10)]
    assert route_groups(spill, 200) == [[("a", 0), ("b", 7)], [("c", 0)], [("d", 0), ("e", 3)]]
    assert route_groups(spill, 1) == [[(w, n)] for w, n, _ in spill]
    assert route_groups([], 200) == []


@pytest.mark.parametrize("group_bytes", [1, 1 << 30], ids=["a-route-task-per-part", "one-route-task"])
def test_routed_and_written_shards_are_the_local_pass_twos_bytes(tmp_path, group_bytes):
    """Three spill parts routed (in groups) and planned here, every shard written by the task function: pass_two's files."""
    rng = np.random.default_rng(0)
    parts = [[_lengths(rng, 40), _lengths(rng, 25)], [_lengths(rng, 3)], [_lengths(rng, 60)]]
    local = tmp_path / "local"
    local.mkdir()
    line, spill = 1, []
    for k, batches in enumerate(parts):
        _segment(local / SPILL.format(k), batches, line)
        spill.append(local / SPILL.format(k))
        line += sum(len(b) for b in batches)
    options = ShardOptions(256, PaddingSide.right, seed=3)
    expected = {s.file: s for s in pass_two(local, BOUNDS, 0, options, weighted=False)}

    work, dest, receipts = (tmp_path / name for name in ("work", "dest", "receipts"))
    for folder in (work, dest, receipts):
        folder.mkdir()
    groups = route_groups([(str(path), 0, path.stat().st_size) for path in spill], group_bytes)
    assert len(groups) == (3 if group_bytes == 1 else 1)
    routed = [route_segment_task(group, k, BOUNDS, str(work)) for k, group in enumerate(groups)]
    plan = plan_shards(routed, options.shard_tokens)
    written = [write_shard_task(job, str(dest), str(receipts), 0, options, False, "key")[0] for job in plan]
    assert {s.file: s for s in written} == expected
    for name in expected:
        assert (dest / name).read_bytes() == (local / name).read_bytes()
        assert (dest / expected[name].sources).read_bytes() == (local / expected[name].sources).read_bytes()


def test_a_piece_cut_from_a_jsonl_file_gets_its_line_offset(tmp_path):
    piece = _segment(tmp_path / "piece-000001.arrow", [[4, 5, 6]], first_line=1)
    work = tmp_path / "work"
    work.mkdir()
    routed = route_segment_task([(str(piece), 100)], 0, [8], str(work))
    path, rows = routed[8]
    with pa.OSFile(path, "rb") as source:
        lines = pa.ipc.open_stream(source).read_all().column(SOURCE_LINE).to_pylist()
    assert rows == 3 and lines == [101, 102, 103]
    with pa.OSFile(str(piece), "rb") as source:  # the piece itself is untouched (it was linked, then copied)
        assert pa.ipc.open_file(source).read_all().column(SOURCE_LINE).to_pylist() == [1, 2, 3]


@pytest.fixture
def one_shard(tmp_path):
    """A routed file of 6 rows of bucket 8 and the job that writes them, with its dest and receipts folders."""
    work, dest, receipts = (tmp_path / name for name in ("work", "dest", "receipts"))
    for folder in (work, dest, receipts):
        folder.mkdir()
    seg = _segment(tmp_path / "spill.arrow", [[3, 4, 5, 6, 7, 8]])
    routed = route_segment_task([(str(seg), 0)], 0, [8], str(work))
    (job,) = plan_shards([routed], 1 << 10)
    return job, dest, receipts


def _write(job: ShardJob, dest: Path, receipts: Path, key: str | None = "key"):
    return write_shard_task(job, str(dest), str(receipts), 0, ShardOptions(1 << 10, PaddingSide.right, None), False, key)


def test_a_receipt_of_this_build_with_whole_files_is_trusted(one_shard):
    job, dest, receipts = one_shard
    shard, reused = _write(job, dest, receipts)
    assert not reused and json.loads((receipts / f"{shard.file}.json").read_text())["build_key"] == "key"
    again, reused = _write(job, dest, receipts)
    assert reused and again == shard


@pytest.mark.parametrize("damage", ["shard", "sidecar", "other_key", "no_key", "torn_receipt"])
def test_a_receipt_is_not_trusted_when_its_files_or_build_differ(one_shard, damage):
    job, dest, receipts = one_shard
    shard, _ = _write(job, dest, receipts)
    good = (dest / shard.file).read_bytes()
    key = "key"
    if damage == "shard":  # same size, other bytes
        (dest / shard.file).write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
    elif damage == "sidecar":
        (dest / shard.sources).write_bytes(b"x")
    elif damage == "other_key":
        key = "another build"
    elif damage == "no_key":
        key = None
    else:
        (receipts / f"{shard.file}.json").write_text('{"build_key": "key", "shard": {')
    again, reused = _write(job, dest, receipts, key)
    assert not reused and again == shard and (dest / shard.file).read_bytes() == good


def test_a_frozen_plan_is_used_only_for_its_build_and_while_its_route_files_are_there(one_shard, tmp_path):
    job, _, receipts = one_shard
    where = str(receipts / "plan.json")
    Path(where).write_text(json.dumps(cluster._plan_json([job], "key")))
    assert cluster._frozen_plan(where, "key") == [job]
    assert cluster._frozen_plan(where, "other") is None and cluster._frozen_plan(where, None) is None
    Path(job.slices[0].path).unlink()
    assert cluster._frozen_plan(where, "key") is None


def _pair_segment(path: Path, n: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    sides = [rng.integers(1, 12, n) for _ in range(3)]
    columns = [
        pa.array([rng.integers(3, 900, k).astype(np.int32).tolist() for k in lengths], pa.list_(pa.int32())) for lengths in sides
    ]
    batch = pa.record_batch(
        [*columns, pa.array(np.zeros(n, np.int32)), pa.array(np.arange(1, n + 1, dtype=np.int64))], schema=PAIR_SCHEMA
    )
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, PAIR_SCHEMA) as writer:
        writer.write_batch(batch)
    return path


def test_pairs_are_numbered_per_bucket_and_written_as_pass_two_pairs_writes_them(tmp_path):
    local = tmp_path / "local"
    local.mkdir()
    spill = [_pair_segment(local / SPILL.format(k), n, k) for k, n in enumerate((30, 11, 45))]
    options = ShardOptions(120, PaddingSide.right, seed=5)
    expected = {s.file: s for s in pass_two_pairs(local, [12, 20, 34], options)}
    assert any(name.endswith("-00000.arrow") and not name.startswith("bucket-000012") for name in expected)

    work, dest, receipts = (tmp_path / name for name in ("work", "dest", "receipts"))
    for folder in (work, dest, receipts):
        folder.mkdir()
    routed = [route_segment_task([(str(path), 0)], k, [12, 20, 34], str(work), pairs=True) for k, path in enumerate(spill)]
    plan = plan_shards(routed, options.shard_tokens, per_bucket=True)
    written = [write_shard_task(job, str(dest), str(receipts), None, options, False, "key", pairs=True)[0] for job in plan]
    assert {s.file: s for s in written} == expected
    for name in expected:
        assert (dest / name).read_bytes() == (local / name).read_bytes()


def test_shards_a_worker_wrote_where_this_node_cannot_see_them_fail_the_build(one_shard, tmp_path):
    """A local --output that is not shared: the workers' files are on their disks, not here. The build says so
    instead of writing a manifest that names missing shards; a route task says so of a spill part."""
    from padprep.errors import BuildFailed

    job, dest, receipts = one_shard
    shard, _ = _write(job, dest, receipts)
    cluster._check_written(str(dest), [shard])  # all there
    (dest / shard.sources).unlink()
    with pytest.raises(BuildFailed, match="must be a folder every node mounts"):
        cluster._check_written(str(dest), [shard])
    with pytest.raises(BuildFailed, match="not seen on this node"):
        route_segment_task([(str(tmp_path / "elsewhere" / "piece-000000.arrow"), 0)], 0, [8], str(tmp_path))
