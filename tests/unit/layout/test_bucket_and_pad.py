"""Bucket bounds (optimal, by brute force) and padding by position."""

from __future__ import annotations

import itertools
from collections import Counter

import numpy as np
import pytest
import torch

from padprep.config import PaddingSide
from padprep.layout.bucket import assign, optimal_bounds, padding_of
from padprep.layout.pad import pad_shard


def brute_force_padding(hist: Counter, k: int) -> int:
    lengths = sorted(hist)
    best = None
    for cut in itertools.combinations(lengths[:-1], k - 1):
        cost = padding_of(hist, sorted(set(cut) | {lengths[-1]}))
        best = cost if best is None else min(best, cost)
    return best


@pytest.mark.parametrize("seed", range(5))
def test_optimal_bounds_match_brute_force(seed):
    rng = np.random.default_rng(seed)
    hist = Counter(rng.integers(1, 60, size=200).tolist())
    for k in (1, 2, 3, 4):
        bounds = optimal_bounds(hist, target_waste=0.0, max_buckets=k)
        assert len(bounds) <= k and bounds[-1] == max(hist)
        assert padding_of(hist, bounds) == brute_force_padding(hist, k)


def test_default_bounds_reach_target_and_respect_multiple():
    rng = np.random.default_rng(0)
    hist = Counter(np.clip(rng.lognormal(5, 0.8, 5000).astype(int), 1, 2048).tolist())
    bounds = optimal_bounds(hist)
    real = sum(n * c for n, c in hist.items())
    assert padding_of(hist, bounds) / (real + padding_of(hist, bounds)) <= 0.025
    pow2 = [2**i for i in range(12)]
    assert padding_of(hist, bounds) < padding_of(hist, pow2) / 5
    b8 = optimal_bounds(hist, multiple_of=8)
    assert all(b % 8 == 0 for b in b8) and b8[-1] >= max(hist)
    assert list(assign(np.array([1, bounds[0], bounds[0] + 1]), bounds)) == [0, 0, 1]


@pytest.mark.parametrize("side", [PaddingSide.right, PaddingSide.left])
def test_padding_by_position_keeps_real_eos_when_pad_is_eos(side):
    eos = 2
    rows = [np.array([5, 6, eos], np.int32), np.array([7, eos], np.int32), np.array([8, 9, 10, eos], np.int32)]
    labels = [np.array([-100, 6, eos], np.int32), np.array([-100, eos], np.int32), np.array([-100, -100, 10, eos], np.int32)]
    lengths = np.array([len(r) for r in rows])
    out = pad_shard(np.concatenate(rows), np.concatenate(labels), lengths, 5, pad_id=eos, side=side)
    assert out.input_ids.shape == out.labels.shape == out.attention_mask.shape == (3, 5)
    for i, (r, lab) in enumerate(zip(rows, labels)):
        n = len(r)
        real = slice(0, n) if side is PaddingSide.right else slice(5 - n, 5)
        pad = slice(n, 5) if side is PaddingSide.right else slice(0, 5 - n)
        assert out.input_ids[i, real].tolist() == r.tolist()
        assert out.labels[i, real].tolist() == lab.tolist()  # the real eos keeps its label
        assert (out.labels[i, pad] == -100).all() and (out.input_ids[i, pad] == eos).all()
        assert out.attention_mask[i, real].eq(1).all() and out.attention_mask[i, pad].eq(0).all()
    if side is PaddingSide.left:
        assert out.attention_mask[:, -1].eq(1).all()  # generation reads the last position: always real
    assert out.input_ids.dtype == torch.int32


@pytest.mark.parametrize("extra", [-1, 1])
def test_lengths_that_do_not_add_up_to_the_tokens_are_refused(extra):
    ids = np.arange(1, 8, dtype=np.int32)  # 7 tokens
    lengths = np.array([3, 4 + extra])
    with pytest.raises(ValueError, match="do not add up"):
        pad_shard(ids, ids.copy(), lengths, 6, pad_id=0)


def test_rows_are_filled_in_input_order_with_weights():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 9, size=40)
    ids = rng.integers(1, 1000, size=int(lengths.sum())).astype(np.int32)
    weights = rng.random(len(ids)).astype(np.float32)
    for side in PaddingSide:
        out = pad_shard(ids, -ids, lengths, 8, pad_id=0, side=side, flat_weights=weights)
        starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
        for r, (s, n) in enumerate(zip(starts, lengths)):
            real = slice(0, n) if side is PaddingSide.right else slice(8 - n, 8)
            assert out.input_ids[r, real].tolist() == ids[s : s + n].tolist()
            assert out.labels[r, real].tolist() == (-ids[s : s + n]).tolist()
            assert np.array_equal(out.loss_weights[r, real].numpy(), weights[s : s + n])
            assert int(out.attention_mask[r].sum()) == n and float(out.loss_weights[r].sum()) == pytest.approx(
                weights[s : s + n].sum()
            )
