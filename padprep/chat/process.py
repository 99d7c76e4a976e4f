"""The per-chunk work of pass 1: normalize -> render -> tokenize -> mask -> truncate.

``Processor.process`` is a pure function of its chunk (same records in, same rows out), so chunks
can go to worker processes in any order and be put back in input order, and a distributed engine
could map the same function.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from padprep.chat.encode import Encoder, Tokens
from padprep.chat.mask import labels_from_spans, stop_tokens_after, weights_from_spans
from padprep.chat.pairs import FlatPairs, PairProblem, PairRow, make_pair
from padprep.chat.render import Renderer, RenderError, TemplateLimit, TooLong
from padprep.chat.templates import DEFAULT_MAX_CHARS
from padprep.chat.tokenizer import TokenizerBundle
from padprep.config import Reasoning, TrainOn, Truncation
from padprep.input.conversation import Conversation, Reject, to_conversation
from padprep.input.formats import FormatOptions, content_of
from padprep.input.pairs import to_pair
from padprep.input.records import RawRecord
from padprep.schema import IGNORE_INDEX


@dataclass(frozen=True)
class Row:
    """One unpadded training example and where it came from."""

    ids: np.ndarray  # int32
    labels: np.ndarray  # int32, -100 where not trained
    source: str
    line: int
    truncated: bool = False
    weights: np.ndarray | None = None  # float32 loss weight per token (0 where labels are -100); None: all 1
    unit: str = "line"  # what ``line`` counts (as RawRecord.unit)
    record: RawRecord | None = None  # the record, for a reject made after the row (a preference pair)


@dataclass
class ChunkStats:
    """Counts that the summary and the preflight report add up."""

    records: int = 0
    truncated: int = 0
    straddling: int = 0
    empty_replies: int = 0
    realigned: int = 0
    special_text: int = 0  # conversations whose content holds special-token text
    masked_by_flag: int = 0  # replies masked by their loss_weight 0 / train false
    trained_by_flag: int = 0  # non-reply messages trained because their flag asks
    weighted_rows: int = 0  # rows with a loss weight other than 0 and 1
    think_masked: int = 0  # think blocks masked by --reasoning
    stop_trained: int = 0  # stop tokens trained after a reply where the template writes no end-of-turn marker
    eos_appended: int = 0  # rows whose last reply had no stop token: eos appended (trained), --no-append-eos: not

    def add(self, other: "ChunkStats") -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass
class ChunkResult:
    rows: list[Row] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)  # bad records and rows dropped by policy
    stats: ChunkStats = field(default_factory=ChunkStats)

    def flat(self) -> "FlatResult":
        if self.rows and isinstance(self.rows[0], PairRow):
            return FlatResult(FlatPairs.of(self.rows), self.rejects, self.stats)
        return FlatResult(FlatRows.of(self.rows), self.rejects, self.stats)


@dataclass(frozen=True)
class FlatRows:
    """A chunk's rows as flat arrays: one pickle and one spill write each, not two numpy arrays per row."""

    ids: np.ndarray  # int32: every row's ids, one row after another
    labels: np.ndarray  # int32, likewise
    lengths: np.ndarray  # int64, one per row
    per_file: dict[str, int]  # rows per input file
    weights: np.ndarray | None = None  # float32 loss weights, likewise, when some row of the chunk has them
    per_file_tokens: dict[str, int] = field(default_factory=dict)  # tokens of those rows, per input file
    # Where each row came from: its record's line (or row, or array index: the file's unit), and its file
    # (``files[file_of[i]]``, the chunk's files in order): pass 1 spills them, pass 2 writes each shard's sources.
    lines: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    files: tuple[str, ...] = ()
    file_of: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    # The rows were written to the spill by the Ray worker that made them (``run/ray_engine.py``): only their
    # lengths and counts travel to the driver; ids, labels, weights, lines and files are left empty.
    spilled: bool = False

    @classmethod
    def of(cls, rows: list[Row]) -> "FlatRows":
        lengths = np.fromiter((len(r.ids) for r in rows), dtype=np.int64, count=len(rows))
        if not rows:
            empty = np.zeros(0, np.int32)
            return cls(empty, empty, lengths, {})
        per_file: dict[str, int] = {}
        tokens: dict[str, int] = {}
        for r in rows:
            per_file[r.source] = per_file.get(r.source, 0) + 1
            tokens[r.source] = tokens.get(r.source, 0) + len(r.ids)
        files = tuple(per_file)
        index = {f: i for i, f in enumerate(files)}
        lines = np.fromiter((r.line for r in rows), dtype=np.int64, count=len(rows))
        file_of = np.fromiter((index[r.source] for r in rows), dtype=np.int32, count=len(rows))
        labels = np.concatenate([r.labels for r in rows])
        weights = None
        if any(r.weights is not None for r in rows):  # the others weigh 1 wherever they train
            weights = np.concatenate(
                [r.weights if r.weights is not None else (r.labels != IGNORE_INDEX).astype(np.float32) for r in rows]
            )
        return cls(np.concatenate([r.ids for r in rows]), labels, lengths, per_file, weights, tokens, lines, files, file_of)


