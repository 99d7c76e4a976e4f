"""What ``inspect`` computes alike for every kind of build: its error, shares, the length histogram, the mixture,
where each row came from (the shards' sidecars)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pyarrow as pa

from padprep.errors import EXIT_FAILED, EXIT_USAGE, PadprepError
from padprep.layout.shards import read_sources
from padprep.schema import SOURCE_INPUT, SOURCE_LINE

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


def shard_sources(output: Path, shard: dict) -> list[list[tuple[int, int]]] | None:
    """Per row of a shard, the (input index, line) of each sequence in it, from its sidecar (None: not recorded)."""
    if not shard.get("sources"):
        return None
    path = Path(output) / shard["sources"]
    try:
        cols = read_sources(path)
    except (OSError, pa.ArrowException) as exc:
        raise InspectError(f"{path}: cannot read the rows' sources ({exc})", damaged=True) from None
    out: list[list[tuple[int, int]]] = [[] for _ in range(shard["rows"])]
    for row, i, line in zip(cols["row"].tolist(), cols[SOURCE_INPUT].tolist(), cols[SOURCE_LINE].tolist()):
        out[row].append((i, line))
    return out


def source_text(inputs: list[str], index: int, line: int) -> str:
    """``FILE:N``, N in the file's own unit (JSON Lines: the line, from 1; a JSON array: the element's index, a
    Parquet or Arrow file: the row, both from 0), as ``--source`` takes it and ``rejects.jsonl`` names it."""
    path = inputs[index] if 0 <= index < len(inputs) else f"input #{index}"
    unit = source_unit(path)
    return f"{path}:{line}" + ("" if unit == "line" else f" ({unit} {line})")


def find_source(inputs: list[str], given: str) -> tuple[int, int]:
    """``FILE:N`` -> (input index, N): FILE as given to the build, or the same file by another path."""
    path, sep, number = given.rpartition(":")
    if not sep or not number.strip().isdigit():
        raise InspectError(f"--source {given}: expected FILE:N (a record's line, or its element or row for .json / Parquet)")
    for i, name in enumerate(inputs):
        if name == path or (os.path.exists(path) and os.path.exists(name) and os.path.samefile(name, path)):
            return i, int(number)
    raise InspectError(f"--source {given}: {path} is not an input of this build (its inputs: {', '.join(inputs[:5])})")


def source_unit(path: str) -> str:
    """What a record's number counts in ``path``: as its reader numbers them (``RawRecord.unit``)."""
    from padprep.input.columnar import is_columnar
    from padprep.input.read import is_json_array_file

    if is_columnar(path):
        return "row"
    if is_json_array_file(path):
        try:
            with open(path, "rb") as fh:
                head = fh.read(4096).lstrip(b"\xef\xbb\xbf").lstrip()
            return "index" if head[:1] == b"[" else "line"
        except OSError:
            return "index"
    return "line"
