"""Input formats: what shape a record has, and its conversion to one common form.

Five shapes are understood (field names are the defaults; each can be renamed, see ``FieldNames``):

* ``messages``: ``{"messages": [{"role", "content"}...], "tools"?}`` (OpenAI / TRL conversational),
  content as a string or a list of parts, assistant ``tool_calls``, ``tool`` results, per-message
  ``reasoning_content``; LLaMA-Factory v1's shape too (parts ``{"type": "text"|"reasoning"|"tool_call",
  "value"}``, ``loss_weight`` per message, ``tools`` as a JSON string). Per-message training flags:
  ``loss_weight`` (LLaMA-Factory) and ``train`` / ``training`` (axolotl), see ``message_weight``;
* ``sharegpt``: ``{"conversations": [{"from", "value"}...], "system"?, "tools"?}`` with
  ``human``/``gpt``/``system``/``function_call``/``observation`` turns (renamable with ``--role-map``);
* ``alpaca``: ``{"instruction", "input"?, "output", "system"?, "history"?}``;
* ``prompt-completion``: ``{"prompt", "completion"}``, both strings (raw text, no chat template) or
  lists of messages (chat template, only the completion's assistant turns trained);
* ``text``: ``{"text"}`` for continued pre-training: raw text, no chat template, every token trained.

A file's format is decided once, from its first record of a known shape (``with_formats``), unless
``--format`` forces it; ``convert`` is then a pure function of one record and that format. Nothing
here reads files or knows about tokenizers: the result is plain messages (for the chat template) or
plain text with the character spans to train.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Iterator

from padprep.input.repeats import REPEATS

FORMATS = ("messages", "sharegpt", "alpaca", "prompt-completion", "text", "preference")
# A preference pair (``input/pairs.py``): both sides under these keys, or LLaMA-Factory v1's whole conversations.
PAIR_KEYS = ("chosen", "rejected")
V1_PAIR_KEYS = ("chosen_messages", "rejected_messages")
ROLES = ("system", "user", "assistant", "tool")
FUNCTION_CALL = "function_call"  # the ShareGPT turn that holds an assistant's tool call(s)
ROLE_TARGETS = ROLES + (FUNCTION_CALL,)

# ShareGPT speaker names (LLaMA-Factory's defaults), plus the canonical roles themselves.
SHAREGPT_ROLES = {
    "human": "user",
    "gpt": "assistant",
    "system": "system",
    "observation": "tool",
    FUNCTION_CALL: FUNCTION_CALL,
    "user": "user",
    "assistant": "assistant",
    "tool": "tool",
}
# Speaker names seen in the wild, used only to suggest a --role-map.
ROLE_HINTS = {
    "human": "user",
    "gpt": "assistant",
    "bot": "assistant",
    "model": "assistant",
    "chatgpt": "assistant",
    "ai": "assistant",
    "character": "assistant",
    "char": "assistant",
    "answer": "assistant",
    "question": "user",
    "customer": "user",
    "prompter": "user",
    "observation": "tool",
    "function": "tool",
    "function_response": "tool",
    "ipython": "tool",
    "developer": "system",
    "tool_call": FUNCTION_CALL,
    "function_call": FUNCTION_CALL,
}
# When nothing of a known shape is found after this many records (or bytes) of a file, stop
# buffering and judge its records one by one.
DETECT_MAX_RECORDS = 1000
DETECT_MAX_CHARS = 64 << 20
_UNIT_WORDS = {"line": "line", "index": "element", "row": "row"}  # what a RawRecord's ``line`` counts, in words
_MAYBE_SURROGATE = re.compile(r"\\u[dD][89abcdefABCDEF]")


class RecordError(ValueError):
    """A record that cannot be converted; ``field`` names the part at fault, ``code`` the kind of failure
    (one of ``schema.REJECT_CODES``, named where it is raised). Becomes a ``Reject``."""

    def __init__(self, reason: str, field: str | None = None, *, code: str):
        super().__init__(reason)
        self.reason = reason
        self.field = field
        self.code = code


@dataclass(frozen=True)
class FieldNames:
    """Record keys, for the common renames (``--messages-field dialog``...)."""

    messages: str = "messages"
    conversations: str = "conversations"
    system: str = "system"
    tools: str = "tools"
    instruction: str = "instruction"
    input: str = "input"
    output: str = "output"
    history: str = "history"
    prompt: str = "prompt"
    completion: str = "completion"
    text: str = "text"

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))


@dataclass(frozen=True)
class FormatOptions:
    """How records are read: a forced format (None: detected per file), field names, role renames."""

    format: str | None = None
    fields: FieldNames = field(default_factory=FieldNames)
    role_map: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if self.format is not None and self.format not in FORMATS:
            raise ValueError(f"unknown format {self.format!r}; expected one of {', '.join(FORMATS)}")
        for src, dst in self.role_map:
            if dst not in ROLE_TARGETS:
                raise ValueError(f"--role-map {src}={dst}: the target must be one of {', '.join(ROLE_TARGETS)}")

    @property
    def roles(self) -> dict[str, str]:
        return dict(self.role_map)


@dataclass(frozen=True)
class Conversation:
    """A record in the common form: chat ``messages`` as the template will see them (plus ``tools``),
    or raw ``text``; and where it came from. The one shape every format converts to.

    ``text`` is set for records that skip the chat template (``text``, string ``prompt-completion``):
    their tokens are trained where ``spans`` says (every token when ``spans`` is None).
    ``train_from``: only assistant messages at this index or later are trained (prompt-completion).
    ``weights``: per message, its training flag (``message_weight``), or None where no message has one.
    """

    messages: tuple[dict, ...] = ()
    tools: list | None = None
    source: str = ""
    line: int = 0
    unit: str = "line"  # "line" (1-based line of a JSON Lines file) or "index" (0-based element of an array)
    format: str | None = None
    train_from: int = 0
    text: str | None = None
    spans: tuple[tuple[int, int], ...] | None = None
    weights: tuple[float | None, ...] | None = None

    def located(self, source: str, line: int, unit: str, fmt: str) -> "Conversation":
        """This conversation, said to come from ``source`` at ``line`` (``unit``), in format ``fmt``."""
        return Conversation(
            self.messages, self.tools, source, line, unit, fmt, self.train_from, self.text, self.spans, self.weights
        )

    @property
    def assistant_indices(self) -> list[int]:
        return [i for i, m in enumerate(self.messages) if m["role"] == "assistant" and i >= self.train_from]

    @property
    def is_raw_text(self) -> bool:
        return self.text is not None


# -- detection ------------------------------------------------------------------------------------


def detect_format(obj: Any, names: FieldNames = FieldNames()) -> str | None:
    """The format a parsed record's keys say it is in, or None when they say nothing known."""
    if not isinstance(obj, dict):
        return None
    if all(k in obj for k in PAIR_KEYS) or all(k in obj for k in V1_PAIR_KEYS):
        return "preference"  # before the turn lists: a pairwise ShareGPT record holds `conversations` too
    for key in (names.messages, names.conversations):
        turns = obj.get(key)
        if isinstance(turns, list):
            first = next((t for t in turns if isinstance(t, dict)), None)
            if first is not None and "from" in first and "role" not in first:
                return "sharegpt"
            if first is not None and "role" in first:
                return "messages"
            return "messages" if key == names.messages else "sharegpt"
    if names.prompt in obj and names.completion in obj:
        return "prompt-completion"
    if names.instruction in obj:
        return "alpaca"
    if names.text in obj:
        return "text"
    return None