@dataclass
class FlatResult:
    """What pass 1 consumes from each chunk (``ChunkResult`` with its rows packed)."""

    rows: FlatRows | FlatPairs
    rejects: list[Reject]
    stats: ChunkStats


@dataclass
class Prepared:
    """A chunk between stages: rejects in place, chat records with their renders, raw-text records."""

    outcome: list  # per record, in input order: Row | Reject | None (not finished yet)
    chat: list = field(default_factory=list)  # (index, Conversation, RawRecord, Rendered)
    raw: list = field(default_factory=list)  # (index, Conversation, RawRecord)
    stats: ChunkStats = field(default_factory=ChunkStats)
    chat_tokens: list[Tokens] = field(default_factory=list)
    raw_tokens: list[Tokens] = field(default_factory=list)
    windows: list = field(default_factory=list)  # per chat record: the (start, end) of the render tokenized, or None


@dataclass(frozen=True)
class ProcessOptions:
    template: str | None  # None: the tokenizer has no chat template and only raw-text records are expected
    train_on: TrainOn = TrainOn.assistant
    max_length: int | None = None
    truncation: Truncation = Truncation.drop
    fast_spans: bool = True
    formats: FormatOptions = field(default_factory=FormatOptions)
    # A recipe's sources may read their files otherwise: (file, its options) pairs, over ``formats``.
    file_formats: tuple[tuple[str, FormatOptions], ...] = ()
    append_eos: bool = True  # raw-text rows (text, string prompt-completion) end with the eos token
    reasoning: Reasoning = Reasoning.train
    # Token offsets from the tokens' bytes where the tokenizer allows (encode.ByteOffsets): worth its probe
    # (0.1 s more at start) from a few MiB of input on; the rows are the same either way.
    byte_offsets: bool = True
    # Text a Unicode-normal-form normalizer leaves unchanged is encoded without it (encode.Encoder).
    skip_normalizer: bool = True
    # Long stretches between special tokens seen before are taken from a cache, not tokenized again (reuse.py).
    reuse_segments: bool = True
    # "preference": each record is a pair (input/pairs.py), made into two rows trained on their final reply
    # and split into prompt / chosen / rejected (chat/pairs.py); max_length applies to the pair.
    task: str = "sft"
    # Where max_length came from, as drop reasons name it: --max-length, or the largest bucket of --buckets.
    limit_name: str = "--max-length"


