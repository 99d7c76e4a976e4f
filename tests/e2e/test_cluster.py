"""``--engine ray`` on a cluster of 3 nodes, each its own ``ray start`` process tree on this machine
(``tests/support/raycluster.py``), against a local S3 server (moto, ``tests/support/s3.py``).

* a build joined to the cluster (``--ray-address``) writes the local engine's shard bytes, and its tasks ran on
  more than one node (each node's worker logs name the tasks it ran);
* the same to ``s3://BUCKET/out``;
* a worker node SIGKILLed while pass 2 runs (a shard task held at ``PADPREP_PAUSE_AT=cluster-shard:K`` until the
  node is dead): the build finishes on the nodes left, same bytes;
* a build whose driver is killed in pass 2 is run again: the shards with a receipt are not written again.

Slow (a cluster start is ~5-8 s on 2 cores, each build ~8 s); marked ``ray``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, SAMPLE, padprep_cli, shard_bytes
from tests.support.raycluster import ray_cluster
from tests.support.s3 import make_bucket, s3_server

pytestmark = [pytest.mark.slow, pytest.mark.ray]
pytest.importorskip("ray", reason="Ray is not installed: pip install 'padprep[ray]'")

TOK = SAMPLE / "tokenizer"
SHARD_TOKENS = "3000"  # the sample's 48 conversations in ~25 shards: many pass-2 tasks to spread and to kill
ROUTE, WRITE = "route_segment_task", "write_shard_task"  # run/cluster.py's task functions


@pytest.fixture(scope="module")
def s3():
    with s3_server() as env:
        yield env


@pytest.fixture(scope="module")
def cluster(s3):
    with ray_cluster(3, env=s3) as started:
        yield started


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> list[str]:
    """The sample conversations in three files: pass 1 has three pieces to spread (one per file)."""
    lines = (SAMPLE / "chat.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    folder = tmp_path_factory.mktemp("inputs")
    paths = []
    for k in range(3):
        path = folder / f"chat-{k}.jsonl"
        path.write_text("".join(lines[k::3]), encoding="utf-8")
        paths.append(str(path))
    return paths


@pytest.fixture(scope="module")
def local_shards(inputs, tmp_path_factory) -> dict[str, bytes]:
    """The local engine's shards of ``inputs`` (the reference every cluster build is compared with)."""
    out = tmp_path_factory.mktemp("local") / "out"
    res = padprep_cli("build", *inputs, "-t", str(TOK), "-o", str(out), "--shard-tokens", SHARD_TOKENS)
    assert res.returncode == 0, res.stderr
    return shard_bytes(out)


def build_args(inputs: list[str], output: str, address: str) -> list[str]:
    ray = ["--engine", "ray", "--ray-address", address]
    return ["build", *inputs, "-t", str(TOK), "-o", output, "--shard-tokens", SHARD_TOKENS, *ray]


def s3_shards(url: str, into: Path) -> dict[str, bytes]:
    """The shards of the output at ``url``, downloaded (``shard_bytes`` of the copy); the manifest must be there."""
    import s3fs

    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    fs.invalidate_cache()
    assert fs.exists(f"{url}/manifest.json"), f"no manifest at {url}: {fs.ls(url.rsplit('/', 1)[0])}"
    fs.get(f"{url}/", str(into), recursive=True)
    return shard_bytes(into)


def shards_of(kind: str, output: str, tmp_path: Path) -> dict[str, bytes]:
    return s3_shards(output, tmp_path / "fetched") if kind == "s3" else shard_bytes(Path(output))


def output_for(kind: str, tmp_path: Path) -> str:
    return f"{make_bucket()}/out" if kind == "s3" else str(tmp_path / "out")


def receipts_of(kind: str, output: str) -> list[str]:
    """The receipts pass 2 on the cluster keeps beside the output (``.OUT.padprep-receipts/``), one per shard."""
    from padprep.output import location

    where = location.beside_url(output, "receipts")
    if not location.exists(where):
        return []
    return [name for name in location.names(where) if name.endswith(".arrow.json")]


def tasks_added(before: dict, after: dict) -> dict[int, dict[str, int]]:
    """Per node, the tasks run between two ``cluster.tasks_run()`` readings."""
    return {node: {name: n - before[node][name] for name, n in after[node].items() if n > before[node][name]} for node in after}


# -- a build on the cluster -------------------------------------------------------------------------


