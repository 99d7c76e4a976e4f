"""Stage 3, render: ``Conversation`` -> the chat-template text and the character spans to train.

Spans come from the template's own word on where each reply starts and ends, mapped into the one
full render (which is the only text that gets tokenized):

* a reply starts where ``render(messages[:i], add_generation_prompt=True)`` ends. When that prompt
  is a prefix of the full render, that is its length. When it is not (the template rewrote an
  earlier turn: Qwen3 keeps a ``<think>`` block on a reply that is last only in the prefix), the
  prompt's tail (the messages since the previous reply, without the generation header) is aligned
  into the full render *after the previous reply's end*, and the reply starts after as much of the
  generation header as the full render repeats there. Never at the first point where the two
  renders differ: that point can lie in any earlier turn.
* it ends where ``render(messages[:i+1])`` ends, found the same way (its tail aligned after the
  reply's start), then trimmed of the whitespace the template writes after the end-of-turn marker.

Every conversation's spans are then checked (``check_spans``): strictly increasing and disjoint,
each reply's own text (content, tool-call names and arguments, reasoning where the template keeps
it) inside its own span. A conversation that fails is rejected, never written with a wrong mask.
"""

from __future__ import annotations

import sys
import traceback
from dataclasses import dataclass
from functools import cached_property
from typing import Callable

import jinja2

from padprep.chat.spans import (
    after_same_text,
    align_tail,
    common_prefix_length,
    find_all,
    reply_offset,
    resynchronise,
    tool_call_pieces,
)
from padprep.chat.templates import BUDGET, DEFAULT_MAX_CHARS, TemplateLimitError, compile_template
from padprep.config import Reasoning, TrainOn
from padprep.errors import PadprepError
from padprep.input.conversation import Conversation
from padprep.input.formats import content_of, reasoning_of, template_view

_PROBE = "PADPREP_PROBE_REPLY"


@dataclass(frozen=True)
class Rendered:
    """A rendered conversation: ``text`` and the ``[start, end)`` character spans whose tokens are trained."""

    text: str
    spans: tuple[tuple[int, int], ...]
    realigned: int = 0  # reply boundaries that were not plain prefix lengths (template rewrote history)
    weights: tuple[float, ...] | None = None  # per span, where a message's loss_weight is not 1
    masked_by_flag: int = 0  # replies that a training flag (loss_weight 0, train false) masked
    trained_by_flag: int = 0  # other messages that a training flag trains
    think_masked: int = 0  # think blocks masked by --reasoning


class RenderError(PadprepError, ValueError):
    """The chat template raised, or produced something padprep cannot align (a reject; exit 1 if one escapes)."""

    code = "template_error"


class SpanError(RenderError):
    """The trained spans cannot be located or trained as asked in the template's render."""

    code = "span_check"


class TemplateLimit(RenderError):
    """The template went past a limit while rendering (a value too large, too long a time): the template's fault."""

    code = "template_limit"


class TooLong(RenderError):
    """The render is longer than any row --max-length allows (or than the render cap): dropped, never tokenized."""

    code = "too_long"

    def __init__(self, message: str, chars: int, over_cap: bool = False):
        super().__init__(message)
        self.chars = chars
        self.over_cap = over_cap  # past the render cap (not only past --max-length)


# A conversation whose replies need the template's own prefix renders costs two renders of (a prefix
# of) the whole conversation per reply: past this many replies it is rejected, not rendered N^2 times.
MAX_TEMPLATE_REPLIES = 256


