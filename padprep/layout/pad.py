"""Stage 7, pad: the rows of one shard -> ``(rows, seq_len)`` tensors, in one vectorised torch op each.

Padding is placed by *position* (from the row lengths), never found by comparing ids with the pad
id, so when pad == eos the real eos keeps its label. ``attention_mask`` is 1 on real tokens and 0 on
padding; labels are -100 on every padded position.

A packed row (``pad_packed_shard``) holds several whole conversations back to back, then padding:
``position_ids`` restart at 0 at every conversation (and count 0, 1, ... over the padding tail,
one more segment), and the first label of every conversation is -100, so no position is trained to
predict across a boundary.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from padprep.config import PaddingSide
from padprep.schema import IGNORE_INDEX


@dataclass(frozen=True)
class PaddedShard:
    input_ids: torch.Tensor  # int32 (rows, seq_len)
    attention_mask: torch.Tensor  # int32 (rows, seq_len)
    labels: torch.Tensor  # int32 (rows, seq_len)
    position_ids: torch.Tensor | None = None  # packed shards: int32 (rows, seq_len), 0 at every sequence start
    seq_lens: np.ndarray | None = None  # packed shards: int32, the sequences' lengths, row after row
    seq_counts: np.ndarray | None = None  # packed shards: int32 (rows,), sequences in each row
    loss_weights: torch.Tensor | None = None  # float32 (rows, seq_len), where some message has a fractional weight
    # Each sequence's source (int64 (sequences, 2): its input's index and its line), row after row: what the
    # shard's sidecar lists (``shards.write_sources``). A row of an unpacked shard is one sequence.
    sources: np.ndarray | None = None

    @property
    def packed(self) -> bool:
        return self.position_ids is not None


def pad_shard(
    flat_ids: np.ndarray,
    flat_labels: np.ndarray,
    lengths: np.ndarray,
    seq_len: int,
    pad_id: int,
    side: PaddingSide = PaddingSide.right,
    flat_weights: np.ndarray | None = None,
    sources: np.ndarray | None = None,
) -> PaddedShard:
    """Scatter the concatenated rows into padded tensors; row-major order of real positions = input order.

    ``flat_weights`` (float32 loss weights, concatenated like the ids) become ``loss_weights``, 0 on padding;
    ``sources`` (each row's input and line) go with their rows."""
    lengths_t = torch.from_numpy(np.ascontiguousarray(lengths, dtype=np.int64))
    if len(lengths_t) and int(lengths_t.max()) > seq_len:
        raise ValueError("a row is longer than its shard's seq_len")
    if int(lengths_t.sum()) != len(flat_ids) or len(flat_labels) != len(flat_ids):
        raise ValueError("the row lengths do not add up to the tokens given")  # masked_scatter_ would take a prefix
    positions = torch.arange(seq_len, dtype=torch.int64)
    if side is PaddingSide.right:
        real = positions[None, :] < lengths_t[:, None]
    else:
        real = positions[None, :] >= (seq_len - lengths_t)[:, None]
    rows = len(lengths_t)
    input_ids = torch.full((rows, seq_len), pad_id, dtype=torch.int32)
    labels = torch.full((rows, seq_len), IGNORE_INDEX, dtype=torch.int32)
    # masked_scatter_ fills the real positions in row-major order, as ``x[real] = src`` does, 6-8x faster
    # (index_put with a boolean mask first lists the mask's coordinates; docs/performance.md)
    input_ids.masked_scatter_(real, torch.from_numpy(np.array(flat_ids, dtype=np.int32)))  # a copy: inputs may be read-only views
    labels.masked_scatter_(real, torch.from_numpy(np.array(flat_labels, dtype=np.int32)))
    weights = None
    if flat_weights is not None:
        weights = torch.zeros((rows, seq_len), dtype=torch.float32)
        weights.masked_scatter_(real, torch.from_numpy(np.array(flat_weights, dtype=np.float32)))
    return PaddedShard(input_ids, real.to(torch.int32), labels, loss_weights=weights, sources=sources)


def pad_packed_shard(
    flat_ids: np.ndarray,
    flat_labels: np.ndarray,
    seq_lens: np.ndarray,
    seq_counts: np.ndarray,
    seq_len: int,
    pad_id: int,
    flat_weights: np.ndarray | None = None,
    sources: np.ndarray | None = None,
) -> PaddedShard:
    """Packed rows: ``seq_counts[r]`` whole sequences back to back in row ``r``, then right padding.

    Each sequence's first label becomes -100; ``position_ids`` restart at 0 at every sequence and at
    the padding tail.

    Args:
        flat_ids, flat_labels: the sequences' ids and labels, concatenated in row order.
        seq_lens: each sequence's length (all ``>= 1``), in the same order.
        seq_counts: how many of those sequences each row takes (all ``>= 1``).
        seq_len: the row length; the sequences of a row must fit in it.
        pad_id: the id written on padding.
        flat_weights: float32 loss weights, concatenated like the ids (0 where a label is -100), or None.
        sources: each sequence's input and line (sequences x 2), in the same order, or None.

    Example:
        >>> s = pad_packed_shard(np.array([5, 6, 7, 8]), np.array([-100, 6, -100, 8]), np.array([2, 2]),
        ...                      np.array([1, 1]), seq_len=3, pad_id=0)
        >>> s.input_ids.tolist(), s.labels.tolist(), s.position_ids.tolist()
        ([[5, 6, 0], [7, 8, 0]], [[-100, 6, -100], [-100, 8, -100]], [[0, 1, 0], [0, 1, 0]])
    """
    seq_lens = np.ascontiguousarray(seq_lens, dtype=np.int64)
    seq_counts = np.ascontiguousarray(seq_counts, dtype=np.int64)
    if len(seq_counts) and seq_counts.min() < 1:
        raise ValueError("a packed row holds no sequence")
    if seq_counts.sum() != len(seq_lens) or seq_lens.sum() != len(flat_ids):
        raise ValueError("sequence lengths and counts do not add up to the tokens given")
    seq_starts = np.cumsum(seq_lens) - seq_lens  # where each sequence begins in the flat arrays
    labels = np.array(flat_labels, dtype=np.int32)
    labels[seq_starts] = IGNORE_INDEX
    if flat_weights is not None:
        flat_weights = np.array(flat_weights, dtype=np.float32)
        flat_weights[seq_starts] = 0.0
    row_lengths = np.add.reduceat(seq_lens, np.cumsum(seq_counts) - seq_counts) if len(seq_counts) else seq_lens[:0]
    shard = pad_shard(flat_ids, labels, row_lengths, seq_len, pad_id, PaddingSide.right, flat_weights)
    # Each real token's place in its sequence, in int32 (a shard holds far fewer than 2**31 tokens).
    within = torch.arange(len(flat_ids), dtype=torch.int32)
    within -= torch.repeat_interleave(torch.from_numpy(seq_starts.astype(np.int32)), torch.from_numpy(seq_lens))
    positions = torch.arange(seq_len, dtype=torch.int32)[None, :] - torch.from_numpy(row_lengths.astype(np.int32))[:, None]
    positions.masked_scatter_(shard.attention_mask.bool(), within)  # the tail keeps 0, 1, ...: a segment of its own
    return PaddedShard(
        shard.input_ids,
        shard.attention_mask,
        shard.labels,
        positions,
        seq_lens.astype(np.int32),
        seq_counts.astype(np.int32),
        shard.loss_weights,
        sources,
    )


def shuffle_rows(shard: PaddedShard, seed: int) -> PaddedShard:
    """The same rows in an order drawn from ``seed`` (one torch generator per shard: reproducible)."""
    perm = torch.randperm(shard.input_ids.shape[0], generator=torch.Generator().manual_seed(seed))
    weights = shard.loss_weights[perm] if shard.loss_weights is not None else None
    order = perm.numpy()
    if not shard.packed:
        sources = shard.sources[order] if shard.sources is not None else None
        return PaddedShard(
            shard.input_ids[perm], shard.attention_mask[perm], shard.labels[perm], loss_weights=weights, sources=sources
        )
    offsets = np.concatenate(([0], np.cumsum(shard.seq_counts, dtype=np.int64)))
    # each row's sequences, rows in the new order: what seq_lens and the sources list
    seqs = np.concatenate([np.arange(offsets[r], offsets[r + 1]) for r in order]) if len(order) else np.zeros(0, np.int64)
    return PaddedShard(
        shard.input_ids[perm],
        shard.attention_mask[perm],
        shard.labels[perm],
        shard.position_ids[perm],
        shard.seq_lens[seqs].astype(np.int32),
        shard.seq_counts[order],
        weights,
        shard.sources[seqs] if shard.sources is not None else None,
    )
