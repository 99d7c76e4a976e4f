"""Where a reply lies in the full render: text alignment (pure functions of strings, no template).

``chat.render`` finds each reply's boundaries from the template's own prefix renders with these; the
span check (``tool_call_pieces``) looks for a reply's own text, in the forms a template writes it.
"""

from __future__ import annotations

import json
import os


def tool_call_pieces(message: dict) -> list[tuple[str, list[tuple[str, ...]]]]:
    """(name, [forms of each string in the arguments]) per tool call: a template writes them raw or JSON-escaped."""
    out = []
    for call in message.get("tool_calls") or ():
        function = call.get("function", call) if isinstance(call, dict) else None
        name = function.get("name") if isinstance(function, dict) else None
        if not isinstance(name, str) or not name:
            continue
        arguments = function.get("arguments")
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments)
            except ValueError:
                arguments = None  # written as the record gives it: nothing to check beyond the name
        out.append((name, [_forms(s) for s in _strings(arguments)]))
    return out


def _strings(value, depth: int = 0) -> list[str]:
    """Keys and string values inside a JSON value (a few levels deep)."""
    if depth > 4:
        return []
    if isinstance(value, str):
        return [value] if value.strip() else []
    if isinstance(value, dict):
        return [k for k in value if isinstance(k, str) and k.strip()] + [
            s for v in value.values() for s in _strings(v, depth + 1)
        ]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v, depth + 1)]
    return []


def _forms(text: str) -> tuple[str, ...]:
    """Raw, JSON-escaped (with and without ASCII escapes), and escaped twice: a template that writes arguments
    given as a JSON string through ``tojson`` escapes their backslashes and quotes once more."""
    escaped = json.dumps(text, ensure_ascii=False)[1:-1]
    return (text.strip(), escaped, json.dumps(text)[1:-1], json.dumps(escaped, ensure_ascii=False)[1:-1])


def after_same_text(body: str, head: str, full: str, floor: int) -> int | None:
    """The first place at or after ``floor`` where ``full`` holds ``head`` (what the template writes before
    every reply, see ``Renderer._head_of``) and the text from ``floor`` up to it is how ``body`` ends
    (None: nowhere; without a head, the longest tail of ``body`` found after ``floor`` is used)."""
    if not head:
        return align_tail(body, full, floor)
    at = full.find(head, floor)
    while at >= 0:
        if body.endswith(full[floor:at]):
            return at
        at = full.find(head, at + 1)
    return None


def reply_offset(upto: str, prompt: str | None, header: str) -> int | None:
    """Where the reply begins in ``upto`` (the render that ends with it), from its prompt render."""
    if prompt is None:
        return 0
    if upto.startswith(prompt):
        return len(prompt)
    body = prompt[: len(prompt) - len(header)]
    if upto.startswith(body):
        return len(body) + common_prefix_length(header, upto[len(body) : len(body) + len(header)])
    return None


def resynchronise(reply: str, full: str, start: int) -> int:
    """The end in ``full`` of ``reply`` (a reply as rendered when last) where ``full`` has it from ``start``.

    The two agree up to a point, then the last-turn render holds something the full render lacks
    (Qwen3's ``<think>...</think>`` on the last reply); the longest rest of ``reply`` that ``full``
    continues with at that point is the rest of the reply.
    """
    agree = common_prefix_length(reply, full[start : start + len(reply)])
    at, rest = start + agree, reply[agree:]
    if not rest or at >= len(full):
        return at
    j = rest.find(full[at])
    while 0 <= j:
        if full.startswith(rest[j:], at):
            return at + len(rest) - j
        j = rest.find(full[at], j + 1)
    return at


def find_all(text: str, needle: str) -> list[int]:
    out, at = [], text.find(needle)
    while at >= 0:
        out.append(at)
        at = text.find(needle, at + len(needle))
    return out


def common_prefix_length(a: str, b: str) -> int:
    """Length of the longest common prefix, in C speed for the common case where ``a`` is a prefix of ``b``."""
    if b.startswith(a):
        return len(a)
    return len(os.path.commonprefix([a, b]))


def align_tail(text: str, full: str, floor: int) -> int | None:
    """Where ``text``'s tail ends in ``full``: the end of the first occurrence, at or after ``floor``, of
    the longest suffix of ``text`` that occurs there (None when not even its last character does).

    Occurring at or after ``floor`` is monotone in the suffix length (a suffix found at ``q`` has its
    own suffixes at ``q + 1``...), so the longest one is found by bisection.
    """
    lo, hi = 0, len(text)  # the longest suffix found has length in [lo, hi]
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if full.find(text[len(text) - mid :], floor) >= 0:
            lo = mid
        else:
            hi = mid - 1
    if lo == 0:
        return None
    return full.find(text[len(text) - lo :], floor) + lo