class Processor:
    """Holds what a worker needs: the tokenizer, the compiled template and the options."""

    def __init__(self, bundle: TokenizerBundle, options: ProcessOptions):
        self.tokenizer = bundle.tokenizer
        # 0.15 s on Qwen3: read once, only where it is used, and not kept
        needs_vocab = options.max_length is not None or options.byte_offsets
        vocab = self.tokenizer.get_vocab(with_added_tokens=True) if needs_vocab else {}
        # No token covers more characters than its string (a byte-level token's characters are bytes; a
        # ``▁`` or ``##`` marker only adds to it): what --max-length's early checks rest on.
        self.longest_token = max((len(token) for token in vocab), default=1)
        self.pairs = options.task == "preference"
        self.too_long, max_chars, bound = self._length_bound(options)
        if options.template is None:
            self.renderer: Renderer | _NoTemplate = _NoTemplate()
        else:
            self.renderer = Renderer(
                options.template,
                bundle.special,
                options.train_on,
                options.fast_spans,
                options.reasoning,
                max_chars,
                self.too_long,
                bound,
            )
        self.options = options
        self._file_formats = dict(options.file_formats)
        # probed now, before any fork: worker processes inherit it
        self.encoder = Encoder.probe(self.tokenizer, vocab, options.byte_offsets, options.skip_normalizer, options.reuse_segments)
        self.special_text = _special_token_pattern(self.tokenizer)
        self.bos_id = self.tokenizer.token_to_id(bundle.special["bos_token"]) if "bos_token" in bundle.special else None
        self.eos_id = self.tokenizer.token_to_id(bundle.special["eos_token"]) if "eos_token" in bundle.special else None
        self.stop_ids = self._stop_ids()

    def _stop_ids(self) -> frozenset[int]:
        """The tokens trained right after a reply where the template writes no end-of-turn marker (where it writes
        one, the reply's span ends with it): the eos token, and the first special token of what the template
        writes to open a turn after a reply (GLM-4's ``<|user|>``, ``<|observation|>``), probed; a plain-text
        role line (``### Instruction:``) is no token the model stops on."""
        renderer = self.renderer
        if isinstance(renderer, _NoTemplate) or renderer.end_marker or self.options.train_on is TrainOn.all:
            return frozenset()
        special = {t.content for t in self.tokenizer.get_added_tokens_decoder().values() if t.special and t.content}
        out = {self.eos_id} if self.eos_id is not None else set()
        for opening in renderer.turn_openings:
            for token_id in self.tokenizer.encode(opening, add_special_tokens=False).ids:
                if self.tokenizer.id_to_token(token_id) in special:
                    out.add(token_id)
                    break
        return frozenset(out)

    @property
    def stop_signal(self) -> str:
        """The stop signal rule as this build applies it, in words (the build log, the manifest)."""
        renderer = self.renderer
        if isinstance(renderer, _NoTemplate):
            return "none: no chat template"
        if renderer.end_marker:
            return f"the end-of-turn marker {renderer.end_marker!r}, trained as the last part of every reply"
        if not self.stop_ids:
            return "none: the template writes no end-of-turn marker and no token the model stops on after a reply"
        names = ", ".join(repr(self.tokenizer.id_to_token(i)) for i in sorted(self.stop_ids))
        return f"the token right after each reply where it is one the model stops on ({names}); the template writes no end-of-turn marker"

    def process(self, records: list[RawRecord]) -> ChunkResult:
        """Every record ends as one row or one reject, both kept in input order."""
        return self.finish(self.encode(self.prepare(records)))

    def process_flat(self, records: list[RawRecord]) -> FlatResult:
        return self.process(records).flat()

    def prepare(self, records: list[RawRecord]) -> Prepared:
        """Normalize and render (Python work), leaving the texts to tokenize.

        A preference chunk holds two conversations per record (chosen, rejected), one after the other."""
        items = self._pair_items(records) if self.pairs else self._items(records)
        prepared = Prepared([None] * len(items))
        prepared.stats.records = len(records)
        for k, (record, conv) in enumerate(items):
            if isinstance(conv, Reject):
                prepared.outcome[k] = conv
                continue
            if conv.is_raw_text:
                if self.too_long is not None and self.too_long(conv.text):
                    prepared.outcome[k] = self._too_long(
                        conv, record, TooLong(f"its text of {len(conv.text):,} characters", len(conv.text))
                    )
                    continue
                prepared.raw.append((k, conv, record))
                if self.special_text and self.special_text.search(conv.text):
                    prepared.stats.special_text += 1
                continue
            try:
                rendered = self.renderer.render(conv)
            except (TooLong, TemplateLimit) as exc:
                prepared.outcome[k] = self._over_limit(conv, record, exc)
                continue
            except Exception as exc:  # RenderError, or anything else a template does with hostile data
                reason = str(exc) if isinstance(exc, RenderError) else f"chat template failed: {type(exc).__name__}: {exc}"
                code = exc.code if isinstance(exc, RenderError) else "template_error"
                prepared.outcome[k] = _reject(conv, record, reason, "render", code)
                continue
            prepared.chat.append((k, conv, record, rendered))
            if self.special_text and any(self.special_text.search(content_of(m)) for m in conv.messages):
                prepared.stats.special_text += 1
        return prepared

    def _items(self, records: list[RawRecord]) -> list[tuple[RawRecord, Conversation | Reject]]:
        require_assistant = self.options.train_on is not TrainOn.all
        default, per_file = self.options.formats, self._file_formats
        return [
            (r, to_conversation(r, require_assistant=require_assistant, options=per_file.get(r.source, default))) for r in records
        ]

    def _pair_items(self, records: list[RawRecord]) -> list[tuple[RawRecord, Conversation | Reject]]:
        default, per_file = self.options.formats, self._file_formats
        items: list[tuple[RawRecord, Conversation | Reject]] = []
        for r in records:
            pair = to_pair(r, per_file.get(r.source, default))
            items += [(r, pair), (r, pair)] if isinstance(pair, Reject) else [(r, pair.chosen), (r, pair.rejected)]
        return items

    def encode(self, prepared: Prepared) -> Prepared:
        """Tokenize every text of the chunk in two batch calls; the tokenizer releases the GIL meanwhile.

        Under ``--truncation right|left`` a render far longer than any row is tokenized only over a
        window that holds the kept tokens (see ``_windows``): memory follows the row, not the record."""
        texts = [ren.text for _, _, _, ren in prepared.chat]
        windows = [self._window(text) for text in texts]
        prepared.chat_tokens = self.encoder.encode([t if w is None else t[w[0] : w[1]] for t, w in zip(texts, windows)])
        for i, w in enumerate(windows):
            if w is not None and not self._window_holds(texts[i], w, prepared.chat_tokens[i]):
                prepared.chat_tokens[i] = self.encoder.encode([texts[i]])[0]
                windows[i] = None
        prepared.windows = windows
        # raw text has no template, so the tokenizer's own special tokens apply (a BOS post-processor)
        prepared.raw_tokens = self.encoder.encode([conv.text for _, conv, _ in prepared.raw], add_special_tokens=True)
        return prepared

    def finish(self, prepared: Prepared) -> ChunkResult:
        """Mask, apply the length policy, and put rows and rejects back in input order."""
        outcome, stats = self._outcomes(prepared), prepared.stats
        if self.pairs:
            outcome = [self._pair(outcome[k], outcome[k + 1]) for k in range(0, len(outcome), 2)]
        result = ChunkResult(stats=stats)
        for row_or_reject in outcome:
            (result.rows if isinstance(row_or_reject, (Row, PairRow)) else result.rejects).append(row_or_reject)
            if isinstance(row_or_reject, (Row, PairRow)) and row_or_reject.truncated:
                stats.truncated += 1
        return result

    def _pair(self, chosen: Row | Reject, rejected: Row | Reject) -> PairRow | Reject:
        """Two side rows -> the pair (``chat/pairs.make_pair``); a side's reject is the pair's, naming the side."""
        for name, side in (("chosen", chosen), ("rejected", rejected)):
            if isinstance(side, Reject):
                same = isinstance(chosen, Reject) and isinstance(rejected, Reject) and chosen.reason == rejected.reason
                return side if same else dataclasses.replace(side, reason=f"{name}: {side.reason}")
        pair = make_pair(
            (chosen.ids, chosen.labels),
            (rejected.ids, rejected.labels),
            chosen.source,
            chosen.line,
            self.options.max_length,
            self.options.truncation,
            self.options.limit_name,
        )
        if isinstance(pair, PairProblem):
            return Reject(
                chosen.source,
                chosen.line,
                pair.reason,
                raw=chosen.record.text_of() if chosen.record is not None else None,
                stage="policy" if pair.policy else "render",
                unit=chosen.unit,
                code=pair.code,
            )
        return pair

    def _outcomes(self, prepared: Prepared) -> list:
        """Per item, in input order: its Row, or its Reject."""
        outcome, stats = prepared.outcome, prepared.stats
        for (k, conv, record, ren), tok, window in zip(prepared.chat, prepared.chat_tokens, prepared.windows):
            spans, span_weights = _in_window(ren.spans, ren.weights, window)
            mask = labels_from_spans(tok, spans)
            stops = stop_tokens_after(tok, spans, mask.labels, self.stop_ids) if self.stop_ids else ()
            stats.stop_trained += len(stops)
            stats.straddling += mask.straddling
            stats.empty_replies += mask.empty_spans
            stats.realigned += ren.realigned
            stats.masked_by_flag += ren.masked_by_flag
            stats.trained_by_flag += ren.trained_by_flag
            stats.think_masked += ren.think_masked
            weights = None if span_weights is None else weights_from_spans(tok, spans, span_weights, mask.labels)
            for k, j in stops if weights is not None else ():
                weights[k] = span_weights[j]
            stats.weighted_rows += weights is not None
            ids, labels = tok.ids, mask.labels
            if self.stop_ids and self.options.append_eos and window is None and self._ends_unstopped(ren, ids, labels):
                ids, labels = np.append(ids, self.eos_id).astype(np.int32), np.append(labels, self.eos_id).astype(np.int32)
                weights = None if weights is None else np.append(weights, span_weights[-1]).astype(np.float32)
                stats.eos_appended += 1
            outcome[k] = self._apply_limits(conv, record, ids, labels, weights)
        for (k, conv, record), tok in zip(prepared.raw, prepared.raw_tokens):
            ids, labels = self._raw_labels(conv, tok)
            outcome[k] = self._apply_limits(conv, record, ids, labels)
        return outcome

    def _ends_unstopped(self, ren, ids: np.ndarray, labels: np.ndarray) -> bool:
        """The render ends right at the end of a trained reply, with no stop token: the eos is appended after it
        (``--no-append-eos``: not), as the template writes no end-of-turn marker."""
        if self.eos_id is None or not ren.spans or not len(ids) or int(ids[-1]) in self.stop_ids:
            return False
        s, e = ren.spans[-1]
        return s < e == len(ren.text) and labels[-1] != IGNORE_INDEX

    def _window(self, text: str) -> tuple[int, int] | None:
        """The part of a long render that holds every token ``--truncation right|left`` keeps, cut at a line break.

        No token covers more than ``longest_token`` characters, so the first (last) ``max_length`` tokens lie
        within the first (last) ``max_length * longest_token`` characters; the cut, a line break beyond that
        and a margin, is where a pre-tokenizer splits. None: tokenize the whole text."""
        limit, policy = self.options.max_length, self.options.truncation
        if limit is None or policy is Truncation.drop:
            return None
        reach = limit * self.longest_token + _WINDOW_MARGIN
        if len(text) <= 2 * reach:
            return None
        if policy is Truncation.right:
            cut = text.find("\n", reach)
            return (0, cut) if cut > 0 else None
        cut = text.rfind("\n", 0, len(text) - reach)
        return (cut + 1, len(text)) if cut >= 0 else None

    def _window_holds(self, text: str, window: tuple[int, int], tokens: Tokens) -> bool:
        """The window's kept tokens equal those of a wider window (else the cut changed them: use the whole text)."""
        limit = self.options.max_length
        if len(tokens.ids) <= limit:
            return False
        if self.options.truncation is Truncation.right:
            wider = text.find("\n", window[1] + _WINDOW_MARGIN)
            other = self.encoder.encode([text[: wider if wider > 0 else window[1] + 2 * _WINDOW_MARGIN]])[0].ids
            return np.array_equal(tokens.ids[:limit], other[:limit])
        wider = text.rfind("\n", 0, max(window[0] - 1 - _WINDOW_MARGIN, 0))
        other = self.encoder.encode([text[wider + 1 if wider >= 0 else max(window[0] - 2 * _WINDOW_MARGIN, 0) :]])[0].ids
        return np.array_equal(tokens.ids[-limit:], other[-limit:])

    def _over_limit(self, conv: Conversation, record: RawRecord, exc: RenderError) -> Reject:
        """A render past a limit: the template's doing when the record is small (a template limit), else the
        record is too long."""
        small = len(record.text_of() or "") * _DATA_GROWTH < self.renderer.max_chars
        if small and (isinstance(exc, TemplateLimit) or exc.over_cap):
            reason = str(exc) if isinstance(exc, TemplateLimit) else f"chat template went past a limit: {exc}"
            return _reject(conv, record, reason, "render", "template_limit")
        return self._too_long(conv, record, exc if isinstance(exc, TooLong) else TooLong(str(exc), len(record.text_of() or "")))

    def _too_long(self, conv: Conversation, record: RawRecord, exc: TooLong) -> Reject:
        """A record longer than any row can be: dropped by --truncation drop, else a record padprep cannot hold."""
        if self.options.max_length is not None and self.options.truncation is Truncation.drop:
            reason = (
                f"longer than {self.options.limit_name} ({exc}: more than {self.options.max_length} tokens, as no token covers "
                f"more than {self.longest_token} characters) with --truncation drop"
            )
            return _reject(conv, record, reason, "policy", "too_long")
        return _reject(conv, record, f"record too large to render: {exc}", "render", "too_long")

    def _raw_labels(self, conv: Conversation, tokens: Tokens) -> tuple[np.ndarray, np.ndarray]:
        """Labels of a raw-text row: every token, or only ``spans`` (a completion); one BOS; eos appended."""
        ids = tokens.ids
        labels = ids.copy() if conv.spans is None else labels_from_spans(tokens, conv.spans).labels
        bos = self.bos_id
        if bos is not None and len(ids) > 1 and ids[0] == bos and ids[1] == bos:  # the text wrote BOS too
            ids, labels = ids[1:], labels[1:]
        eos = self.eos_id
        if self.options.append_eos and eos is not None and (len(ids) == 0 or ids[-1] != eos):
            ids = np.append(ids, eos).astype(np.int32)
            labels = np.append(labels, eos).astype(np.int32)
        return ids, labels

    def _apply_limits(
        self, conv: Conversation, record: RawRecord, ids: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None
    ):
        """Truncation policy, then the rule that a row must train at least one token (a pair's side: only the
        latter; its length policy is the pair's)."""
        limit, policy = None if self.pairs else self.options.max_length, self.options.truncation
        truncated = False
        if limit is not None and len(ids) > limit:
            if policy is Truncation.drop:
                reason = f"longer than {self.options.limit_name} ({len(ids)} > {limit} tokens) with --truncation drop"
                return _reject(conv, record, reason, "policy", "too_long")
            keep = slice(0, limit) if policy is Truncation.right else slice(len(ids) - limit, None)
            ids, labels, truncated = ids[keep], labels[keep], True
            weights = None if weights is None else weights[keep]
        if not np.any(labels != IGNORE_INDEX):
            reason = "no trained token left after truncation" if truncated else "no trained token"
            if conv.weights and not truncated:
                reason = "no trained token (every reply masked by its loss_weight / train flag)"
            return _reject(conv, record, reason, "policy", "no_trained_token")
        return Row(ids, labels, conv.source, conv.line, truncated, weights, conv.unit, record)

    def _length_bound(self, options: ProcessOptions) -> tuple[Callable[[str], bool] | None, int, int]:
        """Under ``--truncation drop``: a test for a text certainly longer than ``--max-length`` tokens, and the
        render cap that follows from it; otherwise no test and the generous fixed cap.

        No token covers more than ``longest_token`` characters of the normalized text, so a text whose
        normalized form is longer than ``max_length * longest_token`` characters has more than
        ``max_length`` tokens: it is dropped without being tokenized.
        """
        limit = options.max_length
        if limit is None or options.truncation is not Truncation.drop or options.task == "preference":
            return None, DEFAULT_MAX_CHARS, 0
        bound = limit * self.longest_token
        normalizer = self.tokenizer.normalizer

        def too_long(text: str) -> bool:
            return len(text) > bound and (normalizer is None or len(normalizer.normalize_str(text)) > bound)

        return too_long, min(DEFAULT_MAX_CHARS, max(8 * bound, 1 << 20)), bound


