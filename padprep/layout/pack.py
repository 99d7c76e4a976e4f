"""Stage 6 for ``--pack``: row lengths -> rows of exactly ``capacity`` tokens, by best-fit decreasing.

Placement needs the lengths only (one int array, never the rows). Conversations are taken longest
first (equal lengths in input order) and each goes into the open row whose free space is the
smallest that still holds it; when none does, a new row is opened. A conversation is never split.

Bins are grouped by free space, not searched one by one. For a run of ``m`` conversations of one
length ``s``, the best fit is the smallest free space ``c >= s`` held by any bin; sequential
best-fit then puts ``c // s`` of them into each such bin in turn (a bin with ``c - s >= s`` left is
itself the new best fit, and no bin had free space in ``[s, c)``), so a whole run moves many bins
at once. The work is a few numpy / list operations per (length, free space) pair met, not per
conversation: ~2M lengths place in about a second.

Ties are broken by fixed rules, so the placement is a function of the lengths alone: equal lengths
are placed in input order, and among bins with the same free space the one that reached it last is
used first.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Placement:
    """Where every conversation goes.

    ``order`` lists row indices (input order numbers) bin after bin, each bin's conversations in
    the order they were placed; bin ``b`` holds ``order[starts[b]:starts[b + 1]]``.
    """

    capacity: int
    order: np.ndarray  # int32 (n,): input indices, bin after bin
    starts: np.ndarray  # int64 (bins + 1,): where each bin begins in ``order``
    bin_of: np.ndarray  # int32 (n,): the bin of each input row

    @property
    def bins(self) -> int:
        return len(self.starts) - 1

    def used(self, lengths: np.ndarray) -> np.ndarray:
        """Real tokens in each bin."""
        return np.bincount(self.bin_of, weights=lengths, minlength=self.bins).astype(np.int64)


def best_fit_decreasing(lengths: np.ndarray, capacity: int) -> Placement:
    """Pack conversations of these lengths into bins of ``capacity`` tokens by best-fit decreasing.

    Args:
        lengths: the length of each conversation, in input order (each in ``1..capacity``).
        capacity: tokens per bin (the row length, ``--max-length``).

    Returns:
        A ``Placement``: which conversations share each bin, in which order.

    Example:
        >>> p = best_fit_decreasing(np.array([5, 3, 4, 2]), capacity=7)
        >>> [p.order[p.starts[b]:p.starts[b + 1]].tolist() for b in range(p.bins)]
        [[0, 3], [2, 1]]
    """
    lengths = np.asarray(lengths)
    if capacity < 1:
        raise ValueError(f"capacity must be positive, got {capacity}")
    if len(lengths) and (lengths.min() < 1 or lengths.max() > capacity):
        raise ValueError(f"every length must be in 1..{capacity}; got {int(lengths.min())}..{int(lengths.max())}")
    lengths = lengths.astype(np.int32, copy=False)
    # Longest first, equal lengths in input order: a stable sort on (capacity - length). Indices are
    # int32 (2**31 conversations is far beyond a build) to halve the memory of every array here.
    by_size = np.argsort(capacity - lengths, kind="stable").astype(np.int32)
    per_size = np.bincount(lengths, minlength=capacity + 1)[::-1]  # conversations of each length, longest first
    ends = np.cumsum(per_size)
    bin_of = np.empty(len(lengths), dtype=np.int32)
    free = _FreeSpace(capacity)
    for size in np.flatnonzero(per_size).tolist():
        hi = int(ends[size])
        _place_run(by_size[hi - int(per_size[size]) : hi], capacity - size, free, bin_of)
    # Bin after bin; within a bin, in the order placed (``by_size`` order): a stable sort by bin.
    order = by_size[np.argsort(bin_of[by_size], kind="stable")]
    starts = np.concatenate(([0], np.cumsum(np.bincount(bin_of, minlength=free.opened))))
    return Placement(capacity, order, starts, bin_of)


class _FreeSpace:
    """Open bins grouped by free space: ``bins[c]`` is a stack of bin ids with ``c`` tokens free."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.bins: list[list[int]] = [[] for _ in range(capacity + 1)]
        self.nonempty = np.zeros(capacity + 1, dtype=bool)
        self.opened = 0

    def best_fit(self, size: int) -> int:
        """The smallest free space that holds ``size`` among open bins; ``capacity`` (a new bin) if none."""
        candidates = self.nonempty[size : self.capacity]
        if not len(candidates):
            return self.capacity
        first = int(candidates.argmax())
        return size + first if candidates[first] else self.capacity

    def take(self, space: int, k: int) -> list[int]:
        """Up to ``k`` bins with ``space`` free, the most recent first; new bins when ``space`` is capacity."""
        if space == self.capacity:
            taken = list(range(self.opened, self.opened + k))
            self.opened += k
            return taken
        stack = self.bins[space]
        taken = stack[: -k - 1 : -1] if k < len(stack) else stack[::-1]
        del stack[len(stack) - len(taken) :]
        self.nonempty[space] = bool(stack)
        return taken

    def put(self, space: int, ids: list[int]) -> None:
        if space > 0 and ids:  # a full bin is never offered again
            self.bins[space].extend(ids)
            self.nonempty[space] = True


def _place_run(items: np.ndarray, size: int, free: _FreeSpace, bin_of: np.ndarray) -> None:
    """Place ``items`` (all of length ``size``, in placement order) exactly as one-by-one best fit would."""
    done = 0
    while done < len(items):
        space = free.best_fit(size)
        per_bin = space // size  # a bin keeps taking them while its free space still holds one
        left = len(items) - done
        k = -(-left // per_bin)
        if space < free.capacity:
            k = min(k, len(free.bins[space]))
        taken = free.take(space, k)
        count = min(left, k * per_bin)
        bin_of[items[done : done + count]] = np.repeat(np.asarray(taken, dtype=np.int32), per_bin)[:count]
        done += count
        last = count - (k - 1) * per_bin  # conversations in the last bin taken (the others got per_bin)
        free.put(space - per_bin * size, taken[:-1])
        free.put(space - last * size, taken[-1:])
