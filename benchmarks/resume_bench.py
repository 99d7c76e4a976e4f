"""Resumable builds: a build killed at 60% of its run, run again, against a build never interrupted; and
what checkpoints cost a build that is never interrupted. One input, one machine, one run.

  1. full      -- ``padprep build`` of N conversations (benchmarks/run.py's input: unique, real records),
                  end to end, with checkpoints as they are by default.
  2. killed    -- the same command, its process group SIGKILLed at 60% of (1)'s wall time.
  3. resumed   -- the same command again: it resumes from the last checkpoint. Target: <= 0.6x of (1).
  4. sparse    -- ``PADPREP_CHECKPOINT_SECONDS=1e9`` (one checkpoint, at the end of pass 1): (1) / (4) is
                  what the periodic checkpoints cost. Target: (1) at most 2% slower.
  The outputs of (3) and (1) are compared byte for byte. (1) and (4) run twice, interleaved; best of each.

Usage: python benchmarks/resume_bench.py [--conversations 200000]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))


def build(src: Path, tok: Path, out: Path, env: dict | None = None, kill_after: float | None = None) -> tuple[float, int]:
    cmd = [sys.executable, "-m", "padprep", "build", str(src), "-t", str(tok), "-o", str(out), "--max-length", "4096"]
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            env={**os.environ, **(env or {})}, start_new_session=True)
    if kill_after is not None:
        try:
            proc.wait(timeout=kill_after)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    err = proc.communicate()[1]
    seconds = time.perf_counter() - started
    if kill_after is None and proc.returncode != 0:
        sys.exit(f"build failed: {err[-2000:]}")
    resumed = next((line for line in err.splitlines() if line.startswith("resuming")), "")
    if resumed:
        print(f"    {resumed}")
    return seconds, proc.returncode


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--conversations", type=int, default=200_000)
    args = parser.parse_args()
    import run as bench

    tok = bench.qwen_tokenizer_dir()
    with tempfile.TemporaryDirectory(prefix="padprep-resume-bench-") as tmp:
        work = Path(tmp)
        src, source = bench.write_padprep_input(args.conversations, work)
        print(f"input: {args.conversations:,} conversations from {source} ({src.stat().st_size / 2**20:.0f} MiB)")
        full, sparse = [], []
        for _ in range(2):
            full.append(build(src, tok, work / "full", {})[0])
            shutil.rmtree(work / "full")
            sparse.append(build(src, tok, work / "sparse", {"PADPREP_CHECKPOINT_SECONDS": "1e9"})[0])
            shutil.rmtree(work / "sparse")
        t_full, t_sparse = min(full), min(sparse)
        build(src, tok, work / "full", {})
        kill_at = 0.6 * t_full
        _, rc = build(src, tok, work / "out", {}, kill_after=kill_at)
        assert rc == -signal.SIGKILL, f"the build ended before the kill ({rc})"
        t_resumed, _ = build(src, tok, work / "out", {})
        same = tree(work / "out") == tree(work / "full")
        print(f"full build (checkpoints every 10 s): {t_full:7.1f} s   (best of {', '.join(f'{t:.1f}' for t in full)})")
        print(f"one checkpoint only:                 {t_sparse:7.1f} s   (best of {', '.join(f'{t:.1f}' for t in sparse)})")
        print(f"killed at 60% ({kill_at:.1f} s), then resumed: {t_resumed:.1f} s = {t_resumed / t_full:.2f}x the full build "
              f"(target <= 0.60x)  {'PASS' if t_resumed <= 0.6 * t_full else 'FAIL'}; same bytes: {same}")
        cost = t_full / t_sparse - 1
        print(f"checkpoint cost: {cost:+.1%} (target <= 2%)  {'PASS' if cost <= 0.02 else 'FAIL'}")


if __name__ == "__main__":
    main()