def _reject(conv: Conversation, record: RawRecord, reason: str, stage: str, code: str) -> Reject:
    """The record's reject at ``stage`` (render, policy), with its original text and its stable code."""
    return Reject(conv.source, conv.line, reason, raw=record.text_of(), stage=stage, unit=conv.unit, code=code)


def _in_window(spans, weights, window: tuple[int, int] | None):
    """Spans (and their weights) as seen from a window of the render: shifted, clipped, those outside dropped."""
    if window is None:
        return spans, weights
    start, end = window
    keep = [i for i, (s, e) in enumerate(spans) if min(e, end) > max(s, start)]
    shifted = tuple((max(spans[i][0], start) - start, min(spans[i][1], end) - start) for i in keep)
    return shifted, (None if weights is None else tuple(weights[i] for i in keep))


# Characters beyond the last kept token before a truncation window is cut (and between its two cuts).
_WINDOW_MARGIN = 4096

# A template writes a record's text a small number of times over: a value past the render budget on a
# record at least this fraction of the budget is the data's size, not the template's doing.
_DATA_GROWTH = 4


class _NoTemplate:
    """Stands in for the Renderer when the tokenizer has no chat template: chat records are rejected."""

    end_marker = ""
    fast_path = False

    def render(self, conv: Conversation):
        raise RenderError("the tokenizer has no chat template; pass --chat-template chatml|llama3|FILE")


def _special_token_pattern(tokenizer) -> re.Pattern | None:
    """Special tokens typed inside message content tokenize as the real thing and can forge a turn."""
    specials = [t.content for t in tokenizer.get_added_tokens_decoder().values() if t.special and t.content]
    if not specials:
        return None
    return re.compile("|".join(re.escape(s) for s in sorted(specials, key=len, reverse=True)))
