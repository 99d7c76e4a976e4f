"""Kill points for the resume tests: ``PADPREP_KILL_AT=NAME`` makes the build SIGKILL its whole process
group when it reaches ``NAME``, exactly as a preemption or the OOM killer would, at a point a test can
name instead of racing for it. Unset (always, outside tests), ``kill_point`` is one dictionary lookup.

Names: ``pass1:K`` (after pass 1's K-th checkpoint), ``between`` (pass 1 done, pass 2 not begun),
``pass2:K`` (after pass 2's K-th shard, in the process that wrote it), ``rename`` (the output
complete, before its rename into place), ``publish:K`` (a build to a URL: after the K-th file put
there, before its manifest: ``output/publish.py``). Imports only the standard library.

``PADPREP_PAUSE_AT=NAME:K`` with ``PADPREP_PAUSE_FILE=F`` makes the task that reaches ``NAME`` with number
``K`` (``cluster-shard:K``: the cluster's task writing shard ``K``, ``run/cluster.py``) create ``F.reached``
and wait while ``F`` exists: a test kills a worker node at a known moment of pass 2, then removes ``F``.
"""

from __future__ import annotations

import os
import signal
import time

_counts: dict[str, int] = {}


def kill_point(name: str) -> None:
    """SIGKILL the process group here when ``PADPREP_KILL_AT`` names this point (``name`` or ``name:K``)."""
    wanted = os.environ.get("PADPREP_KILL_AT")
    if not wanted or not wanted.startswith(name):
        return
    _counts[name] = _counts.get(name, 0) + 1
    if wanted == name or wanted == f"{name}:{_counts[name]}":
        os.killpg(os.getpgrp(), signal.SIGKILL)


def pause_point(name: str, number: int) -> None:
    """Wait here while ``PADPREP_PAUSE_FILE`` exists, when ``PADPREP_PAUSE_AT`` is ``name:number`` (at most 10 min)."""
    if os.environ.get("PADPREP_PAUSE_AT") != f"{name}:{number}":
        return
    marker = os.environ.get("PADPREP_PAUSE_FILE")
    if not marker:
        return
    with open(marker + ".reached", "w") as fh:
        fh.write(str(os.getpid()))
    deadline = time.monotonic() + 600
    while os.path.exists(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
