"""Stage 7, pad: the rows of one shard -> ``(rows, seq_len)`` tensors, in one vectorised torch op each.

Padding is placed by *position* (from the row lengths), never found by comparing ids with the pad
id, so when pad == eos the real eos keeps its label. ``attention_mask`` is 1 on real tokens and 0 on
padding; labels are -100 on every padded position.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .config import PaddingSide
from .mask import IGNORE_INDEX


@dataclass(frozen=True)
class PaddedShard:
    input_ids: torch.Tensor  # int32 (rows, seq_len)
    attention_mask: torch.Tensor  # int32 (rows, seq_len)
    labels: torch.Tensor  # int32 (rows, seq_len)


def pad_shard(
    flat_ids: np.ndarray,
    flat_labels: np.ndarray,
    lengths: np.ndarray,
    seq_len: int,
    pad_id: int,
    side: PaddingSide = PaddingSide.right,
) -> PaddedShard:
    """Scatter the concatenated rows into padded tensors; row-major order of real positions = input order."""
    lengths_t = torch.from_numpy(np.ascontiguousarray(lengths, dtype=np.int64))
    if len(lengths_t) and int(lengths_t.max()) > seq_len:
        raise ValueError("a row is longer than its shard's seq_len")
    positions = torch.arange(seq_len, dtype=torch.int64)
    if side is PaddingSide.right:
        real = positions[None, :] < lengths_t[:, None]
    else:
        real = positions[None, :] >= (seq_len - lengths_t)[:, None]
    rows = len(lengths_t)
    input_ids = torch.full((rows, seq_len), pad_id, dtype=torch.int32)
    labels = torch.full((rows, seq_len), IGNORE_INDEX, dtype=torch.int32)
    input_ids[real] = torch.from_numpy(np.array(flat_ids, dtype=np.int32))  # a copy: inputs may be read-only views
    labels[real] = torch.from_numpy(np.array(flat_labels, dtype=np.int32))
    return PaddedShard(input_ids, real.to(torch.int32), labels)


def shuffle_rows(shard: PaddedShard, seed: int) -> PaddedShard:
    """The same rows in an order drawn from ``seed`` (one torch generator per shard: reproducible)."""
    perm = torch.randperm(shard.input_ids.shape[0], generator=torch.Generator().manual_seed(seed))
    return PaddedShard(shard.input_ids[perm], shard.attention_mask[perm], shard.labels[perm])