def test_a_three_node_build_writes_the_local_engines_shards(cluster, inputs, local_shards, tmp_path):
    """To a local folder (on a real cluster, one every node mounts): the same shards, and the tasks spread."""
    assert cluster.alive() == [0, 1, 2]
    before = cluster.tasks_run()
    out = tmp_path / "out"
    res = padprep_cli(*build_args(inputs, str(out), cluster.address), env=cluster.env)
    assert res.returncode == 0, res.stderr
    assert "engine: ray, cluster at" in res.stderr and "3 CPU(s)" in res.stderr
    assert shard_bytes(out) == local_shards and len(local_shards) > 6
    ran = tasks_added(before, cluster.tasks_run())
    assert sum(sum(ran[node].values()) for node in ran) >= 3, ran  # at least a pass-1 piece per input file
    busy = [node for node in ran if ran[node]]
    assert len(busy) >= 2, f"every task ran on one node: {ran}"


def test_pass_two_runs_on_the_workers(cluster, inputs, local_shards, tmp_path):
    """Pass 2's tasks (route a spill segment, write a shard) ran on the cluster, on more than one node."""
    before = cluster.tasks_run()
    res = padprep_cli(*build_args(inputs, str(tmp_path / "out"), cluster.address), env=cluster.env)
    assert res.returncode == 0, res.stderr
    ran = tasks_added(before, cluster.tasks_run())
    writes = {node: ran[node].get(WRITE, 0) for node in ran}
    assert sum(writes.values()) == len(local_shards), ran
    assert sum(ran[node].get(ROUTE, 0) for node in ran) >= 1, ran
    assert sum(1 for n in writes.values() if n) >= 2, f"shards written on one node only: {ran}"
    assert shard_bytes(tmp_path / "out") == local_shards


def test_a_three_node_build_to_s3_writes_the_local_engines_shards(cluster, inputs, local_shards, tmp_path):
    url = f"{make_bucket()}/out"
    res = padprep_cli(*build_args(inputs, url, cluster.address), env=cluster.env)
    assert res.returncode == 0, res.stderr
    assert s3_shards(url, tmp_path / "fetched") == local_shards
    assert receipts_of("s3", url) == []  # removed once the build is committed


# -- failures in pass 2 -----------------------------------------------------------------------------


