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
from typing import Iterator

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


_DECIMAL = np.zeros(0, dtype=object)  # id -> its decimal text, grown to the largest id seen


def _decimal(ids: np.ndarray) -> np.ndarray:
    """The decimal text of every id (an object array): ``str`` once per vocabulary entry, not once per token."""
    global _DECIMAL
    top = int(ids.max(initial=-1)) + 1
    if top > len(_DECIMAL):
        _DECIMAL = np.array([str(i) for i in range(max(top, 2 * len(_DECIMAL)))], dtype=object)
    return _DECIMAL[ids]


def turns(ids: np.ndarray, labels: np.ndarray, lengths: np.ndarray) -> Iterator[tuple[str, int]]:
    """Each conversation (flat ``ids`` / ``labels`` cut by ``lengths``) as the JSON text of its llm-foundry turns
    ``[{"input_ids": context, "labels": target}, ...]``, and how many untrained tokens after its last target were
    left out. Runs are found for the whole shard at once and each token is turned into text once (``json.dumps``
    of the lists costs twice the rest of the export)."""
    words = _decimal(ids).tolist()
    trained = labels != IGNORE_INDEX
    offsets = np.concatenate(([0], np.cumsum(lengths, dtype=np.int64)))
    cut = np.zeros(len(words) + 1, bool)
    cut[1:-1] = trained[1:] != trained[:-1]
    cut[offsets] = True
    bounds = np.flatnonzero(cut).tolist()
    run_trained = trained[bounds[:-1]].tolist() if len(words) else []
    run = 0
    for end in offsets[1:].tolist():
        out, context, left = [], "", 0
        while run < len(run_trained) and bounds[run] < end:
            a, b = bounds[run], bounds[run + 1]
            if run_trained[run]:
                out.append(f'{{"input_ids":[{context}],"labels":[{",".join(words[a:b])}]}}')
                context, left = "", 0
            else:
                context, left = ",".join(words[a:b]), b - a
            run += 1
        yield "[" + ",".join(out) + "]", left


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

    def write(self, text: str) -> None:
        """One sample: its ``turns`` column's JSON text."""
        data = text.encode("utf-8")
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
            for text, dropped in turns(chunk.ids, chunk.labels, chunk.lengths):
                tail += dropped
                data.write(text)
        data.close()
        rows[split] = data.rows
    return {"rows": rows, "untrained_tail_tokens": tail}
