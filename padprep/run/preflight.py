"""Preflight: check the tokenizer and template on the first records, before the long run.

Each hazard is a known way SFT data goes silently wrong. They are reported in the summary and the
manifest; ``--strict`` makes any of them a failure so that a CI step stops before hours of work.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from padprep.chat.encode import tokenize_batch
from padprep.chat.process import ChunkResult, ChunkStats, Processor
from padprep.chat.render import Renderer, RenderError
from padprep.chat.tokenizer import TokenizerBundle
from padprep.config import TrainOn
from padprep.input.conversation import Conversation, to_conversation
from padprep.input.formats import reasoning_of
from padprep.input.pairs import Pair, to_pair
from padprep.input.records import RawRecord


@dataclass(frozen=True)
class Hazard:
    code: str
    message: str
    count: int = 0
    handled: bool = False  # padprep already produces correct output despite it

    def as_json(self) -> dict:
        return asdict(self)


def tokenizer_hazards(bundle: TokenizerBundle, processor: Processor, sample: ChunkResult) -> list[Hazard]:
    """Hazards visible from the tokenizer, the template and a processed sample."""
    hazards = []
    tok = processor.tokenizer
    eos = bundle.special.get("eos_token")
    if eos is not None and bundle.pad_token == eos:
        hazards.append(
            Hazard(
                "pad_is_eos",
                f"pad token is the eos token {eos!r} ({bundle.pad_origin}); padding is placed by position, so each "
                "row's real eos keeps its label (pass --pad-token to use a distinct token)",
                handled=True,
            )
        )
    hazards += _bos_hazards(bundle, tok, processor, sample)
    hazards += _end_of_turn_hazards(processor, sample)
    hazards += _stop_signal_hazards(processor, sample)
    return hazards


def _stop_signal_hazards(processor: Processor, sample: ChunkResult) -> list[Hazard]:
    """No stop signal trained at all: the template writes no end-of-turn marker, and no token the model stops on
    (eos, a role marker that opens the next turn) follows a reply or was appended after the last one."""
    renderer = processor.renderer
    if getattr(renderer, "end_marker", "") or not sample.rows or processor.options.train_on is TrainOn.all:
        return []
    if sample.stats.stop_trained or sample.stats.eos_appended:
        return []
    return [
        Hazard(
            "no_stop_signal",
            "the template writes no end-of-turn marker and no row of the sample trains a token the model stops on "
            "after a reply (no eos or role-marker token follows one): a model trained on these rows never learns "
            "to stop" + ("" if processor.options.append_eos else " (--no-append-eos is set)"),
            len(sample.rows),
        )
    ]


def stats_hazards(stats: ChunkStats) -> list[Hazard]:
    """Hazards counted while processing rows (over the preflight sample, or the whole run)."""
    out = []
    if stats.empty_replies:
        out.append(
            Hazard("empty_reply_mask", "assistant replies whose mask came out empty (no token trained)", stats.empty_replies)
        )
    if stats.straddling:
        out.append(
            Hazard(
                "boundary_merge",
                "tokens that straddle a prompt/reply boundary (trained, as they hold text the model must produce)",
                stats.straddling,
                handled=True,
            )
        )
    if stats.special_text:
        out.append(
            Hazard(
                "special_token_text",
                "conversations whose message content contains special-token text (it tokenizes as the real "
                "special token and can forge a turn)",
                stats.special_text,
            )
        )
    return out


def _bos_hazards(bundle: TokenizerBundle, tok, processor: Processor, sample: ChunkResult) -> list[Hazard]:
    bos = bundle.special.get("bos_token")
    bos_id = tok.token_to_id(bos) if bos else None
    if bos_id is None:
        return []
    adds_bos = (
        tok.encode("hello", add_special_tokens=True).ids[:1] == [bos_id] != tok.encode("hello", add_special_tokens=False).ids[:1]
    )
    rows = sample.rows
    doubled = sum(1 for r in rows if len(r.ids) > 1 and r.ids[0] == bos_id and r.ids[1] == bos_id)
    missing = sum(1 for r in rows if len(r.ids) and r.ids[0] != bos_id)
    out = []
    if doubled:
        out.append(Hazard("bos_doubled", f"rows that start with two BOS tokens {bos!r}", doubled))
    if adds_bos and missing:
        out.append(
            Hazard(
                "bos_missing",
                f"the tokenizer's post-processor adds BOS {bos!r} but the chat template does not write it: rows "
                "have no BOS (exactly as apply_chat_template gives them)",
                missing,
            )
        )
    return out


def _end_of_turn_hazards(processor: Processor, sample: ChunkResult) -> list[Hazard]:
    marker = processor.renderer.end_marker
    if not marker or not sample.rows:
        return []
    marker_id = processor.tokenizer.token_to_id(marker)
    if marker_id is None:
        return []
    trained = sum(int(np.count_nonzero(r.labels == marker_id)) for r in sample.rows)
    present = sum(int(np.count_nonzero(r.ids == marker_id)) for r in sample.rows)
    if present and not trained:
        return [
            Hazard(
                "end_of_turn_untrained",
                f"the end-of-turn token {marker!r} never gets a label: the model never learns to stop",
                present,
            )
        ]
    return []


def sample_conversations(processor: Processor, sample: list[RawRecord]) -> list[Conversation]:
    """The sample's chat records, normalized with the build's own format options (as the build will)."""
    options = processor.options
    require = options.train_on is not TrainOn.all
    if processor.pairs:  # both sides of every pair
        pairs = (to_pair(r, dict(options.file_formats).get(r.source, options.formats)) for r in sample)
        convs = (c for p in pairs if isinstance(p, Pair) for c in (p.chosen, p.rejected))
    else:
        convs = (to_conversation(r, require_assistant=require, options=options.formats) for r in sample)
    return [c for c in convs if isinstance(c, Conversation) and not c.is_raw_text]


# Preflight compares the fast path with the template's prefix renders (2 renders per reply) only on
# conversations with at most this many replies, so that its cost per record stays near a build's.
MAX_CHECKED_REPLIES = 64


@dataclass(frozen=True)
class SpanCheck:
    """The header-scan fast path against the template's own spans on the preflight sample."""

    agree: bool
    compared: int  # conversations both methods placed
    skipped: int  # records that are not chat conversations, fail to render, or the fast path declines


