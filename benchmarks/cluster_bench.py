"""``--engine ray`` on a 3-node cluster on this machine against the local engine: time, memory, bytes moved.

One input per size (benchmarks/run.py's: unique, real records), Qwen3's tokenizer, ``--max-length 4096``:

  1. local -- ``padprep build N.jsonl -o LOCAL --no-cache`` (the local engine, this machine's cores).
  2. ray   -- the same with ``--engine ray --ray-address ADDR -o s3://BUCKET/out-N``: a cluster of 3 nodes,
              each its own ``ray start`` process tree with 1 CPU (tests/support/raycluster.py), writing to
              a local S3 server (moto, in this process; ``--to local`` writes a local folder instead: moto
              keeps every object in memory, so use it for 2M conversations).

Measured, sampled every 0.1 s from /proc:
  * wall time;
  * the driver's peak RSS: VmHWM of the ``padprep`` process alone (not its children, not Ray's processes);
  * the largest worker's peak RSS: local, the driver's largest descendant (pass-1 workers, the pad process);
    ray, the largest Ray worker process (``ray::...``, agents excluded) of any node, and per node;
  * bytes beside the output: ray, the peak of everything under the bucket (or the output's parent) less the
    output itself (the spill's copy and the route files of pass 2), and Ray's object spilling (each node's
    spill dir, peak); local, the peak of the partial folder.
Both outputs' shards are compared byte for byte, and the Ray driver's peak at the largest size against the smallest
(target <= 1.2x: it must not grow with the input).

Usage: python benchmarks/cluster_bench.py [--conversations 20000,200000] [--to s3|local] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))

MAX_LENGTH = "4096"
TARGET_DRIVER_RATIO = 1.2  # issue 37: the Ray driver's peak RSS at the largest size / at the smallest <= 1.2x


def status_kib(pid: int, field: str) -> int:
    """A /proc/PID/status field in KiB (VmHWM: peak RSS; VmRSS: now); 0 when the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def descendants(root: int) -> list[int]:
    import run as bench

    kids, out, stack = bench._children_map(), [], [root]
    while stack:
        for kid in kids.get(stack.pop(), ()):
            out.append(kid)
            stack.append(kid)
    return out


