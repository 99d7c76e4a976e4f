"""MosaicML streaming (MDS) as llm-foundry's finetuning dataset reads pre-tokenized conversations.

Each sample has one column, ``turns`` (MDS encoding ``json``), the layout llm-foundry's own converter
writes when it tokenizes (``convert_finetuning_dataset``: ``{'turns': 'json'}``): a list of
``{"input_ids": [...], "labels": [...]}``, where ``input_ids`` is a stretch of tokens not trained (the
*context*) and ``labels`` the trained stretch right after it (the *target*): not -100 masks, tokens. Its
collator (``stitch_turns_decoder_only``) rebuilds the row as context + target of every turn in order and
trains each target with ``target_responses: all`` and ``target_prompts: none``, so padprep's conversation
comes back token for token, its trained positions exactly, as long as the conversation ends with a trained
token. What a template writes after the last trained token (a newline after the end-of-turn marker) cannot
be a turn (a turn's target cannot be empty); it is left out: it trains nothing and, the model being causal,
changes no trained position's prediction. ``written.untrained_tail_tokens`` counts what was left out.

llm-foundry's collator appends the tokenizer's eos to the last target when it does not end with it: with a
template whose end-of-turn token is not the tokenizer's eos, each row gets that one more (trained) token.

One split per folder (``DEST/train``, and ``DEST/eval`` for a recipe's eval side), each an MDS dataset:
``index.json`` and ``shard.NNNNN.mds`` files of at most 64 MiB, uncompressed, as ``MDSWriter`` writes them.
A packed build is written one conversation a sample.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from padprep.output.export.dest import Destination
from padprep.output.export.source import Side, chunks, refuse_weights
from padprep.schema import IGNORE_INDEX

NAME = "mds"
SIZE_LIMIT = 1 << 26  # MDSWriter's default shard size limit
_CONFIG = {
    "version": 2,
    "format": "mds",
    "compression": None,
    "hashes": [],
    "size_limit": SIZE_LIMIT,
    "column_names": ["turns"],
    "column_encodings": ["json"],
    "column_sizes": [None],
}


def turns(ids: np.ndarray, labels: np.ndarray) -> tuple[list[dict[str, list[int]]], int]:
    """A conversation as llm-foundry turns (context, target), and how many untrained tokens after the last target were left out."""
    trained = labels != IGNORE_INDEX
    # run boundaries: where trained-ness changes
    change = np.flatnonzero(np.diff(trained.astype(np.int8))) + 1
    starts = np.concatenate(([0], change))
    ends = np.concatenate((change, [len(ids)]))
    out, context = [], []
    ids_list = ids.tolist()
    for a, b in zip(starts, ends):
        if trained[a]:
            out.append({"input_ids": context, "labels": ids_list[a:b]})
            context = []
        else:
            context = ids_list[a:b]
    return out, len(context)


class MDSDataset:
    """One MDS folder: samples appended, shards flushed at ``SIZE_LIMIT``, ``index.json`` on ``close``."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.config = json.dumps(_CONFIG, sort_keys=True).encode("utf-8")
        self.shards: list[dict] = []
        self.samples: list[bytes] = []
        self.size = 0
        self.rows = 0

    def write(self, turns_: list[dict[str, list[int]]]) -> None:
        data = json.dumps(turns_, separators=(",", ":")).encode("utf-8")
        sample = np.uint32(len(data)).tobytes() + data
        if self.samples and self.size + len(sample) + 4 + 8 + len(self.config) > SIZE_LIMIT:
            self._flush()
        self.samples.append(sample)
        self.size += len(sample) + 4
        self.rows += 1

    def _flush(self) -> None:
        n = len(self.samples)
        offsets = np.concatenate(([0], np.cumsum([len(s) for s in self.samples]))).astype(np.uint32)
        offsets += 4 + 4 * (n + 1) + len(self.config)
        raw = np.uint32(n).tobytes() + offsets.tobytes() + self.config + b"".join(self.samples)
        name = f"shard.{len(self.shards):05d}.mds"
        (self.folder / name).write_bytes(raw)
        self.shards.append(
            {"samples": n, "raw_data": {"basename": name, "bytes": len(raw), "hashes": {}}, "zip_data": None, **_CONFIG}
        )
        self.samples, self.size = [], 0

    def close(self) -> None:
        if self.samples:
            self._flush()
        text = json.dumps({"version": 2, "shards": self.shards}, sort_keys=True)
        (self.folder / "index.json").write_text(text, encoding="utf-8")


def write(sides: list[Side], dest: Destination, fingerprint: str) -> dict:
    for side in sides:
        refuse_weights(side, NAME)
    rows, tail = {}, 0
    for side in sides:
        split = side.name or "train"
        data = MDSDataset(dest.path(split))
        for chunk in chunks(side):
            for ids, labels in chunk.sequences():
                sample, dropped = turns(ids, labels)
                tail += dropped
                data.write(sample)
        data.close()
        rows[split] = data.rows
    return {"rows": rows, "untrained_tail_tokens": tail}
