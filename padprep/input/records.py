"""``RawRecord``: one input record as a reader found it, before anything parses it."""

from __future__ import annotations

from dataclasses import dataclass

# The files a directory stands for: JSON Lines and JSON (plain or compressed), Parquet, Arrow.
DATA_SUFFIXES = tuple(f"{ext}{comp}" for ext in (".jsonl", ".json") for comp in ("", ".gz", ".zst")) + (".parquet", ".arrow")


@dataclass(frozen=True)
class RawRecord:
    """One input record as found: ``line`` is 1-based for JSON Lines, the 0-based array index for .json,
    the 0-based row of a Parquet or Arrow file (``unit`` says which)."""

    source: str
    line: int
    text: str | None  # None when the bytes were not valid UTF-8 or the record was too long
    error: str | None = None
    raw: bytes | None = None  # the original bytes (or their start), kept only when ``text`` could not be produced
    unit: str = "line"  # "line", "index" or "row": what ``line`` counts
    format: str | None = None  # the format of the record's file, once detected (formats.with_formats)
    raw_is_prefix: bool = False  # ``raw`` holds only the first KEEP_PREFIX_BYTES of the record
    error_code: str | None = None  # the reject code of ``error`` (not_utf8, too_long_line...)

    def with_format(self, fmt: str) -> "RawRecord":
        """This record tagged with its file's format (a direct copy: ``dataclasses.replace`` is 10x slower)."""
        return RawRecord(
            self.source, self.line, self.text, self.error, self.raw, self.unit, fmt, self.raw_is_prefix, self.error_code
        )
