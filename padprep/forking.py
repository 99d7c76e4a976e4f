"""Forked children that die with their parent: what the pad process and pass 2's helper are made of.

Below every phase (it imports only the standard library and ``errors``), so that pass 2 in ``layout``
and the pad process in ``run`` share it without importing each other.
"""

from __future__ import annotations

import os
import pickle
import signal
import traceback
from typing import Any, Callable

from padprep.errors import BuildFailed


def fork_call(fn: Callable[..., Any], *args: Any) -> Callable[[], Any]:
    """Start ``fn(*args)`` in a forked child now; the function returned waits for its result.

    Only for a process with no thread pool started (the pad process before pass 2 runs a torch op):
    the child holds just the calling thread. The child's exception is raised by the waiting function;
    a child that dies without a result is a ``BuildFailed`` naming its exit status.
    """
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        os.close(read_end)
        die_with_parent()
        try:
            payload = pickle.dumps((True, fn(*args)))
        except BaseException as exc:  # noqa: BLE001 - every failure goes back to the caller
            try:
                payload = pickle.dumps((False, exc))
            except Exception:  # an exception that does not pickle: its text
                payload = pickle.dumps((False, RuntimeError("".join(traceback.format_exception(exc)))))
        with os.fdopen(write_end, "wb") as out:
            out.write(payload)
        os._exit(0)
    os.close(write_end)

    def result() -> Any:
        with os.fdopen(read_end, "rb") as source:
            payload = source.read()
        _, status = os.waitpid(pid, 0)
        if not payload:
            raise BuildFailed(
                f"a helper of pass 2 (padding and writing the shards) ended without a result, wait "
                f"status {status}; no output written"
            )
        ok, value = pickle.loads(payload)
        if not ok:
            raise value
        return value

    return result


def die_with_parent() -> None:
    """Ask Linux to kill this process when the build's process dies (even by SIGKILL)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the parent died before prctl took effect
        os._exit(0)
