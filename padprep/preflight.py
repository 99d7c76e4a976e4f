"""Preflight: check the tokenizer and template on the first records, before the long run.

Each hazard is a known way SFT data goes silently wrong. They are reported in the summary and the
manifest; ``--strict`` makes any of them a failure so that a CI step stops before hours of work.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .normalize import Reject, normalize
from .read import RawRecord
from .render import RenderError
from .process import ChunkResult, ChunkStats, Processor
from .tokenizer import TokenizerBundle


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
    return hazards


def stats_hazards(stats: ChunkStats) -> list[Hazard]:
    """Hazards counted while processing rows (over the preflight sample, or the whole run)."""
    out = []
    if stats.empty_replies:
        out.append(Hazard("empty_reply_mask", "assistant replies whose mask came out empty (no token trained)", stats.empty_replies))
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
    adds_bos = tok.encode("hello", add_special_tokens=True).ids[:1] == [bos_id] != tok.encode("hello", add_special_tokens=False).ids[:1]
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
        return [Hazard("end_of_turn_untrained", f"the end-of-turn token {marker!r} never gets a label: the model never learns to stop", present)]
    return []


def fast_spans_agree(processor: Processor, sample: list[RawRecord]) -> bool:
    """The header-scan fast path may be used only if it gives the template's own spans on the sample."""
    renderer = processor.renderer
    for record in sample:
        conv = normalize(record)
        if isinstance(conv, Reject):
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
            return False
    return True