@dataclass(frozen=True)
class FileFormat:
    """The format a file's records are read as, and how that was decided (for the summary and manifest)."""

    format: str | None
    origin: str


def with_formats(
    path: str,
    records: Iterator,
    options: FormatOptions,
    found: dict[str, FileFormat],
    log: Callable[[str], None] = lambda msg: None,
) -> Iterator:
    """Tag each ``RawRecord`` of one file with the file's format, decided from its first known shape.

    Records before that one are held back (a bounded number) and tagged too, so that a broken first
    line is judged against the file's format ("missing field `messages`") rather than on its own.
    """
    if options.format is not None:
        found[path] = FileFormat(options.format, "--format")
        yield from records
        return
    pending: list = []
    chars = 0
    fmt: str | None = None
    gave_up = False
    for rec in records:
        if fmt is not None:
            yield rec.with_format(fmt)
            continue
        if gave_up:
            yield rec
            continue
        pending.append(rec)
        chars += len(rec.text or "")
        shape = _shape_of(rec.text, options.fields) if rec.row is None else detect_format(rec.json_value(), options.fields)
        if shape is not None:
            fmt = shape
            where = f"{_UNIT_WORDS.get(rec.unit, rec.unit)} {rec.line}"
            found[path] = FileFormat(fmt, f"detected from {where}")
            log(f"{path}: format {fmt} (detected from {where})")
            for p in pending:
                yield p.with_format(fmt)
            pending = []
        elif len(pending) >= DETECT_MAX_RECORDS or chars > DETECT_MAX_CHARS:
            gave_up = True
            yield from pending
            pending = []
    yield from pending
    if fmt is None:
        found[path] = FileFormat(None, "no record of a known shape")
        log(f"{path}: no record of a known shape (pass --format)")


