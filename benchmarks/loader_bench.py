#!/usr/bin/env python3
"""Loader throughput: padprep shards + ``BucketBatchSampler`` vs ``datasets`` + ``DataCollatorForSeq2Seq``.

All paths read the same conversations (``sample_data/chat.jsonl`` replicated to ``--conversations``
records, each made unique by a suffix) and are timed in the same run, on the same machine:

* padprep: ``padprep build`` once (Python API), then one epoch of ``make_dataloader`` (memory-mapped
  shards, batches of ``--batch-size`` rows drawn from one bucket, already padded);
* padprep through ``datasets``: ``padprep.train.hf.to_dataset`` of the same build, ``BucketBatchSampler``
  over its buckets and ``pad_collate`` (what ``BucketBatchesMixin`` does with a ``datasets.Dataset``);
* datasets: ``load_dataset("json")`` -> ``map`` with the transformers tokenizer's
  ``apply_chat_template`` once, then one epoch of a ``DataLoader`` whose ``DataCollatorForSeq2Seq``
  pads each batch to its longest row, with batches drawn two ways: at random (``Trainer``'s default)
  and grouped by length (``train_sampling_strategy="group_by_length"``: transformers'
  ``LengthGroupedSampler`` over a ``length`` column computed in the map, as ``Trainer`` reads it).

The one-off preprocessing of each path is timed and shown, but the ratios compare the epochs (what a
training run pays every epoch). Labels on the datasets path are a copy of ``input_ids``: masking
costs nothing per epoch there either, and the collator pads them all the same.

    python benchmarks/loader_bench.py                     # 50,000 conversations, ~1-2 min on a laptop CPU
    python benchmarks/loader_bench.py --conversations 5000 --workers 2
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SAMPLE = ROOT / "sample_data" / "chat.jsonl"
TOKENIZER = ROOT / "sample_data" / "tokenizer"


@dataclass
class Epoch:
    """What one pass over a loader delivered, and how long it took."""

    name: str
    batches: int
    rows: int
    real_tokens: int
    padded_tokens: int
    seconds: float

    @property
    def batches_per_s(self) -> float:
        return self.batches / self.seconds

    @property
    def tokens_per_s(self) -> float:
        return self.real_tokens / self.seconds

    @property
    def pad_fraction(self) -> float:
        return 1 - self.real_tokens / self.padded_tokens if self.padded_tokens else 0.0


def make_input(path: Path, conversations: int) -> Path:
    """The sample conversations repeated to ``conversations`` records, each unique (a suffix on its first user turn)."""
    if path.is_file() and sum(1 for _ in path.open(encoding="utf-8")) == conversations:
        return path
    records = [json.loads(line) for line in SAMPLE.read_text(encoding="utf-8").splitlines() if line.strip()]
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as out:
        for i in range(conversations):
            record = json.loads(json.dumps(records[i % len(records)]))
            user = next(m for m in record["messages"] if m["role"] == "user")
            user["content"] += f" (request {i})"
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build_shards(data: Path, output: Path, workers: int) -> float:
    """``padprep build`` through the Python API; reuses an earlier build of the same input. Returns seconds (0 if reused)."""
    from padprep.config import BuildConfig
    from padprep.run.pipeline import build

    manifest = output / "manifest.json"
    if manifest.is_file():
        inputs = json.loads(manifest.read_text()).get("inputs") or [{}]
        if inputs[0].get("sha256") == _sha256(data):
            return 0.0
    start = time.perf_counter()
    build(BuildConfig(inputs=(data,), tokenizer=str(TOKENIZER), output=output, overwrite=True, workers=workers))
    return time.perf_counter() - start


def hf_tokenized(data: Path, cache: Path):
    """``load_dataset("json")`` -> ``apply_chat_template`` with the same tokenizer; returns (dataset, tokenizer, seconds)."""
    from datasets import disable_progress_bars, load_dataset
    from transformers import AutoTokenizer

    disable_progress_bars()
    tokenizer = AutoTokenizer.from_pretrained(str(TOKENIZER))
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token  # as padprep falls back

    def tokenize(batch: dict) -> dict:
        tools = batch.get("tools") or [None] * len(batch["messages"])
        ids = [
            tokenizer.apply_chat_template(m, tools=t, tokenize=True, return_dict=False)
            for m, t in zip(batch["messages"], tools)
        ]
        return {"input_ids": ids, "attention_mask": [[1] * len(x) for x in ids], "labels": ids, "length": [len(x) for x in ids]}

    start = time.perf_counter()
    raw = load_dataset("json", data_files=str(data), split="train", cache_dir=str(cache))
    tokenized = raw.map(tokenize, batched=True, remove_columns=raw.column_names, load_from_cache_file=False)
    return tokenized, tokenizer, time.perf_counter() - start


def run_epoch(name: str, loader) -> Epoch:
    """One full pass; counts real tokens from ``attention_mask`` and padded tokens from the batch shape."""
    batches = rows = real = padded = 0
    start = time.perf_counter()
    for batch in loader:
        mask = batch["attention_mask"]
        batches += 1
        rows += mask.shape[0]
        real += int(mask.sum())
        padded += mask.numel()
    return Epoch(name, batches, rows, real, padded, time.perf_counter() - start)


def padprep_epoch(build_dir: Path, batch_size: int, workers: int, seed: int) -> Epoch:
    from padprep.train.loader import make_dataloader

    loader = make_dataloader(build_dir, batch_size=batch_size, shuffle=True, seed=seed, num_workers=workers)
    return run_epoch("padprep loader + BucketBatchSampler", loader)


def padprep_datasets_epoch(build_dir: Path, batch_size: int, workers: int, seed: int) -> Epoch:
    from functools import partial

    from torch.utils.data import DataLoader

    from padprep.train.hf import bucket_indices, to_dataset
    from padprep.train.loader import BucketBatchSampler, pad_collate

    full = to_dataset(build_dir)
    sampler = BucketBatchSampler(bucket_indices(full), batch_size=batch_size, seed=seed)
    dataset = full.select_columns(["input_ids", "attention_mask", "labels"])
    pad_id = json.loads((build_dir / "manifest.json").read_text())["tokenizer"]["pad_id"]
    loader = DataLoader(dataset, batch_sampler=sampler, num_workers=workers, collate_fn=partial(pad_collate, pad_id=pad_id))
    return run_epoch("padprep to_dataset + BucketBatchSampler", loader)


def datasets_epoch(tokenized, tokenizer, batch_size: int, workers: int, seed: int, group_by_length: bool) -> Epoch:
    import torch
    from torch.utils.data import DataLoader
    from transformers import DataCollatorForSeq2Seq
    from transformers.trainer_pt_utils import LengthGroupedSampler

    collator = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100, return_tensors="pt")
    generator = torch.Generator().manual_seed(seed)
    columns = tokenized.select_columns(["input_ids", "attention_mask", "labels"])
    if group_by_length:  # as Trainer builds it: lengths from the "length" column, megabatches of 50 batches
        sampler = LengthGroupedSampler(batch_size, lengths=tokenized["length"][:], generator=generator)
        loader = DataLoader(columns, batch_size=batch_size, sampler=sampler, num_workers=workers, collate_fn=collator)
        return run_epoch("datasets + group_by_length + Seq2Seq", loader)
    loader = DataLoader(
        columns, batch_size=batch_size, shuffle=True, generator=generator, num_workers=workers, collate_fn=collator
    )
    return run_epoch("datasets + DataCollatorForSeq2Seq", loader)


def print_table(epochs: list[Epoch], prep: dict[str, float]) -> None:
    header = f"{'path':<40} {'prep s':>8} {'epoch s':>8} {'batches':>8} {'batches/s':>10} {'tokens/s':>12} {'pad %':>6}"
    print(header)
    print("-" * len(header))
    for e in epochs:
        prep_s = f"{prep[e.name]:.1f}" if prep[e.name] else "reused"
        print(
            f"{e.name:<40} {prep_s:>8} {e.seconds:>8.2f} {e.batches:>8,} {e.batches_per_s:>10,.0f} "
            f"{e.tokens_per_s:>12,.0f} {100 * e.pad_fraction:>5.1f}%"
        )
    ours = epochs[0]
    print()
    for theirs in epochs[1:]:
        print(f"ratio ({ours.name} / {theirs.name}): {ours.batches_per_s / theirs.batches_per_s:.1f}x batches/s, "
              f"{ours.tokens_per_s / theirs.tokens_per_s:.1f}x real tokens/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--conversations", type=int, default=50_000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers, for both paths")
    parser.add_argument("--build-workers", type=int, default=max(1, min(4, os.cpu_count() or 1)))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=Path("/tmp/padprep-loader-bench"))
    args = parser.parse_args()

    warnings.filterwarnings("ignore")
    data = make_input(args.work / f"chat-{args.conversations}.jsonl", args.conversations)
    build_dir = args.work / f"build-{args.conversations}"
    build_s = build_shards(data, build_dir, args.build_workers)
    tokenized, tokenizer, map_s = hf_tokenized(data, args.work / "hf-cache")
    epochs = [
        padprep_epoch(build_dir, args.batch_size, args.workers, args.seed),
        padprep_datasets_epoch(build_dir, args.batch_size, args.workers, args.seed),
        datasets_epoch(tokenized, tokenizer, args.batch_size, args.workers, args.seed, group_by_length=False),
        datasets_epoch(tokenized, tokenizer, args.batch_size, args.workers, args.seed, group_by_length=True),
    ]
    assert {e.rows for e in epochs} == {args.conversations}, [e.rows for e in epochs]
    assert len({e.real_tokens for e in epochs}) == 1, "the paths tokenized the data differently"
    print(f"{args.conversations:,} conversations, batch size {args.batch_size}, {args.workers} DataLoader workers, "
          f"{os.cpu_count()} CPUs, torch {__import__('torch').__version__}")
    print(f"prep: padprep build {'reused' if build_s == 0 else f'{build_s:.1f} s'}, datasets load+map {map_s:.1f} s\n")
    print_table(epochs, {e.name: build_s if e.name.startswith("padprep") else map_s for e in epochs})


if __name__ == "__main__":
    main()
