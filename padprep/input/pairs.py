"""Preference pairs: one record -> the two conversations that share its prompt (chosen, rejected), or a ``Reject``.

Shapes (``formats.detect_format`` calls them ``preference``; field names as ``FieldNames`` says):

* TRL, explicit prompt: ``{"prompt", "chosen", "rejected"}`` with message lists (conversational) or
  strings (plain text: no chat template; eos is appended, as TRL does);
* TRL, implicit prompt: ``{"chosen", "rejected"}`` as whole conversations sharing a prefix (the
  UltraFeedback-binarized style): the prompt is their longest common prefix of messages;
* LLaMA-Factory pairwise: ``{"conversations" | "messages": the prompt's turns, "chosen": one turn,
  "rejected": one turn, "system"?, "tools"?}`` (ShareGPT ``from``/``value`` or ``role``/``content``);
* LLaMA-Factory v1: ``{"chosen_messages", "rejected_messages"}``: whole conversations, content parts.

Each side after the shared prompt must be one assistant reply (its text, tool calls or reasoning):
what a model generates in one turn. ``tools`` apply to both sides. Per-message training flags do
not apply (a pair trains its completions only).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from padprep.input.conversation import Reject, record_value, to_conversation
from padprep.input.formats import (
    V1_PAIR_KEYS,
    Conversation,
    FieldNames,
    FormatOptions,
    RecordError,
    _messages,
    _sharegpt,
    json_kind,
    message,
    tools_field,
)
from padprep.input.records import RawRecord

SIDES = ("chosen", "rejected")


@dataclass(frozen=True)
class Pair:
    """The two sides of a preference record, each a whole conversation ending in its one reply."""

    chosen: Conversation
    rejected: Conversation


def to_pair(record: RawRecord, options: FormatOptions) -> Pair | Reject:
    """Parse, convert and check one preference record (a pure function of the record and the options)."""
    if not record.readable:  # unreadable bytes: the same reject an SFT build makes
        out = to_conversation(record, options=options)
        assert isinstance(out, Reject)
        return out
    try:
        pair = convert_pair(record_value(record), options)
    except RecordError as exc:
        return Reject(
            record.source, record.line, exc.reason, raw=record.text_of(), field=exc.field, unit=record.unit, code=exc.code
        )
    except Exception as exc:  # a bug, never a crash
        reason = f"internal error while converting the pair: {type(exc).__name__}: {exc}"
        return Reject(record.source, record.line, reason, raw=record.text_of(), unit=record.unit, code="internal_error")
    where = (record.source, record.line, record.unit, "preference")
    return Pair(pair.chosen.located(*where), pair.rejected.located(*where))


def convert_pair(obj: Any, options: FormatOptions = FormatOptions()) -> Pair:
    """One parsed record -> ``Pair`` (pure). Raises ``RecordError`` with the reason and the field.

    Example:
        >>> p = convert_pair({"prompt": [{"role": "user", "content": "2+2?"}],
        ...                   "chosen": [{"role": "assistant", "content": "4"}],
        ...                   "rejected": [{"role": "assistant", "content": "5"}]})
        >>> [m["content"] for m in p.chosen.messages], p.rejected.messages[-1]["content"]
        (['2+2?', '4'], '5')
    """
    if not isinstance(obj, dict):
        raise RecordError(f"record must be a JSON object, got {json_kind(obj)}", code="wrong_type")
    names, roles = options.fields, options.roles
    tools = tools_field(obj.get(names.tools), names.tools)
    if all(k in obj for k in V1_PAIR_KEYS):
        sides = [_message_list(obj, key, roles) for key in V1_PAIR_KEYS]
        return _implicit(sides, tools, V1_PAIR_KEYS)
    for key in SIDES:
        if key not in obj or obj[key] is None:
            raise RecordError(f"missing field `{key}` (a preference pair needs both sides)", key, code="missing_field")
    if names.prompt in obj:
        return _explicit(obj, names, roles, tools)
    turns = next((k for k in (names.conversations, names.messages) if k in obj), None)
    if turns is not None:
        return _pairwise(obj, turns, names, roles)
    return _implicit([_message_list(obj, key, roles) for key in SIDES], tools, SIDES)


def _explicit(obj: dict, names: FieldNames, roles: dict[str, str], tools: list | None) -> Pair:
    prompt = obj[names.prompt]
    if isinstance(prompt, str) and all(isinstance(obj[k], str) for k in SIDES):
        return Pair(*(_text_side(prompt, obj[k], k) for k in SIDES))
    if isinstance(prompt, str):
        prompt = [{"role": "user", "content": prompt}]
    if not isinstance(prompt, list) or not prompt:
        raise RecordError(f"`{names.prompt}` must be a string or a non-empty list of messages", names.prompt, code="wrong_type")
    head = tuple(message(m, f"{names.prompt}[{i}]", roles) for i, m in enumerate(prompt))
    sides = []
    for key in SIDES:
        value = obj[key]
        value = [{"role": "assistant", "content": value}] if isinstance(value, str) else value
        if not isinstance(value, list):
            raise RecordError(f"`{key}` must be a string or a list of messages, got {json_kind(value)}", key, code="wrong_type")
        sides.append(_side(head, tuple(message(m, f"{key}[{i}]", roles) for i, m in enumerate(value)), key, tools))
    return Pair(*sides)


def _pairwise(obj: dict, turns: str, names: FieldNames, roles: dict[str, str]) -> Pair:
    """LLaMA-Factory's pairwise records: the prompt's turns, then one turn per side."""
    sides = []
    for key in SIDES:
        turn = obj[key]
        if not isinstance(turn, dict):
            raise RecordError(f"`{key}` must be one turn (an object), got {json_kind(turn)}", key, code="wrong_type")
        history = obj[turns] if isinstance(obj[turns], list) else []
        whole = {**obj, turns: [*history, turn]}
        try:
            conv = _sharegpt(whole, names, roles) if _is_sharegpt(history + [turn]) else _messages(whole, names, roles)
        except RecordError as exc:  # the side's own turn is the last one: name it
            at = f"{turns}[{len(history)}]"
            field = exc.field.replace(at, key) if exc.field and exc.field.startswith(at) else exc.field
            raise RecordError(exc.reason, field, code=exc.code) from None
        prompt = conv.messages[:-1]
        if not prompt:
            raise RecordError(f"`{turns}` holds no prompt", turns, code="empty_prompt")
        sides.append(_side(prompt, conv.messages[-1:], key, conv.tools))
    return Pair(*sides)


def _implicit(sides: list[tuple[dict, ...]], tools: list | None, keys: tuple[str, str]) -> Pair:
    """Whole conversations per side: the prompt is the messages both start with (at least one)."""
    chosen, rejected = sides
    shared = 0
    while shared < min(len(chosen), len(rejected)) - 1 and chosen[shared] == rejected[shared]:
        shared += 1
    if not shared:
        raise RecordError(
            f"`{keys[0]}` and `{keys[1]}` share no prompt: whole conversations must start with the same messages",
            keys[0],
            code="empty_prompt",
        )
    return Pair(*(_side(side[:shared], side[shared:], key, tools) for side, key in zip(sides, keys)))


def _side(prompt: tuple[dict, ...], completion: tuple[dict, ...], key: str, tools: list | None) -> Conversation:
    """One side: the prompt and its one assistant reply, trained from the reply on."""
    if len(completion) != 1 or completion[0]["role"] != "assistant":
        found = ", ".join(m["role"] for m in completion) or "nothing"
        raise RecordError(f"`{key}` must be one assistant reply after the prompt (found {found})", key, code="pair_shape")
    return Conversation(prompt + completion, tools, train_from=len(prompt))


def _text_side(prompt: str, completion: str, key: str) -> Conversation:
    """A plain-text side (TRL's standard shape): no template; the completion's characters are trained."""
    if not completion.strip():
        raise RecordError(f"empty `{key}` (nothing to prefer)", key, code="empty_reply")
    text = prompt + completion
    return Conversation(text=text, spans=((len(prompt), len(text)),))


def _message_list(obj: dict, key: str, roles: dict[str, str]) -> tuple[dict, ...]:
    value = obj[key]
    if not isinstance(value, list) or not value:
        raise RecordError(f"`{key}` must be a non-empty list of messages, got {json_kind(value)}", key, code="wrong_type")
    return tuple(message(m, f"{key}[{i}]", roles) for i, m in enumerate(value))


def _is_sharegpt(turns: list) -> bool:
    first = next((t for t in turns if isinstance(t, dict)), None)
    return first is not None and "from" in first and "role" not in first