def _shape_of(text: str | None, names: FieldNames) -> str | None:
    if text is None or "\x00" in text:
        return None
    try:
        return detect_format(json.loads(text.strip()), names)
    except (ValueError, RecursionError):
        return None


def needs_chat_template(text: str | None, fmt: str | None, names: FieldNames = FieldNames()) -> bool:
    """Whether a record of this format goes through the chat template (raw text does not)."""
    if fmt == "text":
        return False
    if fmt == "prompt-completion" and text is not None:
        try:
            obj = json.loads(text.strip())
        except (ValueError, RecursionError):
            return True
        return not (
            isinstance(obj, dict) and isinstance(obj.get(names.prompt), str) and isinstance(obj.get(names.completion), str)
        )
    return True


# -- conversion -----------------------------------------------------------------------------------


def convert(obj: Any, fmt: str, options: FormatOptions = FormatOptions(), require_assistant: bool = True) -> Conversation:
    """One parsed record -> ``Conversation`` (pure). Raises ``RecordError`` with a human reason."""
    if not isinstance(obj, dict):
        raise RecordError(f"record must be a JSON object, got {json_kind(obj)}", code="wrong_type")
    names = options.fields
    if fmt == "messages":
        out = _messages(obj, names, options.roles)
    elif fmt == "sharegpt":
        out = _sharegpt(obj, names, options.roles)
    elif fmt == "alpaca":
        out = _alpaca(obj, names)
    elif fmt == "prompt-completion":
        out = _prompt_completion(obj, names, options.roles)
    elif fmt == "text":
        return _text(obj, names)
    elif fmt == "preference":
        raise RecordError(
            "a preference pair (`chosen` / `rejected`) in an SFT build: build it with --task preference, "
            "or keep one side as messages",
            code="format_mismatch",
        )
    else:  # pragma: no cover - FormatOptions validates
        raise ValueError(f"unknown format {fmt!r}")
    if out.text is None and require_assistant:
        check_trainable(list(out.messages), out.train_from)
    return out


def _messages(obj: dict, names: FieldNames, roles: dict[str, str]) -> Conversation:
    key = names.messages
    if key not in obj and isinstance(obj.get(names.conversations), list):
        key = names.conversations  # role/content turns under the ShareGPT key
    raw = _turn_list(obj, key)
    messages = [message(m, f"{key}[{i}]", roles) for i, m in enumerate(raw)]
    tools = tools_field(obj.get(names.tools), names.tools)
    if tools and any(_is_v1(m) for m in raw):  # LLaMA-Factory v1 keeps bare schemas: the OpenAI shape, as templates expect
        tools = [_openai_tool(t, f"{names.tools}[{j}]") for j, t in enumerate(tools)]
    return Conversation(tuple(messages), tools, weights=weights_of(raw, key))


