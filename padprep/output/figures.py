"""What ``inspect`` computes alike for every kind of build: its error, shares, the length histogram, the mixture."""

from __future__ import annotations

from typing import Callable, Iterator

import numpy as np

from padprep.errors import EXIT_FAILED, EXIT_USAGE, PadprepError

_HIST_BINS = 12


class InspectError(PadprepError):
    """Not a padprep output (exit 2), a damaged one (``damaged``: exit 1), or no tokenizer for --show."""

    def __init__(self, message: str, damaged: bool = False):
        super().__init__(message, EXIT_FAILED if damaged else EXIT_USAGE)
        self.damaged = damaged


def highlights(console) -> bool:
    """Whether decoded rows can show trained text in colour: a terminal, with colour not turned off
    (``NO_COLOR``, ``TERM=dumb``). Otherwise the text is marked (``[[trained]]``), never left unmarked."""
    return console.is_terminal and console.color_system is not None and not console.no_color


def readable_shards(
    listed: list[dict], read: Callable[[dict], dict], problems: list[str] | None, unreadable: list[str]
) -> Iterator[tuple[dict, dict]]:
    """Each listed shard with its columns (``read(shard)``). One that cannot be read raises its
    ``InspectError``, or, when ``problems`` is given, is reported there (one line naming the file),
    added to ``unreadable`` and skipped."""
    for shard in listed:
        try:
            cols = read(shard)
        except InspectError as exc:
            if problems is None:
                raise
            problems.append(str(exc))
            unreadable.append(shard["file"])
            continue
        yield shard, cols


def print_records(console, stats: dict, kind: str, written: str, truncated: str) -> None:
    """The first lines of ``inspect``: the output and its padprep version (and ``kind``), then where every
    record went, as the manifest counts them (``written`` / ``truncated``: what this kind of build calls them)."""
    rec = stats["records"]
    console.print(f"[bold]{stats['output']}[/bold]  (padprep {stats['manifest'].get('padprep_version')}{kind})")
    if rec.get("records_read") is not None:
        console.print(
            f"records: {rec['records_read']:,} read = {rec['rows_written']:,} {written} + {rec['rejected']:,} rejected"
            f" + {rec['dropped']:,} dropped by policy ({rec['truncated']:,} {truncated})"
        )


def frac(a: int, b: int) -> float:
    return a / b if b else 0.0


def histogram(lengths: np.ndarray) -> list[dict]:
    if not len(lengths):
        return []
    hi = int(lengths.max())
    edges = np.unique(np.linspace(0, hi, _HIST_BINS + 1).astype(int))
    counts, _ = np.histogram(lengths, bins=edges)
    return [{"from": int(edges[i]) + (i > 0), "to": int(edges[i + 1]), "rows": int(c)} for i, c in enumerate(counts)]


def mixture(mixture: dict) -> dict:
    """A recipe side's sources as they came out: rows and tokens of each, and their shares."""
    sources = mixture.get("sources") or []
    rows = sum(s.get("rows_written", 0) for s in sources)
    tokens = sum(s.get("real_tokens", 0) for s in sources)
    return {
        "side": mixture.get("side"),
        "sources": [
            {
                **s,
                "row_share": frac(s.get("rows_written", 0), rows),
                "token_share": frac(s.get("real_tokens", 0), tokens),
            }
            for s in sources
        ],
    }
