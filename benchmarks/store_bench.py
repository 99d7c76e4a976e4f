"""The tokenized store: a re-layout taken from it against a fresh build, and what filling it costs.
One input (benchmarks/run.py's: unique, real records), one machine, one run.

  1. fresh      -- ``padprep build N.jsonl --max-length 4096 --no-cache``: no store at all.
  2. filling    -- the same with the store on, the store empty: (2) / (1) is what keeping pass 1's rows costs.
  3. re-layouts -- the same input and token options, a new layout, the store full: ``--seed 3``, ``--pack``,
                   ``--buckets 512,1024,2048,4096``: pass 1 comes from the store. Target: <= 0.1x of (1).
  4. one input more -- the input split into 20 files; the first 19 built (filling the store), then all 20:
                   only the 20th is tokenized. Target: <= 0.15x of a fresh build of the 20 files.
  Each output from the store is compared byte for byte with a fresh ``--no-cache`` build of the same command.
  (1) and (2) run twice, interleaved (the store emptied before each (2)); the best of each counts.

Usage: python benchmarks/store_bench.py [--conversations 20000]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))


def build(src: Path | list[Path], tok: Path, out: Path, store: Path, *extra: str) -> tuple[float, str]:
    shutil.rmtree(out, ignore_errors=True)
    inputs = [str(p) for p in src] if isinstance(src, list) else [str(src)]
    cmd = [sys.executable, "-m", "padprep", "build", *inputs, "-t", str(tok), "-o", str(out), "--max-length", "4096", *extra]
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PADPREP_CACHE_DIR": str(store)})
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"build failed: {done.stderr[-2000:]}")
    said = next((line for line in done.stderr.splitlines() if "tokenized store" in line and "kept" not in line), "")
    return seconds, said


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--conversations", type=int, default=20_000)
    args = parser.parse_args()
    import run as bench

    tok = bench.qwen_tokenizer_dir()
    with tempfile.TemporaryDirectory(prefix="padprep-store-bench-") as tmp:
        work = Path(tmp)
        src, _ = bench.write_padprep_input(args.conversations, work)
        store = work / "store"
        print(f"input: {args.conversations:,} conversations, {src.stat().st_size / 2**20:,.1f} MiB")
        fresh, filling = [], []
        for _ in range(2):
            fresh.append(build(src, tok, work / "fresh", store, "--no-cache")[0])
            shutil.rmtree(store, ignore_errors=True)
            filling.append(build(src, tok, work / "filling", store)[0])
        size = sum(p.stat().st_size for p in (store / "entries").rglob("*") if p.is_file())
        best_fresh, best_filling = min(fresh), min(filling)
        print(f"fresh build (--no-cache): {' / '.join(f'{s:.2f}' for s in fresh)} s, best {best_fresh:.2f} s")
        print(
            f"fresh build filling the store: {' / '.join(f'{s:.2f}' for s in filling)} s, best {best_filling:.2f} s "
            f"({best_filling / best_fresh - 1:+.1%}); the store holds {size / 2**20:,.1f} MiB "
            f"({size / src.stat().st_size:.2f}x the input)"
        )
        for layout in (["--seed", "3"], ["--pack"], ["--buckets", "512,1024,2048,4096"]):
            runs = []
            for i in range(2):
                seconds, said = build(src, tok, work / "relayout", store, *layout)
                if not said:
                    sys.exit(f"{' '.join(layout)}: pass 1 did not come from the store")
                runs.append(seconds)
            build(src, tok, work / "reference", store, *layout, "--no-cache")
            same = tree(work / "relayout") == tree(work / "reference")
            print(
                f"re-layout {' '.join(layout)}: {' / '.join(f'{s:.2f}' for s in runs)} s, best {min(runs):.2f} s = "
                f"{min(runs) / best_fresh:.3f}x the fresh build; bytes of a fresh build: {'yes' if same else 'NO'}"
            )
            if not same:
                sys.exit("a re-layout from the store differs from a fresh build")
        parts = split(src, work / "parts", 20)
        shutil.rmtree(store, ignore_errors=True)
        whole = min(build(parts, tok, work / "fresh20", store, "--no-cache")[0] for _ in range(2))
        first = build(parts[:-1], tok, work / "first19", store)[0]
        runs = []
        for _ in range(2):
            for entry in (store / "entries").iterdir():  # the 20 inputs' entry of the run before goes
                if len(json.loads((entry / "entry.json").read_text())["parts"]["files"]) == 20:
                    shutil.rmtree(entry)
            seconds, said = build(parts, tok, work / "all20", store)
            if "first 19 of 20" not in said:
                sys.exit(f"the 19 inputs' rows did not come from the store: {said!r}")
            runs.append(seconds)
        same = tree(work / "all20") == tree(work / "fresh20")
        print(
            f"20 inputs, the first 19 in the store: {' / '.join(f'{s:.2f}' for s in runs)} s, best {min(runs):.2f} s = "
            f"{min(runs) / whole:.3f}x the fresh build of the 20 ({whole:.2f} s; the 19 took {first:.2f} s); "
            f"bytes of a fresh build: {'yes' if same else 'NO'}"
        )
        if not same:
            sys.exit("20 inputs with 19 from the store differ from a fresh build")


def split(src: Path, folder: Path, n: int) -> list[Path]:
    """``src``'s lines in ``n`` files of about as many lines each, in order (part-00 ... part-19)."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = src.read_text(encoding="utf-8").splitlines(keepends=True)
    per = -(-len(lines) // n)
    paths = []
    for i in range(n):
        path = folder / f"part-{i:02d}.jsonl"
        path.write_text("".join(lines[i * per : (i + 1) * per]), encoding="utf-8")
        paths.append(path)
    return paths


if __name__ == "__main__":
    main()
