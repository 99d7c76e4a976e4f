"""How pass 1 uses the cores: this process with the tokenizer's own threads, or worker processes.

Pass 1 is CPU-bound (the tokenizer, in Rust, is most of it; rendering the chat template in Python is
the rest), so what counts is keeping every core busy without oversubscribing it:

* one process: the tokenizer encodes chunk k in a helper thread, with its own Rust threads on every
  core (the GIL is released meanwhile), while this thread renders chunk k+1 and masks chunk k-1;
* ``N`` worker processes: each does whole chunks (render, tokenize, mask) with ``cores // N`` Rust
  threads, so that 2 workers on 2 cores do not start 2 x 2 tokenizer threads.

Results always come back in input order, so the output does not depend on the plan. Small inputs
run in one process: starting workers costs more than it saves there.

On Linux workers are forked: they start in milliseconds, holding the already-parsed tokenizer. They
are forked before this process tokenizes anything, because a child forked after the tokenizer's
thread pool started runs single-threaded (``tokenizers`` sees to that) or, with
``TOKENIZERS_PARALLELISM`` set to true, hangs: with that setting, and on other platforms, workers are
spawned instead and parse the tokenizer themselves (see ``start_method``).
"""

from __future__ import annotations

import gc
import itertools
import multiprocessing
import os
import signal
import sys
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterator

from padprep.chat.process import FlatResult, ProcessOptions, Processor
from padprep.chat.tokenizer import TokenizerBundle
from padprep.input.records import RawRecord

# Below this much input, one process finishes before worker processes would have paid for themselves.
SMALL_INPUT_BYTES = 4 << 20


def available_cores() -> int:
    """Cores this process may run on (its affinity mask where the platform has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class WorkerPlan:
    """``processes`` == 1: in this process. ``tokenizer_threads``: Rust threads per worker process."""

    processes: int
    tokenizer_threads: int
    reason: str

    def describe(self) -> str:
        if self.processes == 1:
            return f"1 process, tokenizer threads on every core ({self.reason})"
        return f"{self.processes} worker processes x {self.tokenizer_threads} tokenizer thread(s) ({self.reason})"


def plan_workers(requested: int, input_bytes: int | None, cores: int | None = None) -> WorkerPlan:
    """``requested`` 0 means automatic: one worker per core, or one process for a small input.

    ``input_bytes`` is None when it cannot be known in advance (standard input).
    """
    cores = cores or available_cores()
    if requested == 0:
        if cores == 1:
            return WorkerPlan(1, 1, "one core")
        if input_bytes is not None and input_bytes < SMALL_INPUT_BYTES:
            return WorkerPlan(1, cores, f"input under {SMALL_INPUT_BYTES >> 20} MiB")
        return WorkerPlan(cores, 1, f"{cores} cores")
    if requested == 1:
        return WorkerPlan(1, cores, "--workers 1")
    return WorkerPlan(requested, max(1, cores // requested), f"--workers {requested}, {cores} cores")


def start_method() -> str:
    """``fork`` on Linux, unless ``TOKENIZERS_PARALLELISM`` is set to a true value; else ``spawn``.

    A forked child inherits the tokenizer thread pool's bookkeeping but not its threads. ``tokenizers``
    guards that by running such a child single-threaded, except when ``TOKENIZERS_PARALLELISM`` says
    otherwise: then a child forked after the pool started hangs on its first encode. Whether the pool
    started cannot be asked, so with that setting workers are spawned (slower to start, always safe).
    """
    if not sys.platform.startswith("linux"):
        return "spawn"
    setting = os.environ.get("TOKENIZERS_PARALLELISM")
    if setting is not None and setting.strip().lower() not in _FALSE_SETTINGS:
        return "spawn"
    return "fork"


# What ``tokenizers`` reads as "off" in TOKENIZERS_PARALLELISM.
_FALSE_SETTINGS = frozenset({"", "off", "false", "f", "no", "n", "0"})


class ChunkRunner:
    """Runs ``Processor.process`` over chunks as planned; a context manager that owns the workers.

    Enter it before this process tokenizes anything (see the module docstring). ``processor``, when
    given, is inherited by forked workers: they do not compile the template nor probe it again.
    """

    def __init__(self, plan: WorkerPlan, bundle: TokenizerBundle, processor: Processor | None = None):
        self.plan = plan
        self._bundle = bundle
        self._processor = processor
        self._pool = None
        self._flight: _Flight | None = None

    def __enter__(self) -> "ChunkRunner":
        if self.plan.processes > 1:
            method = start_method()
            inherited = self._processor if method == "fork" else None  # a compiled template does not pickle
            ctx = multiprocessing.get_context(method)
            self._pool = ctx.Pool(
                self.plan.processes,
                initializer=_init_worker,
                initargs=(self._bundle, self.plan.tokenizer_threads, inherited),
            )
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._flight = None
        if self._pool is not None:
            if exc_type is None:
                self._pool.close()
            else:
                self._pool.terminate()
            self._pool.join()
            self._pool = None

    def head_start(self, chunks: Iterator[list[RawRecord]], options: ProcessOptions) -> None:
        """Start the workers on ``chunks`` with ``options`` now (while this process runs preflight).

        ``results`` then continues from them; what was started with other options than the final
        ones is done again. Without worker processes this does nothing.
        """
        if self._pool is not None:
            self._flight = _Flight(self._pool, chunks, 2 * self.plan.processes)
            self._flight.fill(options)

    def results(
        self, chunks: Iterator[list[RawRecord]], processor: Processor, first: Iterator[list[RawRecord]] = iter(())
    ) -> Iterator[FlatResult]:
        """Chunk results in input order: ``first``'s chunks, then those given to ``head_start`` (if it was
        called; ``chunks`` is then not read), else ``chunks``'."""
        if self._pool is None:
            return _overlapped(itertools.chain(first, chunks), processor)
        flight, self._flight = self._flight, None
        if flight is None:
            flight = _Flight(self._pool, chunks, 2 * self.plan.processes)
        return flight.results(processor.options, first)


