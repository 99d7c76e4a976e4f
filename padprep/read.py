"""Stage 1, read: files -> ``RawRecord(source, line, text)``, streaming.

Nothing here parses records: a line that is not JSON is still a record, and normalize decides what
is wrong with it, so that every input record can be accounted for.
"""

from __future__ import annotations

import glob
import gzip
import io
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator

STDIN = "-"
# A line longer than this is not read into memory: it is reported as a record too long to process.
MAX_LINE_BYTES = 64 << 20


@dataclass(frozen=True)
class RawRecord:
    """One input record as found: ``line`` is 1-based for JSONL, the 0-based array index for .json."""

    source: str
    line: int
    text: str | None  # None when the bytes were not valid UTF-8 or the line was too long
    error: str | None = None
    raw: bytes | None = None  # the original bytes, kept only when ``text`` could not be produced


class InputError(Exception):
    """An input file that cannot be read at all (missing, unreadable, not a supported container)."""


def expand_inputs(patterns: list[str] | tuple[str, ...]) -> list[str]:
    """Expand globs and check existence, keeping the user's order; each file appears once."""
    files: list[str] = []
    for pattern in patterns:
        pattern = str(pattern)
        if pattern == STDIN:
            files.append(STDIN)
            continue
        matches = sorted(glob.glob(pattern, recursive=True)) if glob.has_magic(pattern) else [pattern]
        if not matches:
            raise InputError(f"{pattern}: no file matches this pattern")
        for m in matches:
            if not os.path.isfile(m):
                raise InputError(f"{m}: no such file")
            if m not in files:
                files.append(m)
    return files


def open_binary(path: str) -> BinaryIO:
    """Open a file for reading, decompressing .gz and .zst by extension."""
    if path == STDIN:
        return sys.stdin.buffer
    if path.endswith(".gz"):
        return gzip.open(path, "rb")  # type: ignore[return-value]
    if path.endswith(".zst"):
        import zstandard

        return zstandard.ZstdDecompressor().stream_reader(open(path, "rb"), closefd=True)  # type: ignore[return-value]
    return open(path, "rb")


def is_json_array_file(path: str) -> bool:
    """A `.json` file holds one array of records; everything else is JSON Lines."""
    name = path[:-3] if path.endswith(".gz") else path[:-4] if path.endswith(".zst") else path
    return name.endswith(".json")


def read_records(path: str) -> Iterator[RawRecord]:
    """Stream the records of one file."""
    if is_json_array_file(path):
        yield from _read_json_array(path)
    else:
        yield from _read_jsonl(path)


def _decode(source: str, line: int, data: bytes) -> RawRecord:
    if line == 1 and data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return RawRecord(source, line, data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        return RawRecord(source, line, None, f"not valid UTF-8 at byte {exc.start}", raw=data)


def _read_jsonl(path: str) -> Iterator[RawRecord]:
    with open_binary(path) as fh:
        buffered = io.BufferedReader(fh) if not isinstance(fh, io.BufferedReader) else fh  # type: ignore[arg-type]
        line_no = 0
        while True:
            data = buffered.readline(MAX_LINE_BYTES + 1)
            if not data:
                return
            line_no += 1
            if len(data) > MAX_LINE_BYTES and not data.endswith(b"\n"):
                _skip_to_newline(buffered)
                yield RawRecord(path, line_no, None, f"line longer than {MAX_LINE_BYTES} bytes", raw=data[:1024])
                continue
            if not data.strip():
                continue  # blank lines (and CRLF-only lines) are not records
            yield _decode(path, line_no, data.rstrip(b"\r\n"))


def _skip_to_newline(fh: BinaryIO) -> None:
    while True:
        chunk = fh.readline(1 << 20)
        if not chunk or chunk.endswith(b"\n"):
            return


def _read_json_array(path: str) -> Iterator[RawRecord]:
    """Stream the elements of a top-level JSON array without loading the file whole."""
    with open_binary(path) as fh:
        text = io.TextIOWrapper(fh, encoding="utf-8-sig", errors="strict")  # type: ignore[arg-type]
        decoder = json.JSONDecoder()
        buf, pos, index = "", 0, 0
        eof = False

        def fill() -> bool:
            nonlocal buf, pos, eof
            if eof:
                return False
            chunk = text.read(1 << 20)
            if not chunk:
                eof = True
                return False
            buf = buf[pos:] + chunk
            pos = 0
            return True

        def skip_ws() -> None:
            nonlocal pos
            while True:
                while pos < len(buf) and buf[pos] in " \t\r\n":
                    pos += 1
                if pos < len(buf) or not fill():
                    return

        try:
            fill()
            skip_ws()
            if pos >= len(buf) or buf[pos] != "[":
                raise InputError(f"{path}: a .json input must hold one JSON array of records")
            pos += 1
            while True:
                skip_ws()
                if pos < len(buf) and buf[pos] == "]":
                    return
                while True:
                    try:
                        _, end = decoder.raw_decode(buf, pos)
                        break
                    except json.JSONDecodeError as exc:
                        if fill():
                            continue
                        raise InputError(f"{path}: invalid JSON in array element {index}: {exc.msg}") from None
                yield RawRecord(path, index, buf[pos:end])
                index += 1
                pos = end
                skip_ws()
                if pos < len(buf) and buf[pos] == ",":
                    pos += 1
                elif pos < len(buf) and buf[pos] == "]":
                    return
                else:
                    raise InputError(f"{path}: expected ',' or ']' after array element {index - 1}")
        except UnicodeDecodeError as exc:
            raise InputError(f"{path}: not valid UTF-8 ({exc.reason})") from None