def _sharegpt(obj: dict, names: FieldNames, roles: dict[str, str]) -> Conversation:
    key = names.conversations
    if key not in obj and isinstance(obj.get(names.messages), list):
        key = names.messages  # from/value turns under the OpenAI key
    turns = _turn_list(obj, key)
    mapping = {**SHAREGPT_ROLES, **roles}
    messages = []
    system = obj.get(names.system)
    if system is not None and not isinstance(system, str):
        raise RecordError(f"`{names.system}` must be a string, got {json_kind(system)}", names.system, code="wrong_type")
    if system:
        messages.append({"role": "system", "content": system})
    for i, turn in enumerate(turns):
        where = f"{key}[{i}]"
        if not isinstance(turn, dict):
            raise RecordError(f"turn must be an object, got {json_kind(turn)}", where, code="wrong_type")
        speaker = turn.get("from", turn.get("role"))
        if speaker is None:
            raise RecordError("missing field `from`", f"{where}.from", code="missing_field")
        role = mapping.get(speaker) if isinstance(speaker, str) else None
        if role is None:
            raise RecordError(_unknown_role(speaker), f"{where}.from", code="unknown_role")
        value = turn.get("value", turn.get("content"))
        if value is None:
            raise RecordError("missing field `value`", f"{where}.value", code="missing_field")
        if role == FUNCTION_CALL:
            messages.append(_function_call(value, f"{where}.value"))
        else:
            messages.append(message({"role": role, "content": value}, where, {}))
    return Conversation(tuple(messages), tools_field(obj.get(names.tools), names.tools))


