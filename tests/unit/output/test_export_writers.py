"""Export writers on made-up rows: OLMo-core's parts (closed before the conversation that would pass their size,
never inside one, with each part's offsets), Megatron's shifted loss mask and its eos refusal."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from padprep.output.export import megatron, olmo_core
from padprep.output.export.source import Chunk, ExportError


def test_parts_never_split_a_conversation(tmp_path, monkeypatch):
    monkeypatch.setattr(olmo_core, "PART_TOKENS", 10)
    lengths = np.array([4, 5, 3, 12, 2, 2], np.int64)
    ids = np.arange(lengths.sum(), dtype=np.int32)
    labels = np.where(ids % 3 == 0, -100, ids).astype(np.int32)
    parts = olmo_core.Parts(tmp_path)
    parts.write(ids[:9], labels[:9], lengths[:2])  # written in two calls, as shard by shard
    parts.write(ids[9:], labels[9:], lengths[2:])
    parts.close()
    got_ids, got_docs = [], []
    for p in range(parts.part + 1):
        tokens = np.fromfile(tmp_path / f"token_ids_part_{p:04d}.npy", np.uint32)
        mask = np.fromfile(tmp_path / f"labels_mask_part_{p:04d}.npy", np.bool_)
        bounds = [tuple(map(int, line.split(","))) for line in gzip.open(tmp_path / f"token_ids_part_{p:04d}.csv.gz", "rt")]
        assert len(tokens) == len(mask) and bounds[-1][1] == len(tokens) and bounds[0][0] == 0
        assert len(tokens) <= 10 or len(bounds) == 1  # only a conversation longer than a part passes its size, alone
        got_ids += tokens.tolist()
        got_docs += [e - s for s, e in bounds]
        assert (mask == (labels[len(got_ids) - len(tokens) : len(got_ids)] != -100)).all()
    assert got_ids == ids.tolist() and got_docs == lengths.tolist() and parts.documents == 6
    assert parts.part + 1 == 4  # [4, 5] [3] [12] [2, 2]


def _chunk(rows: list[list[tuple[list[int], list[int]]]]) -> Chunk:
    seqs = [seq for row in rows for seq in row]
    return Chunk(
        ids=np.array([t for ids, _ in seqs for t in ids], np.int32),
        labels=np.array([t for _, labels in seqs for t in labels], np.int32),
        lengths=np.array([len(ids) for ids, _ in seqs], np.int64),
        per_row=np.array([len(row) for row in rows], np.int64),
    )


def test_megatron_loss_mask_is_shifted_within_each_conversation():
    x = -100
    rows = [[([9, 5, 6, 7], [x, x, 6, 7]), ([9, 8, 4], [x, 8, x])], [([9, 3], [x, 3])]]
    table, figures = megatron.packed_rows(_chunk(rows), eos=2)
    got = table.to_pylist()
    assert got[0] == {"input_ids": [9, 5, 6, 7, 9, 8, 4], "loss_mask": [0, 1, 1, 0, 1, 0, 0], "seq_start_id": [0, 4]}
    assert got[1] == {"input_ids": [9, 3], "loss_mask": [1, 0], "seq_start_id": [0]}
    assert figures == {"max_seqlen": 4, "max_per_row": 2, "min_row": 2, "rows": 2, "sequences": 3, "tokens": 9}


def test_megatron_refuses_a_trained_token_after_eos():
    x = -100
    with pytest.raises(ExportError, match="follow an eos token"):
        megatron.packed_rows(_chunk([[([9, 2, 7], [x, x, 7])]]), eos=2)
    # eos ending one conversation and the next one's first token (never trained) is fine
    megatron.packed_rows(_chunk([[([9, 4, 2], [x, 4, 2]), ([9, 5], [x, 5])]]), eos=2)
