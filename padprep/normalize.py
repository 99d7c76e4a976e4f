"""Stage 2, normalize: ``RawRecord`` -> ``Conversation`` (typed, validated messages) or ``Reject``.

A record that cannot become a conversation is never dropped silently: it becomes a ``Reject`` that
names its file, line, field and reason, and keeps the original text.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .read import RawRecord

ROLES = ("system", "user", "assistant", "tool")
_ROLE_HINTS = {
    "human": "user",
    "gpt": "assistant",
    "bot": "assistant",
    "model": "assistant",
    "observation": "tool",
    "function": "tool",
    "ipython": "tool",
    "developer": "system",
}


@dataclass(frozen=True)
class Conversation:
    """A validated chat: messages as the chat template will see them, plus its tools schema."""

    messages: tuple[dict, ...]
    tools: list | None
    source: str
    line: int

    @property
    def assistant_indices(self) -> list[int]:
        return [i for i, m in enumerate(self.messages) if m["role"] == "assistant"]


@dataclass(frozen=True)
class Reject:
    """A record that is not in the output, and why."""

    source: str
    line: int
    reason: str
    raw: str | None = None
    field: str | None = None
    stage: str = "normalize"  # normalize / render: bad record; policy: valid but dropped (too long...)

    def describe(self) -> str:
        where = f"{self.source}:{self.line}"
        return f"{where}: {self.reason}" + (f" (field `{self.field}`)" if self.field else "")

    def as_json(self) -> dict:
        out: dict[str, Any] = {"file": self.source, "line": self.line, "stage": self.stage, "reason": self.reason}
        if self.field:
            out["field"] = self.field
        out["record"] = self.raw
        return out


class RecordError(ValueError):
    """Raised inside normalize with the field at fault; turned into a ``Reject`` by the caller."""

    def __init__(self, reason: str, field: str | None = None):
        super().__init__(reason)
        self.reason = reason
        self.field = field


def normalize(record: RawRecord, require_assistant: bool = True) -> Conversation | Reject:
    """Parse and validate one record."""
    if record.text is None:
        raw = record.raw.decode("utf-8", "replace") if record.raw is not None else None
        return Reject(record.source, record.line, record.error or "unreadable record", raw=raw)
    try:
        obj = parse_json(record.text)
        messages, tools = messages_record(obj)
        if require_assistant:
            check_trainable(messages)
    except RecordError as exc:
        return Reject(record.source, record.line, exc.reason, raw=record.text, field=exc.field)
    return Conversation(tuple(messages), tools, record.source, record.line)


def parse_json(text: str) -> Any:
    if "\x00" in text:
        raise RecordError(f"NUL byte at character {text.index(chr(0))}")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise RecordError(f"invalid JSON at byte {len(text[: exc.pos].encode('utf-8'))}: {exc.msg}") from None


def messages_record(obj: Any, messages_field: str = "messages") -> tuple[list[dict], list | None]:
    """Validate the OpenAI/TRL conversational shape: ``{"messages": [...], "tools": [...]?}``."""
    if not isinstance(obj, dict):
        raise RecordError(f"record is a JSON {type(obj).__name__}, expected an object")
    if messages_field not in obj:
        raise RecordError(f"missing field `{messages_field}`", messages_field)
    raw_messages = obj[messages_field]
    if not isinstance(raw_messages, list) or not raw_messages:
        raise RecordError(f"`{messages_field}` must be a non-empty list of messages", messages_field)
    messages = [message(m, f"{messages_field}[{i}]") for i, m in enumerate(raw_messages)]
    return messages, tools_field(obj.get("tools"))


def message(m: Any, where: str) -> dict:
    """One message, checked; keys the template may read (tool_calls, name, ...) are kept as given."""
    if not isinstance(m, dict):
        raise RecordError("message is not an object", where)
    role = m.get("role")
    if role not in ROLES:
        hint = _ROLE_HINTS.get(str(role).lower()) if isinstance(role, str) else None
        tip = f" (did you mean `--role-map {role}={hint}`?)" if hint else ""
        raise RecordError(f"unknown role `{role}`{tip}", f"{where}.role")
    out = {k: v for k, v in m.items() if v is not None}
    content = out.get("content", "")
    if isinstance(content, list):
        content = text_of_parts(content, f"{where}.content")
    if not isinstance(content, str):
        raise RecordError(f"content must be a string, got {type(content).__name__}", f"{where}.content")
    if _has_lone_surrogate(content):
        raise RecordError("content holds a lone surrogate (not encodable text)", f"{where}.content")
    out["content"] = content
    if role == "assistant" and not content.strip() and not out.get("tool_calls"):
        raise RecordError("empty assistant reply", f"{where}.content")
    return out


def text_of_parts(parts: list, where: str) -> str:
    """Content given as a list of parts (``[{"type": "text", "text": ...}]``) becomes its joined text."""
    texts = []
    for j, part in enumerate(parts):
        if isinstance(part, str):
            texts.append(part)
        elif isinstance(part, dict) and part.get("type", "text") == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        else:
            raise RecordError("only text content parts are supported", f"{where}[{j}]")
    return "".join(texts)


def tools_field(tools: Any) -> list | None:
    """Tools as a list of schemas; a JSON string holding that list (as ShareGPT exports write it) is parsed."""
    if tools is None or tools == "" or tools == []:
        return None
    if isinstance(tools, str):
        try:
            tools = json.loads(tools)
        except json.JSONDecodeError as exc:
            raise RecordError(f"`tools` is a string but not valid JSON: {exc.msg}", "tools") from None
    if not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools):
        raise RecordError("`tools` must be a list of JSON schema objects", "tools")
    return tools or None


def check_trainable(messages: list[dict]) -> None:
    """A conversation must hold at least one assistant turn and must not end on a prompt."""
    if not any(m["role"] == "assistant" for m in messages):
        raise RecordError("no assistant turn (nothing to train)", "messages")
    if messages[-1]["role"] != "assistant":
        raise RecordError(f"conversation ends on a {messages[-1]['role']} turn (nothing to train after it)", "messages")


def _has_lone_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False
