"""The per-chunk work of pass 1: normalize -> render -> tokenize -> mask -> truncate.

``Processor.process`` is a pure function of its chunk (same records in, same rows out), so chunks
can go to worker processes in any order and be put back in input order, and a distributed engine
could map the same function.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from .config import Truncation, TrainOn
from .mask import IGNORE_INDEX, labels_from_spans
from .normalize import Conversation, Reject, normalize
from .read import RawRecord
from .render import RenderError, Renderer
from .tokenize import tokenize_batch
from .tokenizer import TokenizerBundle


@dataclass(frozen=True)
class Row:
    """One unpadded training example and where it came from."""

    ids: np.ndarray  # int32
    labels: np.ndarray  # int32, -100 where not trained
    source: str
    line: int
    truncated: bool = False


@dataclass
class ChunkStats:
    """Counts that the summary and the preflight report add up."""

    records: int = 0
    truncated: int = 0
    straddling: int = 0
    empty_replies: int = 0
    realigned: int = 0
    special_text: int = 0  # conversations whose content holds special-token text

    def add(self, other: "ChunkStats") -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass
class ChunkResult:
    rows: list[Row] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)  # bad records and rows dropped by policy
    stats: ChunkStats = field(default_factory=ChunkStats)


@dataclass(frozen=True)
class ProcessOptions:
    template: str
    train_on: TrainOn = TrainOn.assistant
    max_length: int | None = None
    truncation: Truncation = Truncation.drop
    fast_spans: bool = True


class Processor:
    """Holds what a worker needs: the tokenizer, the compiled template and the options."""

    def __init__(self, bundle: TokenizerBundle, options: ProcessOptions):
        self.tokenizer = bundle.tokenizer
        self.renderer = Renderer(options.template, bundle.special, options.train_on, options.fast_spans)
        self.options = options
        self.special_text = _special_token_pattern(self.tokenizer)

    def process(self, records: list[RawRecord]) -> ChunkResult:
        result = ChunkResult()
        result.stats.records = len(records)
        conversations, rendered = [], []
        for record in records:
            conv = normalize(record, require_assistant=self.options.train_on is not TrainOn.all)
            if isinstance(conv, Reject):
                result.rejects.append(conv)
                continue
            try:
                rendered.append(self.renderer.render(conv))
            except RenderError as exc:
                result.rejects.append(Reject(conv.source, conv.line, str(exc), raw=record.text, stage="render"))
                continue
            conversations.append((conv, record))
            if self.special_text and any(self.special_text.search(m["content"]) for m in conv.messages):
                result.stats.special_text += 1
        tokens = tokenize_batch(self.tokenizer, [r.text for r in rendered])
        for (conv, record), ren, tok in zip(conversations, rendered, tokens):
            mask = labels_from_spans(tok.ids, tok.offsets, ren.spans)
            result.stats.straddling += mask.straddling
            result.stats.empty_replies += mask.empty_spans
            result.stats.realigned += ren.realigned
            row_or_reject = self._apply_limits(conv, record, tok.ids, mask.labels)
            (result.rows if isinstance(row_or_reject, Row) else result.rejects).append(row_or_reject)
            if isinstance(row_or_reject, Row) and row_or_reject.truncated:
                result.stats.truncated += 1
        return result

    def _apply_limits(self, conv: Conversation, record: RawRecord, ids: np.ndarray, labels: np.ndarray):
        """Truncation policy, then the rule that a row must train at least one token."""
        limit, policy = self.options.max_length, self.options.truncation
        truncated = False
        if limit is not None and len(ids) > limit:
            if policy is Truncation.drop:
                reason = f"longer than --max-length ({len(ids)} > {limit} tokens) with --truncation drop"
                return Reject(conv.source, conv.line, reason, raw=record.text, stage="policy")
            keep = slice(0, limit) if policy is Truncation.right else slice(len(ids) - limit, None)
            ids, labels, truncated = ids[keep], labels[keep], True
        if not np.any(labels != IGNORE_INDEX):
            reason = "no trained token left after truncation" if truncated else "no trained token"
            return Reject(conv.source, conv.line, reason, raw=record.text, stage="policy")
        return Row(ids, labels, conv.source, conv.line, truncated)


def _special_token_pattern(tokenizer) -> re.Pattern | None:
    """Special tokens typed inside message content tokenize as the real thing and can forge a turn."""
    specials = [t.content for t in tokenizer.get_added_tokens_decoder().values() if t.special and t.content]
    if not specials:
        return None
    return re.compile("|".join(re.escape(s) for s in sorted(specials, key=len, reverse=True)))


# -- worker processes ---------------------------------------------------------------------------
# A worker builds its Processor once, in the pool initializer; this slot is per process, never shared.
_worker_processor: Processor | None = None


def init_worker(bundle: TokenizerBundle, options: ProcessOptions) -> None:
    global _worker_processor
    _worker_processor = Processor(bundle, options)


def process_in_worker(records: list[RawRecord]) -> ChunkResult:
    assert _worker_processor is not None, "init_worker was not called"
    return _worker_processor.process(records)
