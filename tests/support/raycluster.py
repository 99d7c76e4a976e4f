"""A Ray cluster of several nodes on this one machine, each node its own ``ray start`` process tree.

``RayCluster(nodes=3).start()`` runs ``ray start --head --block`` and then, in parallel, ``ray start --block
--address HEAD`` for the worker nodes. Every node gets:

* ``--num-cpus`` (1 by default) and a custom resource of its own, ``node0``, ``node1``, ... (a task can be
  pinned to a node with ``resources={"node1": 0.01}``);
* its own temp dir (``--temp-dir ROOT/nI``: sockets, logs, session), its own spill dir
  (``--object-spilling-directory ROOT/nI/spill``) and a small object store;
* free ports only (none of Ray's fixed defaults: 6379, 8265, 10001, 52365), so that several clusters can
  run on the machine at once (other tests, other people);
* the environment given to ``RayCluster(env=...)`` (the S3 test server's ``AWS_ENDPOINT_URL`` and
  credentials, for example) plus ``RAYON_NUM_THREADS=1``, ``RAY_AUTH_MODE=disabled`` and a marker,
  ``PADPREP_RAYCLUSTER_NODE=ROOT:I``, which every process of the node inherits (raylet, GCS, agents and
  the workers the raylet forks), so that a node's processes are found by their environment, whatever
  their process group or name (Ray renames its workers ``ray::IDLE``, ``ray::_process_piece``).

Ray 2.60's ``ray start --head`` turns token authentication on and a client that does not send the token
is refused; a throw-away cluster on one machine turns it off. A driver (``ray.init(address=...)``,
``padprep build --engine ray --ray-address ...``) needs ``cluster.env`` in its environment for that.

``start()`` returns once the GCS lists every node as alive. A watchdog process beside the cluster SIGKILLs
its processes if the process that started it dies without ``stop()`` (a test killed): no cluster outlives it. ``kill_node(i)`` SIGKILLs worker node i (its
``ray start``, raylet, agents and workers) and waits until the GCS marks it dead (health checks every
0.5 s here, dead after 3 missed: about 2 s). ``stop()`` ends this cluster's processes only (found by the
marker): never ``ray stop``, which ends every Ray process of the user.

Example:
    >>> with RayCluster(nodes=3, env=s3_env) as cluster:  # doctest: +SKIP
    ...     padprep_cli("build", ..., "--engine", "ray", "--ray-address", cluster.address, env=cluster.env)
    ...     cluster.kill_node(2)

Startup, measured on the 2-core development machine: 3 nodes alive in 5-6 s when it is idle (the head
~3 s, then both worker nodes at once), up to 14 s while other builds share the cores (docs/ray.md).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

MARKER = "PADPREP_RAYCLUSTER_NODE"
TASK_NAME = ":task_name:"  # ray_constants.LOG_PREFIX_TASK_NAME: a worker's log line as each task starts
# Failure detection: the GCS pings each raylet every 0.5 s and declares it dead after 3 misses.
SYSTEM_CONFIG = {"health_check_period_ms": 500, "health_check_timeout_ms": 500, "health_check_failure_threshold": 3}
OBJECT_STORE_BYTES = 128 << 20  # per node (Ray's minimum is 75 MiB)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ray_cli() -> str:
    """The ``ray`` script beside this interpreter (the venv's), else the one on PATH."""
    here = Path(sys.executable).parent / "ray"
    return str(here) if here.is_file() else (shutil.which("ray") or "ray")


def pids_with_marker(value: str) -> list[int]:
    """Every process whose environment holds ``PADPREP_RAYCLUSTER_NODE=value`` (prefix match on value)."""
    needle = f"{MARKER}={value}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as fh:
                env = fh.read()
        except OSError:  # gone, or not ours
            continue
        if any(var.startswith(needle) for var in env.split(b"\0")):
            found.append(int(entry))
    return found


# Run beside a cluster, in a session of its own: once the process that started the cluster is gone (a test
# SIGKILLed, an interpreter crash: no stop() ran), SIGKILL every process with this cluster's marker and remove
# its temp dirs (when the cluster made them). Ray's own reaper takes a node's raylet when its ``ray start`` dies, not the node's agents.
WATCHDOG = r"""
import os, shutil, sys, time
parent, root, marker, own = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4] == "1"
needle = f"{marker}={root}:".encode()
while True:
    try:
        os.kill(parent, 0)
    except ProcessLookupError:
        break
    time.sleep(0.5)
for _ in range(50):
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/environ", "rb") as fh:
                    if any(v.startswith(needle) for v in fh.read().split(b"\0")):
                        found.append(int(entry))
            except OSError:
                pass
    if not found:
        break
    for pid in found:
        try:
            os.kill(pid, 9)
        except OSError:
            pass
    time.sleep(0.1)
if own:
    shutil.rmtree(root, ignore_errors=True)
"""


def _die_with_parent() -> None:
    """In the child, before ``ray start`` runs: SIGKILL it when this process dies (a test killed, a crash).
    ``ray start --block`` then takes its node down with it (its reaper): no cluster outlives its test."""
    import ctypes

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _kill(pids: list[int], sig: int = signal.SIGKILL) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


@dataclass
class Node:
    index: int
    temp_dir: Path
    proc: subprocess.Popen | None = None
    node_id: str | None = None  # Ray's hex node id, once the GCS lists it
    log: Path | None = None
    killed: bool = False

    @property
    def marker(self) -> str:
        return f"{self.temp_dir.parent}:{self.index}"


@dataclass
class RayCluster:
    """A multi-node Ray cluster on this machine; ``start()``, ``kill_node(i)``, ``stop()`` (or ``with``)."""

    nodes: int = 3
    cpus: int = 1
    head_cpus: int | None = None  # None: ``cpus``; 0: the head runs no task (a test that kills the node of a task)
    env: dict[str, str] = field(default_factory=dict)
    object_store_bytes: int = OBJECT_STORE_BYTES
    root: Path | None = None  # the nodes' temp dirs: ROOT/n0, ROOT/n1, ... (short: Unix socket paths <= 107 bytes)
    address: str = ""
    startup_seconds: float = 0.0  # start() to every node alive
    head_seconds: float = 0.0  # start() to the head alive
    _nodes: list[Node] = field(default_factory=list)
    _own_root: bool = False
    _watchdog: subprocess.Popen | None = None

    # -- start --------------------------------------------------------------------------------------
    def start(self, timeout: float = 120.0) -> "RayCluster":
        started = time.perf_counter()
        if self.root is None:
            self.root, self._own_root = Path(tempfile.mkdtemp(prefix="prc-", dir="/tmp")), True
        self.env = {
            **self.env,
            "RAY_AUTH_MODE": "disabled",
            "RAYON_NUM_THREADS": self.env.get("RAYON_NUM_THREADS", "1"),
            "TOKENIZERS_PARALLELISM": "false",
            "RAY_USAGE_STATS_ENABLED": "0",
        }
        self._nodes = [Node(i, self.root / f"n{i}") for i in range(self.nodes)]
        env = {k: v for k, v in os.environ.items() if k != MARKER}
        self._watchdog = subprocess.Popen(
            [sys.executable, "-c", WATCHDOG, str(os.getpid()), str(self.root), MARKER, "1" if self._own_root else "0"],
            env=env,
            start_new_session=True,
        )
        try:
            for attempt in range(3):  # a free port taken by another process before the head binds it: new ports
                port = _free_port()
                self._launch(
                    self._nodes[0],
                    [
                        "--head",
                        f"--port={port}",
                        f"--dashboard-port={_free_port()}",
                        "--include-dashboard=false",
                        f"--system-config={json.dumps(SYSTEM_CONFIG)}",
                    ],
                )
                self.address = f"127.0.0.1:{port}"
                try:
                    self._wait_alive(1, started + timeout)
                    break
                except RuntimeError:  # the head exited
                    self._kill_tree(self._nodes[0])
                    if attempt == 2:
                        raise
            # Worker nodes started with the head gain nothing on 2 cores (measured: 6.3-7.3 s against 5.1-6.0 s)
            self.head_seconds = time.perf_counter() - started
            for node in self._nodes[1:]:
                self._launch(node, [f"--address={self.address}"])
            self._wait_alive(self.nodes, started + timeout)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.perf_counter() - started
        return self

    def _launch(self, node: Node, extra: list[str]) -> None:
        node.temp_dir.mkdir(parents=True, exist_ok=True)
        (node.temp_dir / "spill").mkdir(exist_ok=True)
        node.log = node.temp_dir.parent / f"n{node.index}.log"
        cmd = [
            _ray_cli(),
            "start",
            "--block",
            "--disable-usage-stats",
            f"--num-cpus={self.cpus if node.index or self.head_cpus is None else self.head_cpus}",
            f"--resources={json.dumps({f'node{node.index}': 1})}",
            f"--temp-dir={node.temp_dir}",
            f"--object-spilling-directory={node.temp_dir / 'spill'}",
            f"--object-store-memory={self.object_store_bytes}",
            "--node-ip-address=127.0.0.1",
            "--min-worker-port=0",
            "--max-worker-port=0",
            "--dashboard-agent-listen-port=0",
            "--include-log-monitor=false",
            *extra,
        ]
        env = {**os.environ, **self.env, MARKER: node.marker}
        with open(node.log, "wb") as log:
            node.proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True, preexec_fn=_die_with_parent
            )

    def _node_infos(self) -> dict[str, tuple[bool, dict]]:
        """Every node the GCS knows: hex id -> (alive, total resources)."""
        from ray._raylet import GcsClient
        from ray.core.generated import gcs_pb2

        infos = GcsClient(address=self.address).get_all_node_info(timeout=5)
        return {nid.hex(): (info.state == gcs_pb2.GcsNodeInfo.ALIVE, dict(info.resources_total)) for nid, info in infos.items()}

    def _gcs_listening(self) -> bool:
        host, port = self.address.rsplit(":", 1)
        try:
            with socket.create_connection((host, int(port)), timeout=0.2):
                return True
        except OSError:
            return False

    def _wait_alive(self, count: int, deadline: float) -> None:
        while True:
            for node in self._nodes[:count]:
                if node.proc is not None and node.proc.poll() is not None:
                    raise RuntimeError(f"ray node {node.index} exited {node.proc.returncode}:\n{self.log_tail(node.index)}")
            infos: dict = {}
            if self._gcs_listening():  # a GcsClient made before would wait for the GCS for 30 s
                try:
                    infos = self._node_infos()
                except Exception:
                    if time.perf_counter() > deadline:
                        raise
            for nid, (alive, resources) in infos.items():
                for node in self._nodes:
                    if alive and resources.get(f"node{node.index}"):
                        node.node_id = nid
            if all(node.node_id for node in self._nodes[:count]):
                return
            if time.perf_counter() > deadline:
                raise TimeoutError(f"ray: {count} nodes not alive in time:\n" + "\n".join(self.log_tail(i) for i in range(count)))
            time.sleep(0.1)

    def log_tail(self, index: int, chars: int = 2000) -> str:
        log = self._nodes[index].log
        return log.read_text(errors="replace")[-chars:] if log and log.is_file() else ""

    # -- inspect ------------------------------------------------------------------------------------
    @property
    def node_ids(self) -> list[str | None]:
        """Ray's node id of each node, by index (None before it joined)."""
        return [node.node_id for node in self._nodes]

    def alive(self) -> list[int]:
        """The indexes of the nodes the GCS lists as alive now."""
        infos = self._node_infos()
        return [node.index for node in self._nodes if node.node_id and infos.get(node.node_id, (False,))[0]]

    def pids(self, index: int) -> list[int]:
        """The live processes of node ``index``: ``ray start``, raylet, agents, workers (and GCS on the head)."""
        return pids_with_marker(self._nodes[index].marker)

    def worker_pids(self, index: int) -> list[int]:
        """Node ``index``'s Ray worker processes (``ray::...`` in their name; the agents excluded)."""
        out = []
        for pid in self.pids(index):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as fh:
                    name = fh.read().split(b"\0")[0]
            except OSError:
                continue
            if name.startswith(b"ray::") and b"Agent" not in name:
                out.append(pid)
        return out

    def node_dir(self, index: int) -> Path:
        return self._nodes[index].temp_dir

    def node_of(self, pid: int) -> int | None:
        """The index of the node a process belongs to (by the marker in its environment), None if none of ours."""
        try:
            with open(f"/proc/{pid}/environ", "rb") as fh:
                env = fh.read().split(b"\0")
        except OSError:
            return None
        for var in env:
            if var.startswith(f"{MARKER}=".encode()):
                root, _, index = var.split(b"=", 1)[1].decode().rpartition(":")
                if root == str(self.root):
                    return int(index)
        return None

    def tasks_run(self) -> dict[int, Counter]:
        """Each node's tasks so far, by function name: Ray's workers write ``:task_name:NAME`` to their log
        (``ROOT/nI/session_*/logs/worker-*.out``) as each task starts; a killed node's count stays readable."""
        out: dict[int, Counter] = {}
        for node in self._nodes:
            seen: Counter = Counter()
            for log in node.temp_dir.glob("session_2*/logs/worker-*.out"):  # not session_latest (a link)
                for line in log.read_text(errors="replace").splitlines():
                    if line.startswith(TASK_NAME):
                        seen[line[len(TASK_NAME) :].strip()] += 1
            out[node.index] = seen
        return out

    # -- kill, stop ---------------------------------------------------------------------------------
    def kill_node(self, index: int, wait_dead: float = 30.0) -> None:
        """SIGKILL worker node ``index`` (not the head: it holds the GCS) and wait until the GCS marks it dead."""
        if index == 0:
            raise ValueError("node 0 is the head (GCS): kill a worker node, 1..nodes-1")
        node = self._nodes[index]
        self._kill_tree(node)
        node.killed = True
        deadline = time.perf_counter() + wait_dead
        while node.node_id and index in self.alive():
            if time.perf_counter() > deadline:
                raise TimeoutError(f"node {index} still alive {wait_dead:.0f} s after SIGKILL")
            time.sleep(0.1)

    def _kill_tree(self, node: Node) -> None:
        # By marker, repeatedly: a worker forked while we kill would be missed by one pass.
        for _ in range(50):
            pids = pids_with_marker(node.marker)
            if node.proc is not None and node.proc.poll() is None:
                pids.append(node.proc.pid)
            if not pids:
                break
            _kill(pids)
            time.sleep(0.05)
        if node.proc is not None:
            try:
                node.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass

    def stop(self) -> None:
        """Every process of this cluster SIGKILLed, worker nodes first; the nodes' temp dirs removed."""
        for node in reversed(self._nodes):
            self._kill_tree(node)
        if self._watchdog is not None:
            self._watchdog.kill()
            self._watchdog.wait()
            self._watchdog = None
        if self._own_root and self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> "RayCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


@contextmanager
def ray_cluster(nodes: int = 3, env: dict[str, str] | None = None, **kwargs) -> Iterator[RayCluster]:
    """A started ``RayCluster``, stopped on exit (skips the test when Ray is not installed)."""
    import pytest

    pytest.importorskip("ray", reason="Ray is not installed: pip install 'padprep[ray]'")
    cluster = RayCluster(nodes=nodes, env=dict(env or {}), **kwargs)
    with cluster:
        yield cluster
