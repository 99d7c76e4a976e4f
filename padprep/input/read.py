"""Stage 1, read: files -> ``RawRecord(source, line, text)``, streaming, in bounded memory.

Nothing here parses records: a line that is not JSON is still a record, and normalize decides what
is wrong with it, so that every input record can be accounted for.

Containers:

* JSON Lines (``.jsonl`` and anything not named ``.json``): one record per line; blank lines are
  not records; a byte-order mark, CRLF endings and surrounding whitespace are accepted. A line
  longer than ``MAX_LINE_BYTES`` is never held in memory: it becomes a record with an error.
* ``.json``: decided from the first non-space byte, and reported: ``[`` one top-level array of
  records, streamed element by element (never loaded whole; elements are found by a byte scanner
  that tracks strings and brackets, so a malformed element is one bad record, not a failed file);
  ``{`` one object, pretty-printed or not, that is one record, unless it is only the first of
  several objects: then, and for anything else, JSON Lines (``datasets``' ``to_json`` writes JSON
  Lines under that name).
* ``-``: standard input, JSON Lines, or one array when it starts with ``[``.
* ``.gz`` / ``.zst`` suffixes on any of these are decompressed while streaming.
* ``.parquet`` (or Parquet's magic bytes) and ``.arrow`` (Arrow IPC, ``datasets.save_to_disk``'s
  ``data-*.arrow``): one record per row (``columnar``).
* a URL (``http(s)://``, ``s3://``, ...: ``remote``) holds any of these, named by its path's suffix.
"""

from __future__ import annotations

import glob
import gzip
import io
import json
import os
import re
import sys
import zlib
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

from padprep.errors import EXIT_USAGE, PadprepError
from padprep.input.columnar import is_columnar, is_parquet, read_arrow, read_parquet
from padprep.input.hub import DEFAULT_SPLIT, HubError, hub_files, is_hub
from padprep.input.records import DATA_SUFFIXES, RawRecord, read_so_far
from padprep.input.remote import HashingReader, RemoteError, download, is_remote, open_url, url_name

STDIN = "-"
# A record longer than this is not read into memory: it is reported as a record too long to process.
MAX_LINE_BYTES = 64 << 20
# What is kept of such a record for rejects.jsonl.
KEEP_PREFIX_BYTES = 1024
_CHUNK = 1 << 20
_BOM = b"\xef\xbb\xbf"
_WS = b" \t\r\n"


class InputError(PadprepError):
    """An input file that cannot be read at all (missing, unreadable, not a supported container): exit 2."""

    exit_code = EXIT_USAGE


def as_input(text: str | os.PathLike) -> Path | str:
    """An input as ``BuildConfig`` holds it: a path, or a string for a URL and an ``hf://`` path
    (``Path`` would fold their ``//`` into ``/``).

    Example:
        >>> as_input("https://host/a.jsonl"), as_input("data/a.jsonl")
        ('https://host/a.jsonl', PosixPath('data/a.jsonl'))
    """
    text = str(text) if not isinstance(text, str) else text
    return text if is_hub(text) or is_remote(text) else Path(text)


def expand_inputs(
    patterns: list[str] | tuple[str, ...],
    log: Callable[[str], None] | None = None,
    exclude: str | None = None,
    split: str = DEFAULT_SPLIT,
) -> list[str]:
    """Expand globs and directories and check existence, keeping the user's order; each file appears once.

    A directory stands for the data files below it (``DATA_SUFFIXES``), recursively, in sorted
    order; the other files there, hidden ones and anything under ``exclude`` (the build's own
    output) are skipped, and named through ``log``.
    """
    files: list[str] = []
    for pattern in patterns:
        pattern = str(pattern)
        if pattern == STDIN or is_remote(pattern):
            files += [] if pattern in files else [pattern]  # a URL names one file: it is not globbed
            continue
        if is_hub(pattern):
            try:
                found = hub_files(pattern, split, log)
            except HubError as exc:
                raise InputError(str(exc)) from None
            if log is not None:
                log(f"{pattern}: {len(found)} file(s) through the Hub's cache (split {split} unless the path names files)")
            files += [f for f in found if f not in files]
            continue
        matches = sorted(glob.glob(pattern, recursive=True)) if glob.has_magic(pattern) else [pattern]
        if not matches:
            raise InputError(f"{pattern}: no file matches this pattern")
        for m in matches:
            found = _directory_files(m, log, exclude) if os.path.isdir(m) else [m]
            for f in found:
                if not os.path.isfile(f):
                    raise InputError(f"{f}: no such file")
                if f not in files:
                    files.append(f)
    return files