def _overlapped(chunks: Iterator[list[RawRecord]], processor: Processor) -> Iterator[FlatResult]:
    """One process: encode chunk k in a helper thread while this one finishes k-1 and renders k+1."""
    with ThreadPoolExecutor(1, thread_name_prefix="padprep-encode") as encoder:
        encoding = None
        for chunk in chunks:
            prepared = processor.prepare(chunk)
            done = encoding.result() if encoding is not None else None
            encoding = encoder.submit(processor.encode, prepared)
            if done is not None:
                yield processor.finish(done).flat()
        if encoding is not None:
            yield processor.finish(encoding.result()).flat()


class _Flight:
    """Chunks in flight on the pool, a bounded window of them (memory stays flat), taken back in order."""

    def __init__(self, pool, chunks: Iterator[list[RawRecord]], window: int):
        self._pool = pool
        self._chunks = chunks
        self._window = window
        self._pending: deque = deque()  # (chunk, options, async result)

    def _submit(self, chunk: list[RawRecord], options: ProcessOptions, at_front: bool = False) -> None:
        item = (chunk, options, self._pool.apply_async(_process_in_worker, (chunk, options)))
        self._pending.appendleft(item) if at_front else self._pending.append(item)

    def fill(self, options: ProcessOptions) -> None:
        while len(self._pending) < self._window:
            chunk = next(self._chunks, None)
            if chunk is None:
                return
            self._submit(chunk, options)

    def results(self, options: ProcessOptions, first: Iterator[list[RawRecord]]) -> Iterator[FlatResult]:
        # What was started with other options is started again (its results are never taken).
        redo = [(chunk, opts, res) for chunk, opts, res in self._pending]
        self._pending.clear()
        for chunk in first:
            self._submit(chunk, options)
        for chunk, opts, res in redo:
            if opts == options:
                self._pending.append((chunk, opts, res))
            else:
                self._submit(chunk, options)
        while True:
            self.fill(options)
            if not self._pending:
                return
            yield self._pending.popleft()[2].get()


# -- inside a worker process ----------------------------------------------------------------------
# Per-process state, set by the pool initializer and never shared: the tokenizer, and one Processor
# per options value (options travel with each chunk, so preflight may change them after the fork).
_worker_bundle: TokenizerBundle | None = None
_worker_processors: dict[ProcessOptions, Processor] = {}


def _init_worker(bundle: TokenizerBundle, tokenizer_threads: int, processor: Processor | None) -> None:
    global _worker_bundle
    # Ctrl-C and SIGTERM are the main process's to handle: it terminates the pool and cleans up. A
    # forked worker would otherwise inherit the CLI's SIGTERM handler and die with a traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    # Read by the tokenizer's thread pool when it starts, at this worker's first encode.
    os.environ["RAYON_NUM_THREADS"] = str(tokenizer_threads)
    _worker_bundle = bundle
    if processor is not None:  # forked: the parent's, template compiled and probed
        _worker_processors[processor.options] = processor
    # What the worker inherited lives as long as it does: out of the collector's sight, its pages are
    # neither walked by every full collection nor copied by the writes a collection makes.
    gc.freeze()


def _process_in_worker(records: list[RawRecord], options: ProcessOptions) -> FlatResult:
    processor = _worker_processors.get(options)
    if processor is None:
        assert _worker_bundle is not None, "_init_worker was not called"
        processor = _worker_processors[options] = Processor(_worker_bundle, options)
    return processor.process_flat(records)
