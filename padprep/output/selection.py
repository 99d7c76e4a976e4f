"""Which rows ``inspect --show`` shows: the first N, or those its selectors pick.

Selectors combine (every one given must hold): ``--bucket SEQ_LEN`` (rows of that bucket), ``--row SHARD:R``
or ``--row K`` (one row: by shard file and row, or the K-th row of the output in shard order, from 0),
``--source FILE:N`` (the rows of one record), ``--grep REGEX`` (rows whose decoded text matches),
``--sample SEED`` (N rows drawn at random with that seed instead of the first N). Rows are shown in the
output's order whatever picked them, so the same command shows the same rows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from padprep.output.figures import InspectError, find_source, shard_sources

DEFAULT_SHOWN = 5  # rows shown when a selector is given without --show N


@dataclass(frozen=True)
class RowSelector:
    """What ``inspect`` was asked to show (see the module's description)."""

    count: int = 0
    bucket: int | None = None
    row: str | None = None
    source: str | None = None
    grep: str | None = None
    sample: int | None = None

    @property
    def active(self) -> bool:
        return bool(self.count) or any(v is not None for v in (self.bucket, self.row, self.source, self.grep, self.sample))

    @property
    def limit(self) -> int | None:
        """How many rows at most (None: every match, for a record or a row named)."""
        if self.count:
            return self.count
        return None if self.source is not None or self.row is not None else DEFAULT_SHOWN


@dataclass
class PickedRow:
    """One row to show: its shard's entry and columns, its index, and the (input, line) of each sequence in it."""

    shard: dict
    cols: dict
    row: int
    sources: list[tuple[int, int]] = field(default_factory=list)


def select_rows(
    output: Path,
    stats: dict,
    inputs: list[str],
    selector: RowSelector,
    read: Callable[[dict], dict],
    text_of: Callable[[dict, int], str],
) -> list[PickedRow]:
    """The rows ``selector`` picks, in the output's order. ``read(shard)`` gives a shard's columns; ``text_of(cols,
    row)`` a row's decoded text (asked only with ``--grep``)."""
    shards = [s for s in stats["shards"] if s["file"] not in stats["unreadable"]]
    if selector.bucket is not None and selector.bucket not in {s["seq_len"] for s in shards}:
        buckets = ", ".join(str(b) for b in sorted({s["seq_len"] for s in shards}))
        raise InspectError(f"--bucket {selector.bucket}: no such bucket in {output} (its buckets: {buckets})")
    wanted = find_source(inputs, selector.source) if selector.source else None
    pattern = _pattern(selector.grep)
    candidates = _candidates(shards, selector)
    if selector.sample is not None:
        candidates = [candidates[i] for i in np.random.default_rng(selector.sample).permutation(len(candidates))]
    opened: dict[int, tuple[dict, list | None]] = {}
    picked: list[tuple[int, int, PickedRow]] = []
    for k, r in candidates:
        if selector.limit is not None and len(picked) >= selector.limit:
            break
        if k not in opened:
            opened[k] = (read(shards[k]), shard_sources(output, shards[k]))
        cols, sources = opened[k]
        here = sources[r] if sources is not None else []
        if wanted is not None and wanted not in here:
            continue
        if pattern is not None and not pattern.search(text_of(cols, r)):
            continue
        picked.append((k, r, PickedRow(shards[k], cols, r, here)))
    return [p for _, _, p in sorted(picked, key=lambda t: (t[0], t[1]))]


def _candidates(shards: list[dict], selector: RowSelector) -> list[tuple[int, int]]:
    """Every (shard index, row) the bucket and row selectors allow, in the output's order."""
    out = [(k, r) for k, s in enumerate(shards) for r in range(s["rows"]) if selector.bucket in (None, s["seq_len"])]
    if selector.row is None:
        return out
    name, sep, number = selector.row.rpartition(":")
    if not number.strip().isdigit():
        raise InspectError(f"--row {selector.row}: expected SHARD:R (a shard file and its row) or K (the K-th row, from 0)")
    if not sep:
        k = int(number)
        total = sum(s["rows"] for s in shards)
        if k >= total:
            raise InspectError(f"--row {k}: the output has {total:,} rows (from 0)")
        return [out[k]] if selector.bucket is None else [c for c in out if c == _nth(shards, k)]
    files = [s["file"] for s in shards]
    if name not in files:
        raise InspectError(f"--row {selector.row}: {name} is not a shard of this output (see inspect's shard list)")
    k = files.index(name)
    if int(number) >= shards[k]["rows"]:
        raise InspectError(f"--row {selector.row}: {name} has {shards[k]['rows']:,} rows (from 0)")
    return [c for c in out if c == (k, int(number))]


def _nth(shards: list[dict], k: int) -> tuple[int, int]:
    for i, s in enumerate(shards):
        if k < s["rows"]:
            return i, k
        k -= s["rows"]
    raise IndexError(k)


def _pattern(grep: str | None) -> re.Pattern | None:
    if grep is None:
        return None
    try:
        return re.compile(grep)
    except re.error as exc:
        raise InspectError(f"--grep {grep!r}: not a regular expression ({exc})") from None


__all__ = ["DEFAULT_SHOWN", "PickedRow", "RowSelector", "select_rows"]