def _directory_files(directory: str, log: Callable[[str], None] | None, exclude: str | None) -> list[str]:
    """The data files below ``directory`` in a stable order (sorted paths); others are skipped and reported.

    A ``datasets.save_to_disk`` directory (``state.json`` listing its ``data-*.arrow`` files) stands for
    those files, in the order it lists them."""
    saved = _saved_dataset_files(directory)
    if saved is not None:
        if log is not None:
            log(f"{directory}: a datasets.save_to_disk directory: {len(saved)} Arrow file(s) in the order state.json lists")
        return saved
    data, skipped = [], []
    own = os.path.realpath(exclude) if exclude else None
    for root, dirs, names in os.walk(directory, onerror=_walk_error):
        for d in sorted(dirs):
            path = os.path.join(root, d)
            if d.startswith(".") or os.path.realpath(path) == own:
                dirs.remove(d)
                skipped.append(path + os.sep)
        dirs.sort()
        for name in sorted(names):
            path = os.path.join(root, name)
            (data if name.endswith(DATA_SUFFIXES) and not name.startswith(".") else skipped).append(path)
    if skipped and log is not None:
        shown = ", ".join(skipped[:10]) + (f" and {len(skipped) - 10} more" if len(skipped) > 10 else "")
        log(f"{directory}: skipped {len(skipped)} file(s) that are not data ({', '.join(DATA_SUFFIXES)}): {shown}")
    if not data:
        raise InputError(f"{directory}: directory holds no data files ({', '.join(DATA_SUFFIXES)})")
    return sorted(data)


def _saved_dataset_files(directory: str) -> list[str] | None:
    """The Arrow files of a ``datasets.save_to_disk`` directory, from its ``state.json`` (None: not one)."""
    state = os.path.join(directory, "state.json")
    if not os.path.isfile(state):
        return None
    try:
        with open(state, encoding="utf-8") as fh:
            listed = json.load(fh).get("_data_files")
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(listed, list) or not all(isinstance(f, dict) and isinstance(f.get("filename"), str) for f in listed):
        return None
    return [os.path.join(directory, f["filename"]) for f in listed]


def _walk_error(exc: OSError) -> None:
    raise InputError(f"{exc.filename}: cannot list this directory ({exc.strerror or exc})")


def open_binary(path: str, expect: str | None = None) -> tuple[BinaryIO, BinaryIO]:
    """Open a file or URL for reading, decompressing .gz and .zst by extension.

    Returns the reader and the file on disk under it (the same object for plain files), whose
    position says how much of the file was read (for progress). A URL's bytes are hashed as they
    come; with ``expect``, a different digest at the end is an error (``remote.HashingReader``).
    """
    if path == STDIN:
        return sys.stdin.buffer, sys.stdin.buffer
    disk: BinaryIO = HashingReader(open_url(path), path, expect) if is_remote(path) else open(path, "rb")  # type: ignore[assignment]
    name = url_name(path)
    if name.endswith(".gz"):
        return gzip.GzipFile(fileobj=disk, mode="rb"), disk  # type: ignore[return-value]
    if name.endswith(".zst"):
        import zstandard

        return zstandard.ZstdDecompressor().stream_reader(disk, closefd=False), disk  # type: ignore[return-value]
    return disk, disk


def is_json_array_file(path: str) -> bool:
    """A `.json` file (possibly compressed) may hold one array of records; everything else is JSON Lines."""
    name = url_name(path)
    name = name[:-3] if name.endswith(".gz") else name[:-4] if name.endswith(".zst") else name
    return name.endswith(".json")