def _json_value(value: Any, what: str, where: str) -> Any:
    """``value`` parsed when it is a JSON string (tool calls come either way), else as given."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise RecordError(
            f"{what} is not valid JSON: {exc.msg} at character {exc.pos}", where, code="invalid_json_field"
        ) from None


def _function_call(value: Any, where: str) -> dict:
    """A ShareGPT ``function_call`` turn: a JSON ``{"name", "arguments"}`` (or a list of them)."""
    value = _json_value(value, "function_call value", where)
    calls = value if isinstance(value, list) else [value]
    if not calls or not all(isinstance(c, dict) and isinstance(c.get("name"), str) for c in calls):
        raise RecordError(
            'function_call value must be a {"name", "arguments"} object (or a list of them)', where, code="wrong_type"
        )
    return {"role": "assistant", "content": "", "tool_calls": [{"type": "function", "function": c} for c in calls]}


def _alpaca(obj: dict, names: FieldNames) -> Conversation:
    instruction = _string(obj, names.instruction, required=True)
    extra = _string(obj, names.input)
    output = _string(obj, names.output, required=True)
    system = _string(obj, names.system)
    # instruction and input on their own lines, as Alpaca / LLaMA-Factory users expect
    prompt = "\n".join(part for part in (instruction, extra) if part)
    if not prompt.strip():
        raise RecordError(
            f"`{names.instruction}` and `{names.input}` are both empty (no prompt)", names.instruction, code="empty_prompt"
        )
    messages: list[dict] = []
    if system:
        messages.append({"role": "system", "content": system})
    history = obj.get(names.history)
    if history is not None:
        if not isinstance(history, list):
            raise RecordError(f"`{names.history}` must be a list of [prompt, reply] pairs", names.history, code="wrong_type")
        for j, pair in enumerate(history):
            where = f"{names.history}[{j}]"
            if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(p, str) for p in pair)):
                raise RecordError("history entry must be a [prompt, reply] pair of strings", where, code="wrong_type")
            messages.append({"role": "user", "content": pair[0]})
            messages.append(message({"role": "assistant", "content": pair[1]}, f"{where}[1]", {}))
    messages.append({"role": "user", "content": prompt})
    messages.append(message({"role": "assistant", "content": output}, names.output, {}))
    return Conversation(tuple(messages))


def _prompt_completion(obj: dict, names: FieldNames, roles: dict[str, str]) -> Conversation:
    for key in (names.prompt, names.completion):
        if key not in obj:
            raise RecordError(f"missing field `{key}`", key, code="missing_field")
    prompt, completion = obj[names.prompt], obj[names.completion]
    for key, value in ((names.prompt, prompt), (names.completion, completion)):
        if not isinstance(value, (str, list)):
            raise RecordError(f"`{key}` must be a string or a list of messages, got {json_kind(value)}", key, code="wrong_type")
    if isinstance(prompt, str) and isinstance(completion, str):
        _check_text(prompt + completion, names.prompt)
        if not completion.strip():
            raise RecordError(f"empty `{names.completion}` (nothing to train)", names.completion, code="nothing_to_train")
        text = prompt + completion
        return Conversation(text=text, spans=((len(prompt), len(text)),))
    p = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
    c = [{"role": "assistant", "content": completion}] if isinstance(completion, str) else completion
    if not c:
        raise RecordError(f"`{names.completion}` is an empty list (nothing to train)", names.completion, code="nothing_to_train")
    msgs = [message(m, f"{names.prompt}[{i}]", roles) for i, m in enumerate(p)]
    msgs += [message(m, f"{names.completion}[{i}]", roles) for i, m in enumerate(c)]
    if not any(m["role"] == "assistant" for m in msgs[len(p) :]):
        raise RecordError(
            f"`{names.completion}` holds no assistant message (nothing to train)", names.completion, code="nothing_to_train"
        )
    weights = weights_of(list(p) + list(c), names.prompt)
    return Conversation(tuple(msgs), tools_field(obj.get(names.tools), names.tools), train_from=len(p), weights=weights)


def _text(obj: dict, names: FieldNames) -> Conversation:
    text = _string(obj, names.text, required=True)
    _check_text(text, names.text)
    if not text.strip():
        raise RecordError(f"empty `{names.text}` (nothing to train)", names.text, code="nothing_to_train")
    return Conversation(text=text)


# -- messages -------------------------------------------------------------------------------------


def message(m: Any, where: str, roles: dict[str, str] | None = None) -> dict:
    """One message, checked; keys the template may read (tool_calls, name, ...) are kept as given."""
    if not isinstance(m, dict):
        raise RecordError(f"message must be an object, got {json_kind(m)}", where, code="wrong_type")
    role = m.get("role")
    if role is None:
        raise RecordError("missing field `role`", f"{where}.role", code="missing_field")
    if roles and isinstance(role, str) and role in roles:
        role = roles[role]
    if role not in ROLES:
        raise RecordError(_unknown_role(role), f"{where}.role", code="unknown_role")
    out = template_view(m)
    out["role"] = role
    content = out.get("content")
    if isinstance(content, list):
        out = _with_parts(out, content, f"{where}.content")
        content = out["content"]
    if content is not None and not isinstance(content, str):
        raise RecordError(f"content must be a string, got {json_kind(content)}", f"{where}.content", code="wrong_type")
    tool_calls = out.get("tool_calls")
    if tool_calls is not None and not (isinstance(tool_calls, list) and all(isinstance(t, dict) for t in tool_calls)):
        raise RecordError("`tool_calls` must be a list of objects", f"{where}.tool_calls", code="wrong_type")
    for key in REASONING_FIELDS:
        if m.get(key) is not None and not isinstance(m[key], str):
            raise RecordError(f"{key} must be a string, got {json_kind(m[key])}", f"{where}.{key}", code="wrong_type")
    if role == "assistant" and not (content or "").strip() and not tool_calls and not reasoning_of(out).strip():
        raise RecordError("empty assistant reply", f"{where}.content", code="empty_reply")
    return out


# Where records keep a reply's reasoning (OpenAI-compatible servers, TRL, gpt-oss, some exports).
REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")


def template_view(m: dict) -> dict:
    """A message exactly as ``apply_chat_template`` hands it to the template (transformers 5).

    Every key is kept, unknown ones too, except those whose value is null: transformers drops them
    (templates test ``message.content is defined``), it does not turn them into "". Reasoning given
    under any of its names is also offered as ``reasoning_content`` and ``thinking``, the names
    templates read.
    """
    out = {k: v for k, v in m.items() if v is not None}
    reasoning = next((out[k] for k in REASONING_FIELDS if k in out), None)
    if reasoning is not None:
        out = {"thinking": reasoning, **out, "reasoning_content": reasoning}
    return out


def content_of(m: dict) -> str:
    """A message's text content ('' where it is null or absent)."""
    content = m.get("content")
    return content if isinstance(content, str) else ""


def reasoning_of(m: dict) -> str:
    """A message's reasoning text, under whichever name the record uses ('' where none)."""
    return next((m[k] for k in REASONING_FIELDS if isinstance(m.get(k), str) and m[k]), "")


@dataclass(frozen=True)
class Parts:
    """A content list split by kind: text (joined as LLaMA-Factory joins it, with nothing between), reasoning, tool calls."""

    text: str
    reasoning: str | None
    tool_calls: list


PART_TYPES = ("text", "reasoning", "tool_call")


