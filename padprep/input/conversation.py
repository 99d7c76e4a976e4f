"""Stage 2, normalize: ``RawRecord`` -> ``Conversation`` (typed, validated messages or raw text) or ``Reject``.

The record's format (``messages``, ``sharegpt``, ``alpaca``, ``prompt-completion``, ``text``) is
``--format`` when given, else the one detected for its file (``formats.with_formats``), else the
record's own shape; ``formats.convert`` does the conversion. A record that cannot become a
conversation is never dropped silently: it becomes a ``Reject`` that names its file, line (or array
index), field and reason, and keeps the original text.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from padprep.input.formats import (  # noqa: F401  (re-exported: the message-level checks live with the formats)
    ROLES,
    Conversation,
    FieldNames,
    FormatOptions,
    RecordError,
    check_trainable,
    convert,
    detect_format,
    has_lone_surrogate_anywhere,
    json_kind,
    may_hold_lone_surrogate,
    message,
    tools_field,
)
from padprep.input.records import RawRecord
from padprep.input.repeats import REPEATS

_DEFAULT_OPTIONS = FormatOptions()
# Accepted around a record without complaint: whitespace, CR of CRLF endings, byte-order marks.
_BLANK = " \t\r\n\x0b\x0c\ufeff\u00a0"


@dataclass(frozen=True)
class Reject:
    """A record that is not in the output, and why."""

    source: str
    line: int
    reason: str
    raw: str | None = None  # the record's text exactly as read
    field: str | None = None
    stage: str = "normalize"  # normalize / render: bad record; policy: valid but dropped (too long...)
    unit: str = "line"  # "line" (1-based line of a JSON Lines file) or "index" (0-based element of a JSON array)
    raw_bytes: bytes | None = None  # the original bytes when they were not valid UTF-8
    raw_is_prefix: bool = False  # ``raw`` is only the start of a record too long to read
    code: str | None = None  # a stable name for the kind of failure, where one is set (too_long, template_limit...)

    @property
    def where(self) -> str:
        return f"{self.source}:{self.line}" if self.unit in ("line", "row") else f"{self.source}[{self.line}]"

    def describe(self) -> str:
        named = self.field and f"`{self.field}`" not in self.reason
        return f"{self.where}: {self.reason}" + (f" (field `{self.field}`)" if named else "")

    def as_json(self) -> dict:
        """One line of ``rejects.jsonl``: where, why, and the record untouched (``record``: its raw text)."""
        out: dict[str, Any] = {"file": self.source, self.unit: self.line, "stage": self.stage, "reason": self.reason}
        if self.field:
            out["field"] = self.field
        if self.raw_bytes is not None:
            try:
                out["record"] = self.raw_bytes.decode("utf-8")
            except UnicodeDecodeError:  # readable text in `record`, the exact bytes in `record_base64`
                out["record"] = self.raw_bytes.decode("utf-8", "backslashreplace")
                out["record_base64"] = base64.b64encode(self.raw_bytes).decode("ascii")
        else:
            out["record"] = self.raw
        if self.raw_is_prefix:
            out["record_truncated"] = True
        return out


def to_conversation(
    record: RawRecord, require_assistant: bool = True, options: FormatOptions | None = None
) -> Conversation | Reject:
    """Parse, convert and validate one record (a pure function of the record and the options)."""
    options = options or _DEFAULT_OPTIONS
    if not record.readable:
        return Reject(
            record.source,
            record.line,
            record.error or "unreadable record",
            unit=record.unit,
            raw_bytes=None if record.raw_is_prefix else record.raw,
            raw=record.raw.decode("utf-8", "backslashreplace") if record.raw_is_prefix and record.raw is not None else None,
            raw_is_prefix=record.raw_is_prefix,
            code=record.error_code or "unreadable",
        )
    try:
        obj = record_value(record)
        fmt = _format_of(obj, record, options)
        out = convert(obj, fmt, options, require_assistant)
    except RecordError as exc:
        return Reject(
            record.source, record.line, exc.reason, raw=record.text_of(), field=exc.field, unit=record.unit, code=exc.code
        )
    except Exception as exc:  # a bug, never a crash: the record is kept with the error
        reason = f"internal error while converting the record: {type(exc).__name__}: {exc}"
        return Reject(record.source, record.line, reason, raw=record.text_of(), unit=record.unit, code="internal_error")
    return out.located(record.source, record.line, record.unit, fmt)


def _format_of(obj: Any, record: RawRecord, options: FormatOptions) -> str:
    """``--format``, else the file's detected format (a record of another shape is rejected), else its own."""
    if options.format is not None:
        return options.format
    shape = detect_format(obj, options.fields)
    if record.format is not None:
        if shape is not None and shape != record.format:
            raise RecordError(
                code="format_mismatch",
                reason=f"record has the {shape} shape but its file holds {record.format} records "
                "(one format per file, or pass --format)",
            )
        return record.format
    if shape is None:
        n = options.fields
        keys = ", ".join(f"`{k}`" for k in list(obj)[:6]) if isinstance(obj, dict) else None
        if keys is None:
            raise RecordError(f"record must be a JSON object, got {json_kind(obj)}", code="not_object")
        raise RecordError(
            code="unknown_format",
            reason=f"no known format: keys {keys or '(none)'}; expected `{n.messages}`, `{n.conversations}`, "
            f"`{n.instruction}`, `{n.prompt}`+`{n.completion}` or `{n.text}` (rename with --messages-field... "
            "or pass --format)",
        )
    return shape


def record_value(record: RawRecord) -> Any:
    """The record's JSON value: a row's (``RawRecord.json_value``), or its text parsed (``RecordError`` when not JSON)."""
    if record.row is not None:
        return record.json_value()  # Arrow strings are UTF-8: no lone surrogate can be in a row
    obj = parse_json(record.text)
    if may_hold_lone_surrogate(record.text) and has_lone_surrogate_anywhere(obj):
        raise RecordError("record holds a lone surrogate (a \\ud800-\\udfff escape that is not text)", code="lone_surrogate")
    return obj


def parse_json(text: str) -> Any:
    """The record's JSON value; surrounding whitespace (CRLF, trailing blanks, BOM) is not an error."""
    if "\x00" in text:
        raise RecordError(f"NUL byte at byte {len(text[: text.index(chr(0))].encode('utf-8'))}", code="nul_byte")
    body = text.lstrip(_BLANK)
    lead = text[: len(text) - len(body)]
    body = body.rstrip(_BLANK)
    if not body:
        raise RecordError("empty record (only whitespace)", code="empty_record")
    try:
        return REPEATS.loads(body)
    except json.JSONDecodeError as exc:
        at = len((lead + body[: exc.pos]).encode("utf-8"))
        raise RecordError(f"invalid JSON at byte {at}: {exc.msg}", code="invalid_json") from None
    except RecursionError:
        raise RecordError("invalid JSON: nested too deeply", code="invalid_json") from None
    except ValueError as exc:  # e.g. an integer with more digits than Python converts
        raise RecordError(f"invalid JSON: {exc}", code="invalid_json") from None
