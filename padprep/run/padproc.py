"""The pad process: pass 2 (pad with torch kernels, write shards) in a process of its own.

Importing torch costs about 1.3 s, and tearing it down at exit 0.4 s more: on a small build that
was most of the wall time, and on any build it sat on the critical path, after pass 1. So a build
forks this process first thing. It imports torch on a core that loading the tokenizer and preflight
leave idle, waits for pass 2's one job, runs it, sends back the result and leaves without tearing
torch down (``os._exit``). The output is the same bytes wherever pass 2 runs.

Pass 2 runs in the calling process instead where a fork is not available (not Linux) or would
gain nothing (torch is already imported there: a notebook, the test suite).

In the pad process torch has run nothing when the job comes, so pass 2 may fork a helper of its own
(``padprep.forking.fork_call``) and share its work on the second core, which pass 1 no longer uses.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import traceback
from typing import Any, Callable

from padprep.config import EngineName
from padprep.errors import BuildFailed
from padprep.forking import die_with_parent


class PadProcess:
    """Runs one function (pass 2) in a forked process that imported torch while the build did the rest.

    A context manager: enter it before the build's other work starts; leaving it stops the process.

    Example:
        >>> with PadProcess() as pad:  # doctest: +SKIP
        ...     ...  # pass 1
        ...     shards = pad.run(spill.pass_two, workdir, bounds, pad_id, cfg, weighted)
    """

    def __init__(self, enabled: bool = True):
        self._enabled = enabled and sys.platform.startswith("linux")
        self._proc = None
        self._conn = None
        self._ran = False
        self._early = False

    @classmethod
    def for_engine(cls, engine: EngineName) -> "PadProcess":
        """A pad process where one saves time: not where torch is imported already, and not beside Ray
        (a fork would copy its threads' state). The one ``fork_early`` started, when there is one."""
        global _early
        early, _early = _early, None
        if early is not None:
            if engine is EngineName.local:
                return early
            early.__exit__(None, None, None)
        return cls(enabled=engine is EngineName.local and "torch" not in sys.modules)

    @property
    def clean(self) -> bool:
        """Whether pass 2 runs in a pad process, where torch has started no thread pool: it may fork helpers."""
        return self._proc is not None

    def describe(self) -> str:
        if self._proc is not None:
            started = ", started at launch" if self._early else ""
            return f"in the pad process{started} (torch imported there during pass 1)"
        return "in this process"

    def __enter__(self) -> "PadProcess":
        if self._enabled and self._proc is None:
            ctx = multiprocessing.get_context("fork")
            ours, theirs = ctx.Pipe()
            self._proc = ctx.Process(target=_serve, args=(theirs, ours), name="padprep-pad", daemon=True)
            self._proc.start()
            theirs.close()
            self._conn = ours
        return self

    def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` in the pad process (here when there is none); its exception is raised here."""
        if self._proc is None:
            return fn(*args)
        self._ran = True
        self._conn.send((fn, args))
        try:
            ok, value = self._conn.recv()
        except EOFError:
            self._proc.join(5)
            raise BuildFailed(
                f"pass 2's process (padding and writing the shards) ended without a result, exit status "
                f"{self._proc.exitcode} (a negative status is the signal that killed it: -9 is often "
                "the kernel out of memory); no output written"
            ) from None
        if not ok:
            raise value
        return value

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._proc is None:
            return
        self._conn.close()
        if self._ran and exc_type is None:
            self._proc.join(2)  # it leaves right after sending its result
        if self._proc.is_alive():  # never given pass 2 (an up-to-date build, a failure): stopped, not waited for
            self._proc.kill()
            self._proc.join()
        self._proc = None


def _serve(conn, parents_end) -> None:
    """The pad process: import torch, run the one job that comes, send back its result, leave."""
    parents_end.close()
    # Ctrl-C and SIGTERM are the build's to handle: it stops this process on the way out.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    die_with_parent()
    import torch  # noqa: F401  (the point of this process: imported while the build renders and tokenizes)

    _fixed_malloc_thresholds()

    import pyarrow.compute  # noqa: F401  (``RecordBatch.take`` imports it on first use: 0.2 s off pass 2)

    from padprep.layout import pad, pass_two  # noqa: F401  (pass 2's code, loaded before its job comes)

    try:
        fn, args = conn.recv()
    except (EOFError, OSError):
        os._exit(0)  # the build ended before pass 2
    try:
        reply = (True, fn(*args))
    except BaseException as exc:  # noqa: BLE001 - every failure goes back to the build, which raises it
        reply = (False, exc)
    try:
        conn.send(reply)
    except Exception:  # an exception that does not pickle: send its text instead
        conn.send((False, RuntimeError("pass 2 failed in the pad process:\n" + "".join(traceback.format_exception(reply[1])))))
    conn.close()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # no interpreter teardown: torch's alone takes 0.4 s


_early: PadProcess | None = None


def fork_early(args: list[str]) -> None:
    """Start a ``padprep build``'s pad process now, from the entry point, before the CLI's own imports.

    On a small build the pad process's torch import is the longest path, and the CLI's imports and
    argument parsing come before the build forks it: forked here it starts about 0.2 s sooner. Only
    for a build on the local engine (the default), and not for ``--help``; the build takes it over
    (``for_engine``), and a run that never gets there (a usage error) stops it at exit, as
    multiprocessing stops daemonic children.

    Args:
        args: the command line after the program name (``sys.argv[1:]``).
    """
    global _early
    if args[:1] != ["build"] or any(a in ("--help", "-h") or a.startswith("--engine") for a in args[1:]):
        return
    pad = PadProcess(enabled="torch" not in sys.modules)
    pad._early = True
    _early = pad.__enter__()


def _fixed_malloc_thresholds() -> None:
    """Pass 2 allocates and frees a shard's tensors (megabytes each) over and over. glibc raises its mmap
    threshold to the largest block freed so far, and from then on keeps such blocks in its heap after
    they are freed: resident memory that grows with the shard size, not with what is in use. A fixed
    threshold of 1 MiB keeps big blocks mapped, so freeing them gives them back."""
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        libc.mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD (setting it also stops the dynamic adjustment)
        libc.mallopt(-1, 1 << 20)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        return
