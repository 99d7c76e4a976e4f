"""``padprep export``: each format's export time and peak memory against the build it reads, one machine, one run.

Input: ``sample_data/chat.jsonl`` replicated to N conversations, each made unique (words appended to every user
and assistant message), built with the sample tokenizer (bucketed, and packed for ``megatron-packed``), then
exported to every format, each as the CLI runs it (a subprocess: start-up and imports included). Prints, per
format, seconds, the build's time over the export's (the issue asks for at least 5x) and peak RSS.

Usage: python benchmarks/export_bench.py [--conversations 20000] [--max-length 2048]
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FORMATS = ("axolotl", "llamafactory", "mds", "swift", "olmo-core", "megatron-packed")
WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma tau".split()


def write_input(n: int, path: Path) -> None:
    rng = random.Random(0)
    records = [json.loads(line) for line in (ROOT / "sample_data" / "chat.jsonl").read_text(encoding="utf-8").splitlines()]
    with path.open("w", encoding="utf-8") as out:
        for i in range(n):
            record = json.loads(json.dumps(records[i % len(records)]))
            for m in record["messages"]:
                if isinstance(m.get("content"), str) and m["role"] in ("user", "assistant"):
                    m["content"] += f" [{i}] " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 60)))
            out.write(json.dumps(record) + "\n")


_PEAK = (
    "import resource, sys\n"
    "from padprep.__main__ import main\n"
    "sys.argv = ['padprep', *sys.argv[1:]]\n"
    "try:\n    main()\nexcept SystemExit as exc:\n    code = exc.code\nelse:\n    code = 0\n"
    "peak = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    "print(f'PEAK {peak}', file=sys.stderr)\n"
    "sys.exit(code)\n"
)


def timed(*args: str) -> tuple[float, int]:
    """Seconds and peak RSS (MiB, its own or a child's) of ``padprep ARGS`` in a subprocess of its own."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", _PEAK, *args], check=True, capture_output=True, text=True, cwd=ROOT)
    seconds = time.perf_counter() - start
    peak = int(done.stderr.rsplit("PEAK ", 1)[1].split()[0])
    return seconds, peak // 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=20000)
    parser.add_argument("--max-length", type=int, default=2048)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_input(args.conversations, tmp / "chat.jsonl")
        build = ("build", str(tmp / "chat.jsonl"), "--tokenizer", "sample_data/tokenizer")
        rows_s, rows_mb = timed(*build, "--output", str(tmp / "rows"))
        packed_s, packed_mb = timed(*build, "--output", str(tmp / "packed"), "--pack", "--max-length", str(args.max_length))
        print(f"build: {rows_s:.2f} s ({rows_mb} MiB); packed build: {packed_s:.2f} s ({packed_mb} MiB)")
        print(f"{'format':<16} {'seconds':>8} {'build/export':>13} {'peak MiB':>9}")
        for fmt in FORMATS:
            source, build_s = (tmp / "packed", packed_s) if fmt == "megatron-packed" else (tmp / "rows", rows_s)
            seconds, mb = timed("export", str(source), str(tmp / f"export-{fmt}"), "--to", fmt)
            print(f"{fmt:<16} {seconds:>8.2f} {build_s / seconds:>12.1f}x {mb:>9}")


if __name__ == "__main__":
    main()