def read_records(
    path: str,
    on_open: Callable[[Callable[[], int]], None] | None = None,
    log: Callable[[str], None] | None = None,
    expect: str | None = None,
) -> Iterator[RawRecord]:
    """Stream the records of one file. A file that breaks off mid-way (corrupt archive) is an InputError.

    ``on_open`` receives a function that tells how many bytes of the file on disk were read so far
    (compressed bytes for .gz / .zst): progress asks it when it redraws, not once per record.
    ``expect``: the sha256 a URL's bytes must have (the build key's); ignored for local files.
    """
    if path != STDIN and is_columnar(path):
        yield from _read_columnar(path, on_open, log, expect)
        return
    try:
        fh, disk = open_binary(path, expect)
    except OSError as exc:
        raise InputError(f"{path}: cannot open ({exc.strerror or exc})") from None
    if on_open is not None and path != STDIN:
        on_open(read_so_far(disk.tell, 0 if is_remote(path) else os.path.getsize(path)))
    progress = [0]  # the last record position handed out, for the error message
    try:
        buffered = fh if isinstance(fh, io.BufferedReader) else io.BufferedReader(fh)  # type: ignore[arg-type]
        json_file = path == STDIN or is_json_array_file(path)
        first = _first_byte(buffered) if json_file else b""
        if first == b"[":
            records, kind = _read_json_array(path, buffered), "one JSON array"
        elif first == b"{" and path != STDIN and not _first_line_is_json(buffered):
            records, kind = _read_json_object(path, buffered), "one JSON object"
        else:
            records, kind = read_jsonl(path, buffered), "JSON Lines"
        if log is not None and json_file and path != STDIN:
            log(f"{path}: read as {kind} (its first non-space byte is {first.decode('latin-1') or 'none'!r})")
        for rec in records:
            progress[0] = rec.line
            yield rec
        if isinstance(disk, HashingReader):
            disk.finish()
    except RemoteError as exc:
        raise InputError(f"{path}: {exc}") from None
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        raise InputError(f"{path}: cannot read past record {progress[0]} (corrupt or truncated file?): {exc}") from None
    except Exception as exc:
        if type(exc).__name__ == "ZstdError":
            raise InputError(f"{path}: cannot read past record {progress[0]} (corrupt or truncated zstd stream): {exc}") from None
        raise
    finally:
        if path != STDIN:
            fh.close()
            disk.close()


def _read_columnar(path: str, on_open, log: Callable[[str], None] | None, expect: str | None) -> Iterator[RawRecord]:
    """A Parquet or Arrow file's rows (``columnar``); a file pyarrow cannot read is an InputError.

    A URL is copied to a temporary file first: both formats need random access."""
    import pyarrow as pa

    parquet = is_parquet(path)
    local = path
    if is_remote(path):
        try:
            local = download(path, expect)
        except RemoteError as exc:
            raise InputError(f"{path}: {exc}") from None
    empty = os.path.getsize(local) == 0  # no records, as an empty JSON Lines file holds none
    if log is not None:
        log(f"{path}: {'empty file, no records' if empty else 'read as ' + ('Parquet' if parquet else 'Arrow IPC')}")
    row = -1
    try:
        for rec in () if empty else (read_parquet if parquet else read_arrow)(local, on_open, name=path):
            row = rec.line
            yield rec
    except (OSError, pa.ArrowException) as exc:
        where = f"past row {row}" if row >= 0 else "it"
        raise InputError(f"{path}: cannot read {where} as {'Parquet' if parquet else 'Arrow'} ({exc})") from None
    finally:
        if local != path:
            os.unlink(local)


def _first_byte(fh: io.BufferedReader) -> bytes:
    head = fh.peek(4096)
    head = head[3:] if head.startswith(_BOM) else head
    return head.lstrip(_WS)[:1]


def _first_line_is_json(fh: io.BufferedReader) -> bool:
    """Whether the file's first line is a whole JSON value (JSON Lines), or starts a pretty-printed one.

    Judged on what is buffered: a first line longer than that is a long JSON Lines record."""
    head = fh.peek(1 << 16)
    head = head[3:] if head.startswith(_BOM) else head
    end = head.find(b"\n")
    if end < 0:
        return True
    try:
        json.loads(head[:end])
    except ValueError:
        return False
    return True