def fast_spans_agree(processor: Processor, convs: list[Conversation]) -> SpanCheck:
    """The header-scan fast path may be used only if it gives the template's own spans on the sample
    (its chat conversations, from ``sample_conversations``)."""
    renderer = processor.renderer
    compared = 0
    for conv in convs:
        if len(conv.assistant_indices) > MAX_CHECKED_REPLIES:  # the check renders per reply: never more than a build does
            continue
        try:
            full = renderer.render_text(conv.messages, conv.tools, generation=False)
            fast = renderer.header_spans(conv, full)
            if fast is None:
                continue
            slow, _ = renderer.template_spans(conv, full, conv.assistant_indices)
        except RenderError:
            continue
        if tuple(fast) != slow:
            return SpanCheck(False, compared + 1, len(convs) - compared - 1)
        compared += 1
    return SpanCheck(True, compared, len(convs) - compared)


def encoding_agrees(processor: Processor, convs: list[Conversation]) -> bool:
    """The processor's encoder (offsets from the tokens' bytes, the normalizer skipped on text it leaves
    unchanged) gives the tokenizer's own ids and offsets on the sample's renders (trivially true where
    it takes neither shortcut)."""
    encoder = processor.encoder
    if encoder.byte_offsets is None and encoder.twin is None and encoder.segments is None:
        return True
    texts = []
    for conv in convs:
        try:
            texts.append(processor.renderer.render_text(conv.messages, conv.tools, generation=False))
        except RenderError:
            continue
    given = tokenize_batch(processor.tokenizer, texts)
    computed = encoder.encode(texts) + encoder.encode(texts)  # the second time, repeated stretches come from the cache
    return all(np.array_equal(a.ids, b.ids) and np.array_equal(a.offsets, b.offsets) for a, b in zip(given * 2, computed))


# Message fields (and the record's ``tools``) a template may leave out of the text entirely.
_TOOL_FIELDS = ("tool_calls", "tools")


def unrendered_field_hazards(processor: Processor, convs: list[Conversation], origin: str | None) -> list[Hazard]:
    """Fields the data carries that the template never writes: their tokens are silently not in the rows.

    What the template writes is probed once with distinctive values (a tool call, a tool schema,
    a final reply's reasoning under every name templates read); a field counts when the sample
    carries it and the probe finds no trace of it.
    """
    renderer = processor.renderer
    if not isinstance(renderer, Renderer):
        return []
    carried: dict[str, int] = {}
    for conv in convs:
        fields = {"tools"} if conv.tools else set()
        for m in conv.messages:
            fields |= {k for k in _TOOL_FIELDS if m.get(k)}
            if reasoning_of(m):
                fields.add("reasoning_content")
        for f in fields:
            carried[f] = carried.get(f, 0) + 1
    dropped = {
        f: n
        for f, n in carried.items()
        if (f == "tools" and not renderer.renders_tools)
        or (f == "tool_calls" and not renderer.renders_tool_calls)
        or (f == "reasoning_content" and not renderer.renders_reasoning)
    }
    if not dropped:
        return []
    names = ", ".join(f"`{f}` ({n} records)" for f, n in sorted(dropped.items()))
    return [
        Hazard(
            "unrendered_field",
            f"the chat template ({origin or 'given'}) never writes {names} of the preflight sample: that text is not in the "
            "rows and nothing of it is trained; use a template that renders these fields (or drop them from the data)",
            max(dropped.values()),
        )
    ]