class Renderer:
    """Renders conversations with one compiled template and one set of special-token variables."""

    def __init__(
        self,
        template: str,
        special: dict[str, str],
        train_on: TrainOn = TrainOn.assistant,
        fast_path: bool = True,
        reasoning: Reasoning = Reasoning.train,
        max_chars: int = DEFAULT_MAX_CHARS,
        too_long: Callable[[str], bool] | None = None,
        too_long_chars: int = 0,
    ):
        self.template = compile_template(template)
        self.variables = dict(special)
        self.train_on = train_on
        self.reasoning = reasoning
        self.max_chars = max_chars  # cap on one render's output and on any value the template builds
        self.too_long = too_long  # a render certainly longer than --max-length tokens (None: no such bound)
        self.too_long_chars = too_long_chars  # no text this short is too long
        self.tail = self._probe_document_tail()
        self.end_marker = self._probe_end_marker()
        self.header = self._probe_generation_header()
        self.fast_path = fast_path and bool(self.header and self.end_marker)

    def render_text(
        self, messages: list[dict] | tuple[dict, ...], tools: list | None, generation: bool, stop_when_too_long: bool = False
    ) -> str:
        """Render like ``apply_chat_template(..., tokenize=False)``: messages exactly as the record gives them.

        With ``stop_when_too_long``, rendering stops as soon as the text so far is certainly longer than
        --max-length tokens (``TooLong``): dropping a huge record costs no more than the longest row.
        """
        BUDGET.start(self.max_chars)
        check_at = self.too_long_chars if stop_when_too_long and self.too_long is not None else self.max_chars
        try:
            chunks, total = [], 0
            for chunk in self.template.generate(
                messages=list(messages), tools=tools, documents=None, add_generation_prompt=generation, **self.variables
            ):
                total += len(chunk)
                chunks.append(chunk)
                if total > check_at:
                    if total > self.max_chars:
                        raise TooLong(f"its rendered text is longer than the limit of {self.max_chars:,} characters", total, True)
                    if self.too_long("".join(chunks)):
                        raise TooLong(
                            f"its rendered text (the first {total:,} characters already) holds more tokens than the limit",
                            total,
                        )
                    check_at = min(2 * total, self.max_chars)
            return "".join(chunks)
        except RenderError:
            raise
        except TemplateLimitError as exc:
            traceback.clear_frames(exc.__traceback__)  # its frames hold the oversized values: free them now
            raise TemplateLimit(f"chat template went past a limit: {exc}") from None
        except jinja2.TemplateError as exc:
            # the template's own raise_exception(message) says what is wrong in its author's words
            at = "" if type(exc) is jinja2.TemplateError else _at_line(exc)
            raise RenderError(f"chat template raised an error: {exc}{at}") from None
        except RecursionError as exc:  # a macro that calls itself without end on this record's data
            at = _at_line(exc)
            traceback.clear_frames(exc.__traceback__)  # a thousand frames: free them now
            raise RenderError(f"chat template recursed past Python's limit of {sys.getrecursionlimit():,} calls{at}") from None
        except (TypeError, ValueError, IndexError, KeyError, AttributeError) as exc:
            raise RenderError(f"chat template failed: {type(exc).__name__}: {exc}{_at_line(exc)}") from None

    def render(self, conv: Conversation) -> Rendered:
        full = self.render_text(conv.messages, conv.tools, generation=False, stop_when_too_long=True)
        if self.too_long is not None and self.too_long(full):  # decided before any prefix render or token
            raise TooLong(f"its rendered text of {len(full):,} characters holds more tokens than the limit", len(full))
        if self.train_on is TrainOn.all:
            return Rendered(full, ((0, len(full)),))
        turns = conv.assistant_indices
        fast = self.header_spans(conv, full) if self.fast_path else None
        if fast is not None:
            spans, realigned = tuple(fast), 0
        elif len(turns) > MAX_TEMPLATE_REPLIES:
            raise RenderError(
                f"{len(turns):,} replies whose spans only the template's own prefix renders can find (2 renders of "
                f"the conversation per reply); the limit is {MAX_TEMPLATE_REPLIES}: split the conversation"
            )
        else:
            spans, realigned = self.template_spans(conv, full, turns)
        self.check_spans(conv, full, turns, spans)
        chosen = list(zip(turns, spans))
        if self.train_on is TrainOn.last:
            chosen = chosen[-1:]
        weighted, masked, extra = self._apply_flags(conv, full, chosen) if conv.weights else ([(s, 1.0) for _, s in chosen], 0, 0)
        pieces, think = self._mask_reasoning(full, weighted)
        weights = tuple(w for _, w in pieces)
        return Rendered(
            full,
            tuple(s for s, _ in pieces),
            realigned,
            weights if any(w != 1.0 for w in weights) else None,
            masked,
            extra,
            think,
        )

    # -- per-message training flags and --reasoning -----------------------------------------------

    def _apply_flags(self, conv: Conversation, full: str, chosen: list) -> tuple[list, int, int]:
        """Reply spans kept or masked by their message's flag, plus the other messages a flag trains."""
        weights = conv.weights
        kept, masked = [], 0
        for i, span in chosen:
            w = weights[i] if weights[i] is not None else 1.0
            if w > 0:
                kept.append((span, w))
            else:
                masked += 1
        replies = {i for i, _ in chosen}
        extra = [
            i
            for i, w in enumerate(weights)
            if w and i not in replies and not (self.train_on is TrainOn.last and conv.messages[i]["role"] == "assistant")
        ]
        kept += [(self.message_span(conv, i, full), weights[i]) for i in extra]
        kept.sort()
        if any(a[1] > b[0] for (a, _), (b, _) in zip(kept, kept[1:])):
            raise SpanError(
                "the spans of the messages to train overlap (a training flag on a message the template merges with another)"
            )
        return kept, masked, len(extra)

    def message_span(self, conv: Conversation, i: int, full: str) -> tuple[int, int]:
        """Any message's span, for a training flag that asks for it: its content through the end of its turn."""
        role = conv.messages[i]["role"]
        try:
            before = self._bare(conv.messages[:i], conv.tools) if i else ""
        except RenderError:
            before = ""
        upto = self._bare(conv.messages[: i + 1], conv.tools)
        if not (full.startswith(upto) and upto.startswith(before)):
            raise SpanError(f"cannot train message {i} ({role}) as its flag asks: the template renders it differently later on")
        content = content_of(conv.messages[i]).strip()
        start = full.find(content, len(before), len(upto)) if content else -1
        if start < 0:
            raise SpanError(f"cannot train message {i} ({role}) as its flag asks: its content is not in its render")
        return start, len(before) + len(full[len(before) : len(upto)].rstrip())

    def _mask_reasoning(self, full: str, weighted: list) -> tuple[list, int]:
        """Spans with their think blocks cut out (``--reasoning mask``; ``mask-empty``: only empty blocks)."""
        markers = self.think_markers if self.reasoning is not Reasoning.train else None
        if not markers:
            return weighted, 0
        opening, closing = markers
        out, masked, floor = [], 0, 0
        for (s, e), w in weighted:
            close = full.find(closing, s, e)
            open_ = full.rfind(opening, floor, close) if close >= 0 else -1
            inner = full[open_ + len(opening) : close] if open_ >= 0 else ""
            if open_ < 0 or (self.reasoning is Reasoning.mask_empty and inner.strip()):
                out.append(((s, e), w))
            else:
                after = close + len(closing)
                after += len(full[after:e]) - len(full[after:e].lstrip())
                out += [(piece, w) for piece in ((s, max(s, open_)), (after, e)) if piece[0] < piece[1]]
                masked += 1
            floor = e
        return out, masked

    @cached_property
    def think_markers(self) -> tuple[str, str] | None:
        """The think block's opening and closing markers (``<think>``, ``</think>``), probed from the template:
        what it writes right before and right after a reply's reasoning. None: it writes no think block."""
        reply = template_view({"role": "assistant", "content": "A.", "reasoning_content": _PROBE_REASONING})
        try:
            text = self.render_text([{"role": "user", "content": "hi"}, reply], None, generation=False)
        except RenderError:
            return None
        at = text.find(_PROBE_REASONING)
        answer = text.find("A.", at + len(_PROBE_REASONING)) if at >= 0 else -1
        if answer < 0:
            return None
        lines = [line.strip() for line in text[:at].split("\n") if line.strip()]
        opening = lines[-1] if lines else ""
        role = self.header.strip().split("\n")[0].strip() if self.header.strip() else ""
        if role and role in opening:  # the role header and the marker on one line: keep what follows the header
            opening = opening.split(role)[-1].strip()
        closing = text[at + len(_PROBE_REASONING) : answer].strip().split("\n")[0].strip()
        if not opening or not closing or opening.endswith("hi"):
            return None
        return opening, closing

    def template_spans(self, conv: Conversation, full: str, turns: list[int]) -> tuple[tuple, int]:
        """Spans from the template's own prefix renders (two extra renders per reply), each found after the last."""
        spans, realigned, floor, previous = [], 0, 0, -1
        for i in turns:
            prompt, header = self._prompt(conv, i)
            start, moved_start = self._reply_start(i, prompt, header, full, floor, conv.messages[previous + 1 : i])
            previous = i
            end, moved_end = self._reply_end(conv, i, prompt, header, full, start)
            spans.append((start, max(start, end)))
            realigned += moved_start + moved_end
            floor = max(start, end)
        return tuple(spans), realigned

    def header_spans(self, conv: Conversation, full: str) -> list[tuple[int, int]] | None:
        """Fast path: each reply runs from after a generation header to the next end-of-turn marker.

        Used only when the conversation passes every check (one header per assistant turn, each
        reply closed by the marker before the next header, each reply's text found inside its span);
        otherwise ``None`` and the template's own boundaries are used. Preflight compares both.
        """
        header, marker = self.header, self.end_marker
        turns = conv.assistant_indices
        heads = find_all(full, header)
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
            content = content_of(conv.messages[i]).strip()
            if content and content not in full[self._with_header(full, h, start) : end]:
                return None
            spans.append((start, end))
        return spans

    def check_spans(self, conv: Conversation, full: str, turns: list[int], spans) -> None:
        """Raise ``RenderError`` unless every reply's span is in order, disjoint and holds the reply's own text.

        A reply's text counts where the template wrote it between the previous reply's span and the
        next one's (its *region*): there it must lie inside the span. Text a template does not write
        at all (Llama 3.1 drops the content beside a tool call) is not asked for; tool calls, which
        the template is probed to write, always are.
        """
        floor = 0
        for k, (i, (start, end)) in enumerate(zip(turns, spans)):
            ceiling = spans[k + 1][0] if k + 1 < len(spans) else len(full)
            if start == end and floor <= start <= min(ceiling, len(full)) and self._writes_nothing(conv.messages[i]):
                problem = None  # a reply the template writes nothing of (GLM-4 drops tool calls): nothing to train
            elif not floor <= start < end <= min(ceiling, len(full)):
                problem = "its span is empty, out of order or overlaps another reply's"
            else:
                # tool calls are looked for after the message before the reply (not in a tool catalog before it)
                before = content_of(conv.messages[i - 1]).strip() if i else ""
                at = full.rfind(before, floor, start) if before else -1
                calls = full[at + len(before) if at >= 0 else floor : ceiling]
                problem = self._missing_text(
                    conv.messages[i], full[self._with_header(full, floor, start) : end], full[floor:ceiling], calls
                ) or self._scaffolding_in(conv.messages[i], full[start:end])
            if problem:
                raise SpanError(f"could not locate reply {k + 1} of {len(turns)} (message {i}): {problem}")
            floor = end

    def _writes_nothing(self, message: dict) -> bool:
        """The reply has no text the template writes: no content, and no tool calls or reasoning it renders."""
        return not (
            content_of(message).strip()
            or (self.renders_tool_calls and message.get("tool_calls"))
            or (self.renders_reasoning and reasoning_of(message).strip())
        )

    def _with_header(self, full: str, floor: int, start: int) -> int:
        """Where the generation header (or the end of it that the full render writes) begins before ``start``.

        A reply's own text may begin with the end of the header: reasoning kept in ``content`` opens with
        ``<think>\\n``, which a template whose prompt opens the think block writes where the prompt ends.
        That text is prompt, not reply, yet it is the field's own text: the check looks for the field in
        the span together with that header text, and nowhere else."""
        header = self.header
        for j in range(min(len(header), start - floor), 0, -1):
            if full.startswith(header[-j:], start - j):
                return start - j
        return start

    def _scaffolding_in(self, message: dict, span: str) -> str | None:
        """What the template writes around every reply (its generation header, the opening of the next turn)
        found inside the span, outside the reply's own text (None: nothing). A span that holds it would
        train the model to write the template's scaffolding."""
        if not self.scaffolding or not any(m in span for m in self.scaffolding):
            return None
        own = [content_of(message).strip(), reasoning_of(message).strip()]
        own += [form for _, pieces in tool_call_pieces(message) for forms in pieces for form in forms]
        for text in sorted((t for t in own if t), key=len, reverse=True):
            span = span.replace(text, "\0")
        for marker in self.scaffolding:
            if marker in span:
                return f"its span holds `{marker}`, which the template writes around every reply"
        return None

    @cached_property
    def scaffolding(self) -> tuple[str, ...]:
        """Text the template writes around every reply that no reply's span may hold: the generation header's
        first line (what ``add_generation_prompt`` adds after a user turn, as the full render writes it
        before a reply) and the opening of the turn that follows a reply (after its end-of-turn marker),
        whitespace trimmed; probed, never a family's markers. Markers of less than two characters (or
        none at all) are not checked."""
        out = []
        head = self._head_of(self.header).strip() if self.header else ""
        out.append(head)
        after = self._after_reply.strip()
        if self.end_marker and after.startswith(self.end_marker):
            after = after[len(self.end_marker) :].strip()
        out.append(after)
        return tuple(dict.fromkeys(m for m in out if len(m) >= 2 and not m.isspace()))

    @cached_property
    def _after_reply(self) -> str:
        """What the full render writes between an earlier reply's content and the next user turn's content."""
        probe = [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": _PROBE},
            {"role": "user", "content": _PROBE_USER},
            {"role": "assistant", "content": "A."},
        ]
        try:
            text = self.render_text(probe, None, generation=False)
        except RenderError:
            return ""
        at, user = text.find(_PROBE), text.find(_PROBE_USER)
        return text[at + len(_PROBE) : user] if 0 <= at < user else ""

    @cached_property
    def turn_openings(self) -> tuple[str, ...]:
        """What the template writes right after a reply when another turn follows, each up to that turn's
        content: the opening of a user turn (after the end-of-turn marker, if any) and of a tool turn (after a
        tool call's arguments); not the generation header, after which the model goes on. The stop signal of a template that writes no
        end-of-turn marker is found in these (``Processor.stop_ids``)."""
        out = []
        after = self._after_reply
        if self.end_marker and after.lstrip().startswith(self.end_marker):
            after = after.lstrip()[len(self.end_marker) :]
        out.append(after)
        text = self._tools_probe
        result = text.find("20 degrees")
        call = text.rfind("Paris", 0, result) if result >= 0 else -1
        if call >= 0:
            out.append(text[call + len("Paris") : result])
        return tuple(o for o in out if o.strip())

    def _missing_text(self, message: dict, span: str, region: str, calls: str) -> str | None:
        """What of the reply's own text lies outside its span (None: nothing). ``region``: the text between the
        neighbouring replies; ``calls``: its part after the message before the reply."""
        content = content_of(message).strip()
        for piece in (content, content[-_TAIL:].strip()):
            if piece and piece in region and piece not in span:
                return "its content is outside its span"
        reasoning = reasoning_of(message).strip()
        if reasoning and reasoning in region and reasoning not in span:
            return "its reasoning is outside its span"
        if self.renders_tool_calls:
            # Like the content, a call's name and argument strings are asked for where the template writes them
            # between the neighbouring replies: a template may write the call's id (Kimi: `functions.NAME:INDEX`,
            # from the record's `id`) or another form instead of the bare name.
            for name, pieces in tool_call_pieces(message):
                if name in calls and name not in span:
                    return f"tool call `{name}` is not inside its span"
                if not all(any(form in span for form in forms) for forms in pieces if any(form in calls for form in forms)):
                    return f"the arguments of tool call `{name}` are not inside its span"
        return None

    def _prompt(self, conv: Conversation, i: int) -> tuple[str | None, str]:
        """``render(messages[:i], add_generation_prompt=True)`` and the generation header that ends it.

        None for a reply that opens the conversation where the template cannot render no messages.
        """
        try:
            prompt = self.render_text(conv.messages[:i], conv.tools, generation=True)
        except RenderError:
            if i == 0:
                return None, ""
            raise
        if self.header and prompt.endswith(self.header):
            return prompt, self.header
        bare = self._bare(conv.messages[:i], conv.tools)
        return prompt, prompt[len(bare) :] if prompt.startswith(bare) else ""

    def _reply_start(self, i: int, prompt: str | None, header: str, full: str, floor: int, between) -> tuple[int, int]:
        """Where reply ``i`` starts in ``full``: after its prompt, found after the previous reply (``floor``).

        ``between`` are the messages since the previous reply (user and tool turns)."""
        if prompt is None:
            return 0, 1  # the reply starts the text
        if floor <= len(prompt) and full.startswith(prompt):
            return len(prompt), 0
        if floor <= len(prompt) and full.startswith(prompt[:floor]):
            return self._where_renders_part(i, prompt, header, full, floor, between), 1
        # The template rewrote an earlier turn. What lies between the previous reply and this one is the
        # same text in both renders: the prompt ends with it, the full render has it at ``floor``, and a
        # generation header (or as much of it as the full render repeats) comes right after it.
        body = prompt[: len(prompt) - len(header)]
        at = after_same_text(body, self._head_of(header), full, floor)
        if at is None:
            raise SpanError(f"could not locate the prompt of reply at message {i} in the full render")
        return at + self._header_match(full, at, header), 1

    def _where_renders_part(self, i: int, prompt: str, header: str, full: str, floor: int, between) -> int:
        """Reply ``i``'s start where both renders agree through the previous reply and part after it: the
        prompt ends with text that only a render ending there writes (DeepSeek-R1 closes its tool outputs
        block, ``<｜tool▁outputs▁end｜>``, only at the end; a generation header the full render repeats in
        part). The reply starts where the two part, then after as much of the header as the full render
        repeats; the turns since the previous reply must lie before that point, else it is not placed."""
        start = floor + common_prefix_length(prompt[floor:], full[floor : len(prompt)])
        body = len(prompt) - len(header)
        if header and body < start < len(prompt):  # they part inside the header
            start = body + self._header_match(full, body, header)
        if header and start <= body:  # they part before the header: it must follow (after a separator)...
            after = self._after_header(full, start, header)
            if after is None and start < body:
                raise SpanError(f"could not locate the prompt of reply at message {i} in the full render")
            # ... or, where they part right where the header would begin, the template writes none there:
            # the reply continues after a tool result (DeepSeek-R1 after `<｜tool▁outputs▁end｜>`)
            start = start if after is None else after
        for m in between:
            content = content_of(m).strip()
            if content and content in full[floor:] and content not in full[floor:start]:
                raise SpanError(f"could not locate the prompt of reply at message {i}: the turns before it are not all before it")
        return start

    def _after_header(self, full: str, at: int, header: str) -> int | None:
        """Where the reply begins when the full render has its generation header at ``at``: right there, or
        after the separator the template writes between a turn and the next one only when another turn
        follows (``…Q### Response:\\n`` as prompt, ``…Q\\n\\n### Response:\\nA`` in the full render).

        The header's first line (see ``_head_of``) must be there; the reply starts after as much of the
        header as the full render repeats. The separator is the probed ``reply_head`` less the part of the
        header it ends with, or whitespace alone. None: no header there."""
        head = self._head_of(header)
        if not head.strip():
            return at + self._header_match(full, at, header)
        separators = ["", self._reply_head_split[0]]
        rest = full[at : at + len(head) + 64]
        separators.append(rest[: len(rest) - len(rest.lstrip())])
        for sep in separators:
            if full.startswith(sep, at) and full.startswith(head, at + len(sep)):
                begin = at + len(sep)
                return begin + self._header_match(full, begin, header)
        return None

    def _header_match(self, full: str, at: int, header: str) -> int:
        """How much of ``header`` the full render writes at ``at`` before the reply. Where it writes only part
        of it, no more than the probed reply head: the reply may begin with the character that follows the
        reply head in the header (DeepSeek-R1's prompt ends ``<｜Assistant｜><think>\\n``; a reply that starts
        with ``<`` follows ``<｜Assistant｜>`` in the full render, and that ``<`` is the reply's)."""
        n = common_prefix_length(header, full[at : at + len(header)])
        if n < len(header):
            part = self._reply_head_split[1] if header == self.header else ""
            if part and len(part) < n and header.startswith(part):
                return len(part)
        return n

    def _reply_end(self, conv: Conversation, i: int, prompt: str | None, header: str, full: str, start: int) -> tuple[int, int]:
        """Where reply ``i`` ends in ``full``: its render as the last message, re-synchronised after ``start``."""
        upto = self._bare(conv.messages[: i + 1], conv.tools)
        if len(upto) > start and full.startswith(upto):
            end, moved = len(upto), 0
        else:
            begins = reply_offset(upto, prompt, header)
            if begins is None:
                found = align_tail(upto, full, start)
                end = found if found is not None else start
            else:
                end = resynchronise(upto[begins:], full, start)
            moved = 1
        end = start + len(full[start:end].rstrip())
        marker = self.end_marker
        if marker and not full.startswith(marker, end - len(marker)):
            found = full.find(marker, start)
            # Not past the next reply's header: a template that ends its last turn with another token
            # (gpt-oss: <|return|> last, <|end|> before) has this turn's own end where the renders part,
            # and the token the full render writes there is the one the mask trains.
            head = self._head_of(self.header) if self.header else ""
            later = full.find(head, end) if head else -1
            # Nor past the next message's text: a template that writes a tool's result inside the model's
            # turn (Gemma 4) closes the turn only after the reply that follows the result.
            after = content_of(conv.messages[i + 1]).strip() if i + 1 < len(conv.messages) else ""
            bound = full.find(after, end) if after else -1
            if found >= 0 and not 0 <= later < found and not 0 <= bound < found:
                end, moved = found + len(marker), 1
        return end, moved

    def _head_of(self, header: str) -> str:
        """The part of a generation header that the full render writes before every reply: its first line,
        and no more than the probed reply head (DeepSeek-R1's prompt ends ``<｜Assistant｜><think>\\n``, its
        replies are written after ``<｜Assistant｜>`` alone)."""
        head = header[: header.index("\n") + 1] if "\n" in header else header
        if header == self.header and self.reply_head:
            head = head[: common_prefix_length(head, self._reply_head_split[1])]
        return head

    @cached_property
    def _reply_head_split(self) -> tuple[str, str]:
        """The probed ``reply_head`` as (separator, header part): the header part is where it repeats the most of
        the generation header; the separator, what comes before it (``\\n\\n`` where a template writes the
        separator between turns only when another turn follows)."""
        reply_head, header = self.reply_head, self.header
        best, at = 0, 0
        for j in range(len(reply_head)):
            n = common_prefix_length(reply_head[j:], header)
            if n > best:
                best, at = n, j
        return (reply_head[:at], reply_head[at:]) if best else ("", reply_head)

    @cached_property
    def reply_head(self) -> str:
        """What the template writes between a user turn and an earlier reply's content in a full render ('' where
        the probe cannot tell)."""
        first = [{"role": "user", "content": "hi"}]
        probe = first + [
            {"role": "assistant", "content": _PROBE},
            {"role": "user", "content": "ok"},
            {"role": "assistant", "content": "A."},
        ]
        try:
            bare = self.render_text(first, None, generation=False)
            text = self.render_text(probe, None, generation=False)
        except RenderError:
            return ""
        at = text.find(_PROBE)
        return text[len(bare) : at] if at >= len(bare) and text.startswith(bare) else ""

    def _probe_document_tail(self) -> str:
        """A special token (eos...) that a render without generation prompt writes after its last turn only
        (Phi-3: ``{% else %}{{ eos_token }}``), with the whitespace around it; '' for most templates.

        It closes the document, not a reply: no reply's span reaches into it. Found where the prompted
        render does not extend the bare one and the bare one ends with that token where the prompted
        one does not."""
        if self._user_turn is None:
            return ""
        bare, prompted = self._user_turn
        if prompted.startswith(bare):
            return ""
        for name in ("eos_token", "pad_token", "bos_token"):
            token = self.variables.get(name)
            if not isinstance(token, str) or not token or not bare.rstrip().endswith(token):
                continue
            if prompted.rstrip().endswith(token):
                continue
            at = bare.rstrip().rfind(token)
            spaced = at - (len(bare[:at]) - len(bare[:at].rstrip()))  # with the whitespace before it
            for start in (at, spaced):  # that whitespace stays where the prompted render has it too
                if prompted.startswith(bare[:start]):
                    return bare[start:]
        return ""

    def _bare(self, messages, tools) -> str:
        """``render(messages)`` without generation prompt, less the document tail (what a longer render has there)."""
        text = self.render_text(messages, tools, generation=False)
        return text[: len(text) - len(self.tail)] if self.tail and text.endswith(self.tail) else text

    def _probe_end_marker(self) -> str:
        """What the template writes right after a reply (``<|im_end|>``, ``<|eot_id|>``...), whitespace trimmed."""
        probe = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": _PROBE}]
        try:
            text = self._bare(probe, None)
        except RenderError:
            return ""
        at = text.rfind(_PROBE)
        return text[at + len(_PROBE) :].strip() if at >= 0 else ""

    def _probe_generation_header(self) -> str:
        """The text ``add_generation_prompt`` appends (``<|im_start|>assistant\\n``...)."""
        if self._user_turn is None:
            return ""
        bare, prompted = self._user_turn
        if self.tail and bare.endswith(self.tail):
            bare = bare[: len(bare) - len(self.tail)]
        return prompted[len(bare) :] if prompted.startswith(bare) else ""

    @cached_property
    def _user_turn(self) -> tuple[str, str] | None:
        """One user turn rendered without and with the generation prompt (None: the template cannot)."""
        probe = [{"role": "user", "content": "hi"}]
        try:
            return self.render_text(probe, None, generation=False), self.render_text(probe, None, generation=True)
        except RenderError:
            return None

    # -- which message fields the template writes at all (probed once, for the checks and the hazard) --

    @cached_property
    def renders_tool_calls(self) -> bool:
        return _PROBE_FUNCTION in self._tools_probe

    @cached_property
    def renders_tools(self) -> bool:
        return _PROBE_TOOL in self._tools_probe

    @cached_property
    def _tools_probe(self) -> str:
        """A tool round trip rendered with a few common shapes (templates differ on null content, string
        arguments); '' when the template renders none of them."""
        for content, arguments in (("", {"city": "Paris"}), ("", '{"city": "Paris"}'), (None, {"city": "Paris"})):
            call = {"type": "function", "function": {"name": _PROBE_FUNCTION, "arguments": arguments}}
            reply = {"role": "assistant", "tool_calls": [call], **({"content": content} if content is not None else {})}
            messages = [
                {"role": "user", "content": "hi"},
                reply,
                {"role": "tool", "content": "20 degrees", "name": _PROBE_FUNCTION},
                {"role": "assistant", "content": "It is 20 degrees."},
            ]
            try:
                return self.render_text(messages, [_PROBE_TOOL_SCHEMA], generation=False)
            except RenderError:
                continue
        return ""

    @cached_property
    def renders_reasoning(self) -> bool:
        """Whether the template writes a final reply's reasoning (given under all the names templates read)."""
        reply = template_view({"role": "assistant", "content": "A.", "reasoning_content": _PROBE_REASONING})
        try:
            return _PROBE_REASONING in self.render_text([{"role": "user", "content": "hi"}, reply], None, generation=False)
        except RenderError:
            return False


# Distinctive names for probing what a template renders.
_PROBE_FUNCTION = "padprep_probe_function"
_PROBE_TOOL = "padprep_probe_tool"
_PROBE_REASONING = "PADPREP_PROBE_REASONING"
_PROBE_USER = "PADPREP_PROBE_USER"
_PROBE_TOOL_SCHEMA = {
    "type": "function",
    "function": {
        "name": _PROBE_TOOL,
        "description": "probe",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
# The end of a reply's content is checked on its own too: templates drop a leading ``<think>`` block
# written inside content from earlier replies (Qwen3), so the whole content is not in the text.
_TAIL = 64


def _at_line(exc: BaseException) -> str:
    """`` (template line N)``: the innermost line of the template that was running when ``exc`` was raised
    (jinja maps its frames to template lines); '' when no template frame is in the traceback."""
    line, tb = None, exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return f" (template line {line})" if line is not None else ""