def content_parts(parts: list, where: str) -> Parts:
    """Split content parts: ``{"type": "text", "text"|"value": ...}`` (OpenAI / LLaMA-Factory v1), v1's
    ``reasoning`` parts and ``tool_call`` parts (a JSON string ``{"name", "arguments"}``); a bare string is text."""
    texts, reasoning, calls = [], [], []
    for j, part in enumerate(parts):
        at = f"{where}[{j}]"
        if isinstance(part, str):
            texts.append(part)
            continue
        if not isinstance(part, dict):
            raise RecordError(f"content part must be an object or a string, got {json_kind(part)}", at, code="wrong_type")
        kind = part.get("type", "text")
        key = "text" if "text" in part else "value"
        value = part.get(key)
        if kind not in PART_TYPES:
            raise RecordError(
                f"unsupported content part type `{kind}` (padprep reads {', '.join(PART_TYPES)} parts)",
                f"{at}.type",
                code="invalid_record",
            )
        if kind == "tool_call":
            calls.append(_tool_call_part(value, f"{at}.{key}"))
        elif not isinstance(value, str):
            raise RecordError(
                f"a `{kind}` part needs a string under `text` or `value`, got {json_kind(value)}",
                f"{at}.{key}",
                code="invalid_record",
            )
        else:
            (texts if kind == "text" else reasoning).append(value)
    return Parts("".join(texts), "".join(reasoning) if reasoning else None, calls)


def _tool_call_part(value: Any, where: str) -> dict:
    """A v1 ``tool_call`` part: JSON ``{"name", "arguments"}`` (a string, or already an object) -> OpenAI's shape."""
    value = _json_value(value, "tool_call part", where)
    if not (isinstance(value, dict) and isinstance(value.get("name"), str) and value["name"]):
        raise RecordError('tool_call part must be a {"name", "arguments"} object', where, code="wrong_type")
    return {"type": "function", "function": {"name": value["name"], "arguments": value.get("arguments", {})}}


def _with_parts(out: dict, parts: list, where: str) -> dict:
    """A message whose content is a list of parts, with text, reasoning and tool calls in their own fields."""
    split = content_parts(parts, where)
    out["content"] = split.text
    if split.tool_calls:
        if out.get("tool_calls"):
            raise RecordError("tool calls given both as `tool_call` parts and as `tool_calls`", where, code="invalid_record")
        out["tool_calls"] = split.tool_calls
    if split.reasoning is not None:
        if reasoning_of(out):
            raise RecordError("reasoning given both as `reasoning` parts and as a reasoning field", where, code="invalid_record")
        out = template_view({**out, "reasoning_content": split.reasoning})
    return out


def _is_v1(m: Any) -> bool:
    """LLaMA-Factory v1 messages: parts keyed ``value``, or a ``loss_weight``."""
    if not isinstance(m, dict):
        return False
    content = m.get("content")
    return "loss_weight" in m or (
        isinstance(content, list) and any(isinstance(p, dict) and "value" in p and "text" not in p for p in content)
    )


def _openai_tool(tool: dict, where: str) -> dict:
    """A tool schema in OpenAI's shape ``{"type": "function", "function": {...}}``."""
    if isinstance(tool.get("function"), dict):
        return {"type": "function", **tool}
    if isinstance(tool.get("name"), str):
        return {"type": "function", "function": tool}
    raise RecordError("tool schema must hold a `name` (or a `function` object)", where, code="invalid_record")


# -- per-message training flags ---------------------------------------------------------------------

WEIGHT_KEYS = ("loss_weight", "train", "training")


def message_weight(m: dict, where: str) -> float | None:
    """A message's training flag: ``loss_weight`` (a number >= 0; LLaMA-Factory) or ``train`` /
    ``training`` (true/false; axolotl). None when it carries none (the default applies: replies are
    trained, everything else is not). 0 masks the message, 1 trains it; other weights are kept."""
    found: list[tuple[str, float]] = []
    for key in WEIGHT_KEYS:
        value = m.get(key)
        if value is None:
            continue
        if key == "loss_weight":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 <= value < float("inf")):
                raise RecordError(
                    f"`loss_weight` must be a number >= 0, got {json.dumps(value)}", f"{where}.{key}", code="wrong_type"
                )
            found.append((key, float(value)))
        else:
            if not isinstance(value, bool):
                raise RecordError(f"`{key}` must be true or false, got {json.dumps(value)}", f"{where}.{key}", code="wrong_type")
            found.append((key, 1.0 if value else 0.0))
    if not found:
        return None
    if len({w > 0 for _, w in found}) > 1:
        keys = " and ".join(f"`{k}`" for k, _ in found)
        raise RecordError(f"{keys} disagree on whether this message is trained", where, code="invalid_record")
    return next(w for k, w in found if k == "loss_weight") if any(k == "loss_weight" for k, _ in found) else found[0][1]