def tree_size(path: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                pass
    return total


class Sampler:
    """Peaks over a build: the driver's VmHWM, its descendants' and the cluster's workers' (largest one), sizes."""

    def __init__(self, pid: int, cluster=None, sizes: dict | None = None, every: float = 0.1):
        self.pid, self.cluster, self.sizes = pid, cluster, sizes or {}
        self.driver_kib = 0
        self.child_kib = 0
        self.node_kib: dict[int, int] = {}
        self.size_peak: dict[str, int] = {k: 0 for k in self.sizes}
        self._every, self._done = every, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._ticks = 0

    def _run(self) -> None:
        while not self._done.wait(self._every):
            self.sample()

    def sample(self) -> None:
        self.driver_kib = max(self.driver_kib, status_kib(self.pid, "VmHWM"))
        for kid in descendants(self.pid):
            self.child_kib = max(self.child_kib, status_kib(kid, "VmHWM"))
        if self.cluster is not None:
            for node in range(self.cluster.nodes):
                for pid in self.cluster.worker_pids(node):
                    self.node_kib[node] = max(self.node_kib.get(node, 0), status_kib(pid, "VmHWM"))
        self._ticks += 1
        if self._ticks % 10 == 0:  # sizes once a second (an S3 listing is not free)
            for key, measure in self.sizes.items():
                self.size_peak[key] = max(self.size_peak[key], measure())

    def __enter__(self) -> "Sampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join()


def run_build(cmd: list[str], env: dict, log: Path, cluster=None, sizes: dict | None = None) -> tuple[float, Sampler]:
    with log.open("wb") as out:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
        sampler = Sampler(proc.pid, cluster, sizes)
        with sampler:
            proc.wait()
        seconds = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} exited {proc.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
    return seconds, sampler


def shards(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.arrow")) if p.is_file()}


def measure(n: int, work: Path, tok: Path, cluster, target: str, s3env: dict) -> dict:
    import run as bench

    src, source = bench.write_padprep_input(n, work)
    size = src.stat().st_size
    print(f"\n{n:,} conversations ({source}), {size / 2**20:,.1f} MiB", flush=True)
    env = {**os.environ, **cluster.env, "PADPREP_NO_CACHE": "1", "COLUMNS": "120"}
    base = [sys.executable, "-m", "padprep", "build", str(src), "-t", str(tok), "--max-length", MAX_LENGTH, "--no-cache"]

    local_out = work / "local"
    partial = work / ".local.padprep-partial"
    local_s, local = run_build(
        [*base, "-o", str(local_out)], env, work / "local.log", sizes={"partial": lambda: tree_size(partial)}
    )
    print(f"  local: {local_s:.1f} s, driver {local.driver_kib / 1024:,.0f} MiB", flush=True)

    fs = None
    if target == "s3":
        import s3fs

        from tests.support.s3 import make_bucket

        fs = s3fs.S3FileSystem(skip_instance_cache=True)
        bucket = make_bucket()
        output = f"{bucket}/out"

        def beside() -> int:
            fs.invalidate_cache()
            return sum(fs.du(bucket, total=False).values()) if fs.exists(bucket) else 0

        def final_bytes() -> int:
            fs.invalidate_cache()
            return int(fs.du(output))
    else:
        parent = work / "shared"
        parent.mkdir(exist_ok=True)
        output = str(parent / "out")

        def beside() -> int:
            return tree_size(parent)

        def final_bytes() -> int:
            return tree_size(Path(output))

    spill_dirs = [cluster.node_dir(i) / "spill" for i in range(cluster.nodes)]
    sizes = {"beside": beside, "object_spill": lambda: sum(tree_size(d) for d in spill_dirs)}
    before = cluster.tasks_run()
    ray_s, ray = run_build(
        [*base, "-o", output, "--engine", "ray", "--ray-address", cluster.address], env, work / "ray.log", cluster, sizes
    )
    after = cluster.tasks_run()
    out_bytes = final_bytes()
    fetched = work / "fetched"
    if fs is not None:
        fs.get(f"{output}/", str(fetched), recursive=True)
        fs.rm(output, recursive=True)  # moto holds objects in memory
    else:
        fetched = Path(output)
    same = shards(local_out) == shards(fetched)
    manifest = json.loads((local_out / "manifest.json").read_text())
    tasks = {i: {k: v - before[i][k] for k, v in after[i].items() if v > before[i][k]} for i in after}
    row = {
        "conversations": n,
        "input_mib": round(size / 2**20, 1),
        "real_tokens": manifest["totals"]["real_tokens"],
        "pad_tokens": manifest["totals"]["pad_tokens"],
        "shards": len(manifest["shards"]),
        "output_mib": round(out_bytes / 2**20, 1),
        "local": {
            "seconds": round(local_s, 1),
            "driver_peak_mib": round(local.driver_kib / 1024),
            "largest_worker_mib": round(local.child_kib / 1024),
            "partial_peak_mib": round(local.size_peak["partial"] / 2**20, 1),
        },
        "ray": {
            "seconds": round(ray_s, 1),
            "driver_peak_mib": round(ray.driver_kib / 1024),
            "largest_worker_mib": round(max(ray.node_kib.values(), default=0) / 1024),
            "worker_peak_mib_by_node": {str(k): round(v / 1024) for k, v in sorted(ray.node_kib.items())},
            "beside_output_peak_mib": round(max(0, ray.size_peak["beside"] - out_bytes) / 2**20, 1),
            "object_spill_peak_mib": round(ray.size_peak["object_spill"] / 2**20, 1),
            "tasks_by_node": tasks,
            "output": target,
        },
        "same_shards": same,
    }
    shutil.rmtree(local_out, ignore_errors=True)
    if fs is None:
        shutil.rmtree(output, ignore_errors=True)
    shutil.rmtree(fetched, ignore_errors=True)
    for name in ("input.jsonl", "input_datasets.jsonl"):
        (work / name).unlink(missing_ok=True)
    print(
        f"  ray:   {ray_s:.1f} s, driver {row['ray']['driver_peak_mib']:,} MiB, largest worker "
        f"{row['ray']['largest_worker_mib']:,} MiB, same shards: {same}",
        flush=True,
    )
    return row


def print_table(rows: list[dict], startup: float) -> None:
    print(f"\n3-node cluster on this machine, started in {startup:.1f} s (1 CPU per node)")
    head = "| conversations | engine | wall s | driver peak MiB | largest worker MiB | beside output MiB | object spill MiB | same shards |"
    print(head)
    print("|---:|---|---:|---:|---:|---:|---:|---|")
    for r in rows:
        lo, ra = r["local"], r["ray"]
        print(
            f"| {r['conversations']:,} | local | {lo['seconds']} | {lo['driver_peak_mib']:,} | {lo['largest_worker_mib']:,} "
            f"| {lo['partial_peak_mib']} (partial) | - | |"
        )
        print(
            f"| {r['conversations']:,} | ray → {ra['output']} | {ra['seconds']} | {ra['driver_peak_mib']:,} "
            f"| {ra['largest_worker_mib']:,} | {ra['beside_output_peak_mib']} | {ra['object_spill_peak_mib']} | {r['same_shards']} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--conversations", default="20000,200000", help="sizes, comma-separated")
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--to", choices=("s3", "local"), default="s3", help="where the Ray build writes")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    import run as bench

    from tests.support.raycluster import RayCluster
    from tests.support.s3 import s3_server

    sizes = [int(s) for s in args.conversations.split(",") if s]
    tok = bench.qwen_tokenizer_dir()
    rows = []
    with tempfile.TemporaryDirectory(prefix="padprep-cluster-bench-") as tmp, s3_server() as s3env:
        cluster = RayCluster(nodes=args.nodes, env=s3env)
        with cluster:
            print(f"cluster: {args.nodes} nodes at {cluster.address}, alive in {cluster.startup_seconds:.1f} s", flush=True)
            for n in sizes:
                work = Path(tmp) / str(n)
                work.mkdir()
                rows.append(measure(n, work, tok, cluster, args.to, s3env))
                shutil.rmtree(work, ignore_errors=True)
    result = {"machine": f"{os.cpu_count()} cores", "startup_seconds": round(cluster.startup_seconds, 1), "rows": rows}
    print_table(rows, cluster.startup_seconds)
    if len(rows) > 1:
        small, big = rows[0], rows[-1]
        ratio = big["ray"]["driver_peak_mib"] / max(1, small["ray"]["driver_peak_mib"])
        ok = ratio <= TARGET_DRIVER_RATIO
        result["driver_growth"] = {"ratio": round(ratio, 3), "target": TARGET_DRIVER_RATIO, "met": ok}
        print(
            f"ray driver peak RSS {small['conversations']:,} -> {big['conversations']:,} conversations: "
            f"{small['ray']['driver_peak_mib']:,} -> {big['ray']['driver_peak_mib']:,} MiB, {ratio:.2f}x "
            f"(target <= {TARGET_DRIVER_RATIO}x): {'met' if ok else 'NOT met'}"
        )
    print(json.dumps(result))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    if not all(r["same_shards"] for r in rows):
        sys.exit("the Ray build's shards differ from the local build's")


if __name__ == "__main__":
    main()