def _read_json_object(path: str, fh: BinaryIO) -> Iterator[RawRecord]:
    """A ``.json`` file holding one object (pretty-printed): one record, index 0. If another value
    follows it, the file is JSON Lines after all (a first record spread over lines): it is re-read so."""
    buf = _Buffer(fh)
    buf.refill(0)
    pos, _ = buf.next_byte(3 if buf.data.startswith(_BOM) else 0)
    record, after = _scan_element(path, buf, pos, 0)
    if after >= 0 and buf.next_byte(after)[0] >= 0:
        again, disk = open_binary(path)
        try:
            yield from read_jsonl(path, io.BufferedReader(again))  # type: ignore[arg-type]
        finally:
            again.close()
            disk.close()
        return
    yield record


def _decode(source: str, line: int, data: bytes, unit: str = "line") -> RawRecord:
    if data.startswith(_BOM):  # a BOM starts a file, or a file concatenated onto another
        data = data[3:]
    try:
        return RawRecord(source, line, data.decode("utf-8"), unit=unit)
    except UnicodeDecodeError as exc:
        return RawRecord(source, line, None, f"not valid UTF-8 at byte {exc.start}", raw=data, unit=unit, error_code="not_utf8")


def _too_long(source: str, line: int, prefix: bytes, what: str, unit: str = "line") -> RawRecord:
    reason = f"{what} longer than {MAX_LINE_BYTES:,} bytes, not read (only its first {KEEP_PREFIX_BYTES} bytes are kept)"
    return RawRecord(
        source, line, None, reason, raw=prefix[:KEEP_PREFIX_BYTES], unit=unit, raw_is_prefix=True, error_code="too_long_line"
    )


def read_jsonl(path: str, fh: io.BufferedReader) -> Iterator[RawRecord]:
    """JSON Lines from an open binary stream, one ``RawRecord`` per non-empty line (bad lines are records too,
    with their error), each line read only up to the line limit (the Ray engine reads its byte ranges with it)."""
    line_no = 0
    limit = MAX_LINE_BYTES
    while True:
        data = fh.readline(limit + 1)
        if not data:
            return
        line_no += 1
        if len(data) > limit and not data.endswith(b"\n"):
            _skip_to_newline(fh)
            yield _too_long(path, line_no, data, "line")
            continue
        if not data.strip(_WS) or data.strip(_WS) == _BOM:
            continue  # blank lines (and CRLF-only lines) are not records
        end = -2 if data.endswith(b"\r\n") else -1 if data.endswith(b"\n") else len(data)
        yield _decode(path, line_no, data[:end])


def _skip_to_newline(fh: BinaryIO) -> None:
    while True:
        chunk = fh.readline(_CHUNK)
        if not chunk or chunk.endswith(b"\n"):
            return


# -- JSON arrays ----------------------------------------------------------------------------------

_STRUCTURE = re.compile(rb'[\[\]{}"]')  # outside strings, only these bytes matter
_STRING_BODY = re.compile(rb'(?:[^"\\]++|\\.)*+', re.S)  # up to the closing quote (or a lone trailing backslash)
_SCALAR_END = re.compile(rb'[\s,\[\]{}"]')
_NOT_WS = re.compile(rb"[^ \t\r\n]")


class _Buffer:
    """A sliding window over a byte stream: bytes before ``keep`` may be dropped on each refill."""

    def __init__(self, fh: BinaryIO):
        self.fh = fh
        self.data = bytearray()
        self.eof = False

    def refill(self, keep: int) -> int:
        """Drop ``data[:keep]``, append the next chunk; returns how far positions moved (-1 at EOF)."""
        if self.eof:
            return -1
        chunk = self.fh.read(_CHUNK)
        if not chunk:
            self.eof = True
            return -1
        if keep:
            del self.data[:keep]
        self.data += chunk
        return keep

    def next_byte(self, pos: int) -> tuple[int, int]:
        """(position of the next non-blank byte at or after ``pos``, or -1 at EOF; positions moved by)."""
        moved = 0
        while True:
            m = _NOT_WS.search(self.data, pos)
            if m is not None:
                return m.start(), moved
            shift = self.refill(len(self.data))
            if shift < 0:
                return -1, moved
            moved += shift
            pos = 0