def weights_of(raw: list, key: str) -> tuple[float | None, ...] | None:
    """Each message's training flag, or None when no message carries one."""
    weights = tuple(message_weight(m, f"{key}[{i}]") if isinstance(m, dict) else None for i, m in enumerate(raw))
    return weights if any(w is not None for w in weights) else None


def tools_field(tools: Any, key: str = "tools") -> list | None:
    """Tools as a list of schemas; a JSON string holding that list (as ShareGPT exports write it) is parsed."""
    if tools is None or tools == "" or tools == []:
        return None
    if isinstance(tools, str):
        try:
            tools = REPEATS.loads_string(tools)
        except json.JSONDecodeError as exc:
            raise RecordError(f"`{key}` is a string but not valid JSON: {exc.msg}", key, code="invalid_json_field") from None
    if isinstance(tools, dict):
        tools = [tools]
    if not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools):
        raise RecordError(f"`{key}` must be a list of JSON schema objects", key, code="wrong_type")
    return tools or None


def check_trainable(messages: list[dict], train_from: int = 0) -> None:
    """A conversation must hold an assistant turn to train and must not end on a prompt."""
    if not any(m["role"] == "assistant" for m in messages[train_from:]):
        raise RecordError("no assistant turn (nothing to train)", "messages", code="nothing_to_train")
    if messages[-1]["role"] != "assistant":
        last = messages[-1]["role"]
        raise RecordError(f"conversation ends on a {last} turn (nothing to train after it)", "messages", code="nothing_to_train")


# -- helpers --------------------------------------------------------------------------------------


def _turn_list(obj: dict, key: str) -> list:
    if key not in obj:
        raise RecordError(f"missing field `{key}`", key, code="missing_field")
    turns = obj[key]
    if not isinstance(turns, list) or not turns:
        raise RecordError(f"`{key}` must be a non-empty list of messages", key, code="wrong_type")
    return turns


def _string(obj: dict, key: str, required: bool = False) -> str:
    if key not in obj or obj[key] is None:
        if required:
            raise RecordError(f"missing field `{key}`", key, code="missing_field")
        return ""
    value = obj[key]
    if not isinstance(value, str):
        raise RecordError(f"`{key}` must be a string, got {json_kind(value)}", key, code="wrong_type")
    return value


def _check_text(text: str, key: str) -> None:
    if _has_lone_surrogate(text):
        raise RecordError("text holds a lone surrogate (not encodable text)", key, code="lone_surrogate")


def _unknown_role(role: Any) -> str:
    if not isinstance(role, str):
        return f"role must be a string, got {json_kind(role)}"
    hint = ROLE_HINTS.get(role.lower())
    if hint is None and role.lower() in ROLE_TARGETS:
        hint = role.lower()
    tip = f" (did you mean `--role-map {role}={hint}`?)" if hint and hint != role else " (rename it with `--role-map`)"
    return f"unknown role `{role}`{tip}"


def json_kind(value: Any) -> str:
    """What a parsed JSON value is, in JSON's words ("an array", "a string"...)."""
    if value is None:
        return "null"
    kinds = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    return kinds.get(type(value), type(value).__name__)


def _has_lone_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def may_hold_lone_surrogate(json_text: str) -> bool:
    """Cheap pre-check on the raw JSON: lone surrogates can only come from ``\\udXXX`` escapes."""
    return _MAYBE_SURROGATE.search(json_text) is not None


def has_lone_surrogate_anywhere(obj: Any) -> bool:
    stack = [obj]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            if _has_lone_surrogate(v):
                return True
        elif isinstance(v, dict):
            stack.extend(v.keys())
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
    return False
