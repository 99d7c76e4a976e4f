"""``RawRecord``: one input record as a reader found it, before anything parses it."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any, Callable

# The files a directory stands for: JSON Lines and JSON (plain or compressed), Parquet, Arrow.
DATA_SUFFIXES = tuple(f"{ext}{comp}" for ext in (".jsonl", ".json") for comp in ("", ".gz", ".zst")) + (".parquet", ".arrow")


def read_so_far(tell: Callable[[], int], size: int) -> Callable[[], int]:
    """How many bytes of a file reading has passed, for progress: ``tell()`` while the file is open, its whole
    ``size`` once it is closed (read to its end, or left), never an error: a display asks at any time."""

    def position() -> int:
        try:
            return tell()
        except (OSError, ValueError):  # closed, or not seekable
            return size

    return position


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
    # A Parquet / Arrow row as pyarrow gives it (``text`` is then None): it is turned into the value its
    # JSON form gives (``json_value``) where it is converted, in a worker, and into text only for a reject.
    row: dict | None = None

    def with_format(self, fmt: str) -> "RawRecord":
        """This record tagged with its file's format (a direct copy: ``dataclasses.replace`` is 10x slower)."""
        return RawRecord(
            self.source, self.line, self.text, self.error, self.raw, self.unit, fmt, self.raw_is_prefix, self.error_code, self.row
        )

    @property
    def readable(self) -> bool:
        """Whether there is a record to parse (text, or a row): not unreadable bytes or a record too long to read."""
        return self.text is not None or self.row is not None

    def json_value(self) -> Any:
        """A row's value exactly as ``json.loads`` of its JSON text gives it (None for a text record)."""
        return None if self.row is None else json_value(self.row)

    def text_of(self) -> str | None:
        """The record's text: as read, or a row's JSON text (made here: only rejects and size checks need it)."""
        if self.text is not None or self.row is None:
            return self.text
        return json.dumps(self.json_value(), ensure_ascii=False)


def json_value(value: Any) -> Any:
    """A columnar value as its JSON form reads back: objects without their null fields, all the way down
    (list items stay, nulls included), tuples as lists, bytes as base64, dates and decimals as text.

    Example:
        >>> json_value({"role": "user", "content": "hi", "tool_calls": None, "data": b"\x00"})
        {'role': 'user', 'content': 'hi', 'data': 'AA=='}
    """
    if isinstance(value, dict):
        return {k: json_value(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [json_value(v) for v in value]
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(bytes(value)).decode("ascii")
    return str(value)