def _read_json_array(path: str, fh: BinaryIO) -> Iterator[RawRecord]:
    """Each element of the top-level array, its bytes found by scanning, never more than MAX_LINE_BYTES held."""
    buf = _Buffer(fh)
    buf.refill(0)
    pos = 3 if buf.data.startswith(_BOM) else 0
    pos, _ = buf.next_byte(pos)
    pos += 1  # the "[" that _starts_with_array saw
    index = 0
    while True:
        pos, _ = buf.next_byte(pos)
        if pos < 0:
            return  # the array is not closed, but every element was read: nothing is lost
        c = buf.data[pos]
        if c == ord("]"):
            yield from _after_array(path, buf, pos + 1, index)
            return
        if c == ord(","):
            pos += 1  # separators (and stray extra ones) are not records
            continue
        rec, pos = _scan_element(path, buf, pos, index)
        yield rec
        index += 1
        if pos < 0:
            return


def _scan_element(path: str, buf: _Buffer, pos: int, index: int) -> tuple[RawRecord, int]:
    """The element starting at ``pos`` and the position after it (-1 when the file ended inside it)."""
    start, i = pos, pos
    stack = bytearray()  # open brackets; a closer that does not match closes back to its opener
    in_string = False
    skipped = 0  # bytes of an over-long element already dropped from the window
    prefix: bytes | None = None
    scalar = buf.data[pos] not in b'[{"'
    while True:
        data = buf.data
        if scalar:
            m = _SCALAR_END.search(data, i)
            if m is not None:
                end = max(m.start(), start + 1)  # a stray closer (`}`) is an element of its own
                return _element(path, index, data[start:end], prefix), end
            i = len(data)
        elif in_string:
            i = _STRING_BODY.match(data, i).end()
            if i < len(data) and data[i] == ord('"'):
                in_string = False
                i += 1
                if not stack:
                    return _element(path, index, data[start:i], prefix), i
                continue
        else:
            m = _STRUCTURE.search(data, i)
            if m is not None:
                c, i = data[m.start()], m.end()
                if c == ord('"'):
                    in_string = True
                elif c in b"[{":
                    stack.append(c)
                else:
                    opener = stack.rfind(b"[" if c == ord("]") else b"{")
                    del stack[opener if opener >= 0 else len(stack) - 1 :]
                    if not stack:
                        return _element(path, index, data[start:i], prefix), i
                continue
            i = len(data)
        # out of buffered bytes inside the element: keep it (or, once too long, only its prefix)
        if prefix is None and skipped + i - start > MAX_LINE_BYTES:
            prefix = bytes(data[start : start + KEEP_PREFIX_BYTES])
        if prefix is not None:
            skipped += i - start
            start = i
        shift = buf.refill(start)
        if shift < 0:
            reason = "array element is cut off by the end of the file (truncated file, or a missing quote or bracket)"
            if prefix is not None:
                return RawRecord(
                    path, index, None, reason, raw=prefix, unit="index", raw_is_prefix=True, error_code="truncated_element"
                ), -1
            return RawRecord(
                path, index, None, reason, raw=bytes(buf.data[start:]), unit="index", error_code="truncated_element"
            ), -1
        start -= shift
        i -= shift


def _element(path: str, index: int, data: bytes | bytearray, prefix: bytes | None) -> RawRecord:
    if prefix is not None:
        return _too_long(path, index, prefix, "array element", unit="index")
    return _decode(path, index, bytes(data), unit="index")


def _after_array(path: str, buf: _Buffer, pos: int, index: int) -> Iterator[RawRecord]:
    """Anything but whitespace after the closing bracket is reported (as one record), not ignored."""
    pos, _ = buf.next_byte(pos)
    if pos < 0:
        return
    prefix = bytes(buf.data[pos : pos + KEEP_PREFIX_BYTES])
    while buf.refill(len(buf.data)) >= 0:
        pass
    reason = "content after the end of the JSON array (a .json input holds one array of records)"
    yield RawRecord(path, index, None, reason, raw=prefix, unit="index", raw_is_prefix=True, error_code="after_array")
