"""Stage 3, render: ``Conversation`` -> the chat-template text and the character spans to train.

Spans come from the template's own word on where each reply starts and ends, mapped into the one
full render (which is the only text that gets tokenized):

* a reply starts where ``render(messages[:i], add_generation_prompt=True)`` stops agreeing with the
  full render (normally: its end, right after the generation header);
* it ends where ``render(messages[:i+1])`` ends, found in the full render by aligning the tail, then
  trimmed of the whitespace the template writes after the end-of-turn marker.

Templates that rewrite earlier turns (Qwen3 drops old ``<think>`` blocks) make the prefix renders
differ from the full render; aligning instead of taking lengths keeps the labels right there, which
the usual token-level prefix-diff does not.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import jinja2

from .config import TrainOn
from .normalize import Conversation
from .templates import compile_template

_REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")
_PROBE = "PADPREP_PROBE_REPLY"


@dataclass(frozen=True)
class Rendered:
    """A rendered conversation: ``text`` and the ``[start, end)`` character spans whose tokens are trained."""

    text: str
    spans: tuple[tuple[int, int], ...]
    realigned: int = 0  # reply boundaries that were not plain prefix lengths (template rewrote history)


class RenderError(ValueError):
    """The chat template raised, or produced something padprep cannot align."""


class Renderer:
    """Renders conversations with one compiled template and one set of special-token variables."""

    def __init__(
        self, template: str, special: dict[str, str], train_on: TrainOn = TrainOn.assistant, fast_path: bool = True
    ):
        self.template = compile_template(template)
        self.variables = dict(special)
        self.train_on = train_on
        self.end_marker = self._probe_end_marker()
        self.header = self._probe_generation_header()
        self.fast_path = fast_path and bool(self.header and self.end_marker)

    def render_text(self, messages: list[dict] | tuple[dict, ...], tools: list | None, generation: bool) -> str:
        """Render like ``apply_chat_template(..., tokenize=False)``."""
        try:
            return self.template.render(
                messages=[_template_message(m) for m in messages],
                tools=tools,
                documents=None,
                add_generation_prompt=generation,
                **self.variables,
            )
        except jinja2.TemplateError as exc:
            raise RenderError(f"chat template raised an error: {exc}") from None
        except (TypeError, ValueError, IndexError, KeyError, AttributeError) as exc:
            raise RenderError(f"chat template failed: {type(exc).__name__}: {exc}") from None

    def render(self, conv: Conversation) -> Rendered:
        full = self.render_text(conv.messages, conv.tools, generation=False)
        if self.train_on is TrainOn.all:
            return Rendered(full, ((0, len(full)),))
        turns = conv.assistant_indices
        fast = self.header_spans(conv, full) if self.fast_path else None
        if fast is not None:
            return Rendered(full, tuple(fast[-1:] if self.train_on is TrainOn.last else fast))
        if self.train_on is TrainOn.last:
            turns = turns[-1:]
        return Rendered(full, *self.template_spans(conv, full, turns))

    def template_spans(self, conv: Conversation, full: str, turns: list[int]) -> tuple[tuple, int]:
        """Spans from the template's own prefix renders (one or two extra renders per reply)."""
        spans, realigned = [], 0
        for i in turns:
            start, moved_start = self._reply_start(conv, i, full)
            end, moved_end = self._reply_end(conv, i, full, start)
            spans.append((start, max(start, end)))
            realigned += moved_start + moved_end
        return tuple(spans), realigned

    def header_spans(self, conv: Conversation, full: str) -> list[tuple[int, int]] | None:
        """Fast path: each reply runs from after a generation header to the next end-of-turn marker.

        Used only when the conversation passes every check (one header per assistant turn, each
        reply closed by the marker before the next header, each reply's text found inside its span);
        otherwise ``None`` and the template's own boundaries are used. Preflight compares both.
        """
        header, marker = self.header, self.end_marker
        turns = conv.assistant_indices
        heads = _find_all(full, header)
        if len(heads) != len(turns):
            return None
        spans = []
        for k, (i, h) in enumerate(zip(turns, heads)):
            start = h + len(header)
            end = full.find(marker, start)
            limit = heads[k + 1] if k + 1 < len(heads) else len(full)
            if end < 0 or end + len(marker) > limit:
                return None
            end += len(marker)
            content = conv.messages[i].get("content", "").strip()
            if content and content not in full[start:end]:
                return None
            spans.append((start, end))
        return spans

    def _reply_start(self, conv: Conversation, i: int, full: str) -> tuple[int, int]:
        try:
            prompt = self.render_text(conv.messages[:i], conv.tools, generation=True)
        except RenderError:
            if i == 0:  # some templates cannot render an empty prefix; the reply then starts the text
                return 0, 1
            raise
        start = common_prefix_length(prompt, full)
        return start, int(start != len(prompt))

    def _reply_end(self, conv: Conversation, i: int, full: str, start: int) -> tuple[int, int]:
        upto = self.render_text(conv.messages[: i + 1], conv.tools, generation=False)
        if full.startswith(upto):
            end, moved = len(upto), 0
        else:
            end, moved = align_end(upto, full), 1
        end = start + len(full[start:end].rstrip())
        marker = self.end_marker
        if marker and not full.startswith(marker, end - len(marker)):
            found = full.find(marker, start)
            if found >= 0:
                end, moved = found + len(marker), 1
        return end, moved

    def _probe_end_marker(self) -> str:
        """What the template writes right after a reply (``<|im_end|>``, ``<|eot_id|>``...), whitespace trimmed."""
        probe = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": _PROBE}]
        try:
            text = self.render_text(probe, None, generation=False)
        except RenderError:
            return ""
        at = text.rfind(_PROBE)
        return text[at + len(_PROBE) :].strip() if at >= 0 else ""


    def _probe_generation_header(self) -> str:
        """The text ``add_generation_prompt`` appends (``<|im_start|>assistant\\n``...)."""
        probe = [{"role": "user", "content": "hi"}]
        try:
            bare = self.render_text(probe, None, generation=False)
            prompted = self.render_text(probe, None, generation=True)
        except RenderError:
            return ""
        return prompted[len(bare) :] if prompted.startswith(bare) else ""


def _find_all(text: str, needle: str) -> list[int]:
    out, at = [], text.find(needle)
    while at >= 0:
        out.append(at)
        at = text.find(needle, at + len(needle))
    return out


def _template_message(message: dict) -> dict:
    """The message as transformers hands it to the template (reasoning also under its other names)."""
    reasoning = next((message[k] for k in _REASONING_FIELDS if message.get(k) is not None), None)
    if reasoning is None:
        return dict(message)
    return {"thinking": reasoning, **message, "reasoning_content": reasoning}


def common_prefix_length(a: str, b: str) -> int:
    """Length of the longest common prefix, in C speed for the common case where ``a`` is a prefix of ``b``."""
    if b.startswith(a):
        return len(a)
    return len(os.path.commonprefix([a, b]))


def align_end(upto: str, full: str) -> int:
    """Where the end of ``upto`` lies in ``full`` when ``upto`` is not a prefix of it.

    After the common prefix, the template wrote something in ``upto`` that the full render lacks
    (Qwen3's ``<think></think>`` on a turn that is last only in the prefix). The longest suffix of
    ``upto``'s tail that continues the full render at that point is the rest of the reply.
    """
    p = common_prefix_length(upto, full)
    tail = upto[p:]
    for j in range(len(tail) + 1):
        if full.startswith(tail[j:], p):
            return p + len(tail) - j
    return p
