"""Kill points for the resume tests: ``PADPREP_KILL_AT=NAME`` makes the build SIGKILL its whole process
group when it reaches ``NAME``, exactly as a preemption or the OOM killer would, at a point a test can
name instead of racing for it. Unset (always, outside tests), ``kill_point`` is one dictionary lookup.

Names: ``pass1:K`` (after pass 1's K-th checkpoint), ``between`` (pass 1 done, pass 2 not begun),
``pass2:K`` (after pass 2's K-th shard, in the process that wrote it), ``rename`` (the output
complete, before its rename into place). Imports only the standard library.
"""

from __future__ import annotations

import os
import signal

_counts: dict[str, int] = {}


def kill_point(name: str) -> None:
    """SIGKILL the process group here when ``PADPREP_KILL_AT`` names this point (``name`` or ``name:K``)."""
    wanted = os.environ.get("PADPREP_KILL_AT")
    if not wanted or not wanted.startswith(name):
        return
    _counts[name] = _counts.get(name, 0) + 1
    if wanted == name or wanted == f"{name}:{_counts[name]}":
        os.killpg(os.getpgrp(), signal.SIGKILL)
