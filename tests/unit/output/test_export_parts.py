"""OLMo-core parts: a part is closed before the conversation that would pass its size, never inside one, and each
part's metadata holds its conversations' offsets in that part."""

from __future__ import annotations

import gzip

import numpy as np

from padprep.output.export import olmo_core


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