def _start_paused(args: list[str], env: dict, pause: Path, at: int) -> subprocess.Popen:
    """``padprep`` started with shard task ``at`` held until ``pause`` is removed; returns once the task waits."""
    pause.write_text("held")
    env = {**env, "PADPREP_PAUSE_AT": f"cluster-shard:{at}", "PADPREP_PAUSE_FILE": str(pause), "COLUMNS": "120"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "padprep", *args],
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    reached = Path(f"{pause}.reached")
    deadline = time.monotonic() + 240
    while not reached.exists():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the build ended before shard {at} was reached (exit {proc.returncode}):\n{err[-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"shard task {at} not reached in 240 s")
        time.sleep(0.05)
    return proc


def _idle(cluster, timeout: float = 60) -> None:
    """Until no node runs a task (their processes are named ``ray::FUNCTION`` while they run one)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        busy = []
        for node in cluster.alive():
            for pid in cluster.worker_pids(node):
                try:
                    name = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
                except OSError:
                    continue
                if name not in (b"ray::IDLE", b""):
                    busy.append(name)
        if not busy:
            return
        time.sleep(0.1)
    raise TimeoutError(f"tasks still running after {timeout:.0f} s")


@pytest.mark.parametrize("kind", ["local", "s3"])
def test_a_worker_node_killed_in_pass_two_the_build_finishes_with_the_same_shards(s3, inputs, local_shards, tmp_path, kind):
    """The node running shard task K is SIGKILLed (raylet, workers, all) while the task is held; Ray runs the lost
    tasks again on the nodes left, which find the receipts of what was finished: the build succeeds, same bytes.

    A cluster of its own (the kill leaves it 2 nodes), whose head runs no task: the held task is on a worker node."""
    at = len(local_shards) // 2
    with ray_cluster(3, env=s3, head_cpus=0) as cluster:
        output = output_for(kind, tmp_path)
        pause = tmp_path / "pause"
        proc = _start_paused(build_args(inputs, output, cluster.address), cluster.env, pause, at)
        holder = cluster.node_of(int(Path(f"{pause}.reached").read_text()))
        assert holder in (1, 2), f"shard task {at} runs on node {holder}, not a worker node"
        cluster.kill_node(holder)  # SIGKILL its process tree; returns once the GCS lists it dead
        assert cluster.alive() == [0, 3 - holder] and cluster.pids(holder) == []
        pause.unlink()  # the task run again elsewhere must not wait too
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
        assert shards_of(kind, output, tmp_path) == local_shards
        ran = cluster.tasks_run()
        assert ran[3 - holder].get(WRITE, 0) >= 1, ran


@pytest.mark.parametrize("kind", ["local", "s3"])
def test_a_build_run_again_after_its_driver_died_in_pass_two_skips_the_shards_with_receipts(
    cluster, inputs, local_shards, tmp_path, kind
):
    """The driver SIGKILLed while shard task K is held (the last shard: most others are written by then); the
    shards whose receipts survived are not written again by the next run, which ends with the same bytes."""
    at = len(local_shards) - 1
    output = output_for(kind, tmp_path)
    pause = tmp_path / "pause"
    args = build_args(inputs, output, cluster.address)
    proc = _start_paused(args, cluster.env, pause, at)
    proc.kill()  # the driver dies: Ray ends its tasks (their owner is gone)
    proc.communicate()
    pause.unlink()
    _idle(cluster)
    done = receipts_of(kind, output)
    assert 1 <= len(done) < len(local_shards), done
    before = cluster.tasks_run()
    res = padprep_cli(*args, env=cluster.env)
    assert res.returncode == 0, res.stderr
    said = re.search(r"pass 2: ([\d,]+) of ([\d,]+) shards were written by an earlier run", res.stderr)
    assert said, res.stderr
    assert [int(n.replace(",", "")) for n in said.groups()] == [len(done), len(local_shards)]
    ran = tasks_added(before, cluster.tasks_run())
    assert sum(ran[node].get(WRITE, 0) for node in ran) == len(local_shards)  # each task finds its receipt, or writes
    assert shards_of(kind, output, tmp_path) == local_shards
    assert receipts_of(kind, output) == []


def test_the_harness_kills_only_its_own_processes(s3):
    """Two clusters at once (another test, another person): killing and stopping one leaves the other's processes."""
    with ray_cluster(2, env=s3) as one, ray_cluster(2, env=s3) as two:
        theirs = set(two.pids(0) + two.pids(1))
        one.kill_node(1)
        assert one.pids(1) == [] and set(two.pids(0) + two.pids(1)) >= theirs
        one.stop()
        assert one.pids(0) == [] and two.alive() == [0, 1]


def test_a_build_to_s3_killed_in_pass_one_resumes_from_the_pieces_the_workers_spilled(cluster, inputs, local_shards, tmp_path):
    """Killed right after pass 1's first checkpoint, then run again as from another machine (another cache: no
    staging, no local checkpoint): the checkpoint kept beside the output is fetched, the pieces the workers put
    there are checked and kept, the rest of pass 1 and pass 2 run, and the shards are the local engine's."""
    from padprep.output import location

    url = f"{make_bucket()}/out"
    args = build_args(inputs, url, cluster.address)
    first = {"PADPREP_CACHE_DIR": str(tmp_path / "machine-a"), "PADPREP_CHECKPOINT_SECONDS": "0"}
    env = {**os.environ, **cluster.env, **first, "PADPREP_KILL_AT": "pass1:1", "COLUMNS": "120"}
    killed = subprocess.run(
        [sys.executable, "-m", "padprep", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        start_new_session=True,  # the kill takes this process group only: the driver, not the cluster
    )
    assert killed.returncode == -9, killed.stderr[-2000:]
    spilled = [n for n in location.names(location.beside_url(url, "partial")) if n.startswith("piece-")]
    assert spilled, "no piece was spilled beside the output before the kill"
    assert location.exists(location.join(location.beside_url(url, "state"), "state.json"))
    res = padprep_cli(*args, env={**cluster.env, "PADPREP_CACHE_DIR": str(tmp_path / "machine-b")})
    assert res.returncode == 0, res.stderr
    assert "the checkpoint kept beside the output" in res.stderr and "resuming" in res.stderr, res.stderr
    assert s3_shards(url, tmp_path / "fetched") == local_shards
    for left in ("partial", "state", "receipts"):
        assert not location.exists(location.beside_url(url, left)), left
