"""Placement time and peak memory of ``build --pack`` (best-fit decreasing) for the 2M-conversation memory run.

The lengths are those of ``python benchmarks/run.py --memory``'s 2,000,000-conversation input,
computed rather than built: that input cycles through the real records of ``../shared/data``
(alpaca + glaive as messages, shuffled with seed 0) and prefixes conversation ``i``'s first user
message with ``[#i] ``. Each base record is rendered and tokenized with Qwen3 by padprep's own pass-1
code once per digit count of ``i`` (1 to 7 digits: the prefix's token count depends only on it, which
is checked on a second index per digit count), so conversation ``i``'s length is
``base[i % n] + extra[i % n][digits(i)]``, exactly as the build would count it (``--max-length``
drops the longer ones, as the build does).

Then the placement alone runs in a fresh process that holds nothing but numpy, ``padprep.layout.pack``
and the int32 lengths (loaded from a ``.npy``): it is timed (``pack.best_fit_decreasing``, best of
``--repeat``) and its memory measured as Python's ``tracemalloc`` peak (numpy reports its arrays
there) and the process's peak RSS (``VmHWM``) before and after the first placement.

Usage:
  python benchmarks/pack_bench.py [--conversations 2000000] [--max-length 4096] [--max-length 2048] [--repeat 3]

Latest figures: README.md, section "Packing".
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from padprep.layout.pack import best_fit_decreasing  # noqa: E402  (the rest is imported where lengths are computed)

DIGITS = range(1, 8)  # indices below 10,000,000


def record_lengths(processor, records: list[dict], index: int) -> np.ndarray:
    """Token count of ``make_unique(record, index)`` for every record (no length limit: -1 if rejected)."""
    from benchmarks.run import make_unique
    from padprep.input.read import RawRecord

    raw = [RawRecord("bench", k, json.dumps(make_unique(r, index)), format="messages") for k, r in enumerate(records)]
    result = processor.process(raw)
    lengths = np.full(len(records), -1, dtype=np.int64)
    for row in result.rows:
        lengths[row.line] = len(row.ids)
    return lengths


def memory_run_lengths(n: int, max_length: int) -> tuple[np.ndarray, str, int]:
    """The lengths of the memory run's ``n`` conversations that a build at ``max_length`` keeps, in input order."""
    from benchmarks.run import base_records, qwen_tokenizer_dir
    from padprep.chat.process import ProcessOptions, Processor
    from padprep.chat.templates import resolve_template
    from padprep.chat.tokenizer import load_tokenizer
    from padprep.input.formats import FormatOptions

    records, source = base_records()
    bundle = load_tokenizer(str(qwen_tokenizer_dir()))
    template, _ = resolve_template(None, bundle.chat_template)
    processor = Processor(bundle, ProcessOptions(template, formats=FormatOptions()))
    per_digits = {}
    for d in DIGITS:
        first, other = 10 ** (d - 1), 10**d - 1  # e.g. 100 and 999 for three digits
        a = record_lengths(processor, records, first)
        if not np.array_equal(a, record_lengths(processor, records, other)):
            sys.exit(f"the prefix's token count depends on more than its digit count ({first} vs {other})")
        per_digits[d] = a
    index = np.arange(n)
    digits = np.where(index == 0, 1, np.floor(np.log10(np.maximum(index, 1))).astype(np.int64) + 1)
    table = np.stack([per_digits[d] for d in DIGITS])  # (digit counts, records)
    lengths = table[digits - 1, index % len(records)]
    if (lengths < 0).any():
        sys.exit("a base record was rejected; the memory run would not have written it either")
    kept = lengths[lengths <= max_length].astype(np.int32)
    return kept, source, int(n - len(kept))


def peak_rss_bytes() -> int:
    """This process's peak RSS: ``VmHWM`` (Linux; unlike ``ru_maxrss`` it does not carry the parent's peak
    across fork + exec), else ``ru_maxrss``."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def measure(lengths: np.ndarray, max_length: int, repeat: int) -> dict:
    """Placement time and memory in this process (run by ``place``, in a fresh one): the first
    placement untraced (time, peak RSS), a second one under ``tracemalloc``, then the rest timed."""
    before = peak_rss_bytes()
    started = time.perf_counter()
    placement = best_fit_decreasing(lengths, max_length)
    times = [time.perf_counter() - started]
    rss_growth = peak_rss_bytes() - before
    tracemalloc.start()
    best_fit_decreasing(lengths, max_length)
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    for _ in range(repeat - 1):
        started = time.perf_counter()
        again = best_fit_decreasing(lengths, max_length)
        times.append(time.perf_counter() - started)
        assert np.array_equal(again.order, placement.order), "placement is not deterministic"
    real = int(lengths.sum())
    return {
        "max_length": max_length,
        "conversations": len(lengths),
        "rows": placement.bins,
        "padding": 1 - real / (placement.bins * max_length),
        "seconds_best": min(times),
        "seconds_first": times[0],
        "tracemalloc_peak_mib": traced_peak / 2**20,
        "rss_before_mib": before / 2**20,
        "rss_growth_mib": rss_growth / 2**20,
        "lengths_mib": lengths.nbytes / 2**20,
    }


def place(lengths: np.ndarray, max_length: int, repeat: int) -> dict:
    """``measure`` in a child process that loads only the lengths."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "lengths.npy"
        np.save(path, lengths)
        done = subprocess.run([sys.executable, __file__, "--place", str(path), str(max_length), str(repeat)],
                              check=True, capture_output=True, text=True, cwd=ROOT)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    if sys.argv[1:2] == ["--place"]:  # the child: numpy, padprep.layout.pack and the lengths only
        path, max_length, repeat = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
        print(json.dumps(measure(np.load(path), max_length, repeat)))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--conversations", type=int, default=2_000_000)
    parser.add_argument("--max-length", type=int, action="append", help="row length (repeatable; default 4096 and 2048)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    for max_length in args.max_length or [4096, 2048]:
        started = time.perf_counter()
        lengths, source, dropped = memory_run_lengths(args.conversations, max_length)
        print(f"lengths of {args.conversations:,} conversations from {source} (Qwen3), {dropped:,} over {max_length} dropped, "
              f"computed in {time.perf_counter() - started:.1f}s; mean {lengths.mean():.1f}, max {lengths.max()}", flush=True)
        m = place(lengths, max_length, args.repeat)
        print(f"--max-length {max_length}: {m['conversations']:,} conversations -> {m['rows']:,} rows, "
              f"padding {m['padding']:.3%}; placement {m['seconds_best']:.2f}s (best of {args.repeat}; "
              f"first {m['seconds_first']:.2f}s); peak {m['tracemalloc_peak_mib']:.0f} MiB (tracemalloc), "
              f"process peak RSS {m['rss_before_mib']:.0f} -> {m['rss_before_mib'] + m['rss_growth_mib']:.0f} MiB; "
              f"the lengths themselves {m['lengths_mib']:.1f} MiB", flush=True)


if __name__ == "__main__":
    main()
