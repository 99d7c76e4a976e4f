"""Stage 5, mask: character spans to train -> ``labels`` (``input_ids`` where trained, -100 elsewhere).

Labels keep the shape of ``input_ids`` and are not shifted: the trainer shifts them. A token is
trained when its characters overlap a trained span, so a token that straddles a prompt/reply
boundary (a header newline merged with the reply's first newline) is trained: it holds text the
model must produce. Such tokens are counted so that preflight can report them.

A conversation has a handful of span boundaries and hundreds of tokens, so the tokens overlapping a
span are found from its two ends (``Encoding.char_to_token``), or by binary search where the
offsets were computed from the tokens' bytes (``encode.ByteOffsets``), not by comparing every
token's offsets. ``labels_by_offsets`` is the definition, used where a boundary character belongs to no
token (a normalizer removed it) and by the tests as the reference.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from padprep.chat.encode import Tokens
from padprep.schema import IGNORE_INDEX


@dataclass(frozen=True)
class Mask:
    labels: np.ndarray  # int32, same shape as ids
    straddling: int  # tokens that cross a span boundary (trained)
    empty_spans: int  # spans (assistant replies) that got no token at all


# ``Encoding.char_to_token`` scans the encoding: past this many (spans x tokens) the token ranges are
# found by binary search over the offsets instead (a 100,000-message conversation: seconds, not minutes).
_SCAN_BUDGET = 20_000_000


def labels_from_spans(tokens: Tokens, spans) -> Mask:
    """Labels from the tokens overlapping each span, located from the span's two ends."""
    ids, enc = tokens.ids, tokens.encoding
    if enc is None:  # offsets computed from the tokens' bytes (in order, no token empty), or joined from pieces
        return (labels_by_ranges if tokens.from_bytes else labels_by_search)(ids, tokens.offsets, spans)
    if len(spans) * len(ids) > _SCAN_BUDGET:
        return labels_by_search(ids, tokens.offsets, spans)
    labels = np.full(len(ids), IGNORE_INDEX, dtype=np.int32)
    straddling = 0
    for s, e in spans:
        found = _overlapping(enc, len(ids), s, e)
        if found is None:
            return labels_by_offsets(ids, tokens.offsets, spans)
        first, last = found
        labels[first : last + 1] = ids[first : last + 1]
        straddling += _straddling(enc, first, last, s, e)
    return Mask(labels, straddling, 0)


def weights_from_spans(tokens: Tokens, spans, weights, labels: np.ndarray) -> np.ndarray:
    """Per-token loss weights (float32): each span's weight on the tokens it trains, 0 wherever ``labels`` is -100."""
    ids, enc = tokens.ids, tokens.encoding
    out = np.zeros(len(ids), dtype=np.float32)
    for (s, e), w in zip(spans, weights):
        found = None if enc is None else _overlapping(enc, len(ids), s, e)
        if found is None:
            offsets = tokens.offsets
            out[(offsets[:, 0] < e) & (offsets[:, 1] > s)] = w
        else:
            out[found[0] : found[1] + 1] = w
    out[labels == IGNORE_INDEX] = 0.0
    return out


def _overlapping(enc, n: int, s: int, e: int) -> tuple[int, int] | None:
    """First and last token overlapping characters ``[s, e)``; None when the ends do not map to tokens."""
    if s >= e:
        return None
    first, last = enc.char_to_token(s), enc.char_to_token(e - 1)
    if first is None or last is None:
        return None
    while last + 1 < n and enc.token_to_chars(last + 1)[0] < e:  # later pieces of a split last character
        last += 1
    return first, last


def _straddling(enc, first: int, last: int, s: int, e: int) -> int:
    """Tokens in ``[first, last]`` that start before ``s`` or end after ``e``."""
    crossing = set()
    i = first
    while i <= last and enc.token_to_chars(i)[0] < s:
        crossing.add(i)
        i += 1
    i = last
    while i >= first and enc.token_to_chars(i)[1] > e:
        crossing.add(i)
        i -= 1
    return len(crossing)


def labels_by_offsets(ids: np.ndarray, offsets: np.ndarray, spans) -> Mask:
    """The definition, vectorised over every token's offsets: trained where a token overlaps a span."""
    starts, ends = offsets[:, 0], offsets[:, 1]
    trained = np.zeros(len(ids), dtype=bool)
    straddling = empty = 0
    for s, e in spans:
        inside = (starts < e) & (ends > s)
        if not inside.any():
            empty += 1
            continue
        trained |= inside
        straddling += int(np.count_nonzero(inside & ((starts < s) | (ends > e))))
    labels = np.where(trained, ids, IGNORE_INDEX).astype(np.int32, copy=False)
    return Mask(labels, straddling, empty)


def labels_by_ranges(ids: np.ndarray, offsets: np.ndarray, spans) -> Mask:
    """The definition's result where token offsets never go backwards and no token is empty (offsets from
    the tokens' bytes): the tokens overlapping a span are one run, found for every span in two searches."""
    labels = np.full(len(ids), IGNORE_INDEX, dtype=np.int32)
    if not len(spans) or not len(ids):
        return Mask(labels, 0, len(spans))
    bounds = np.asarray(spans, dtype=np.int64).reshape(-1, 2)
    starts, ends = offsets[:, 0], offsets[:, 1]
    firsts = np.searchsorted(ends, bounds[:, 0], side="right")  # first token ending after the span's start
    stops = np.searchsorted(starts, bounds[:, 1], side="left")  # one past the last token starting before its end
    straddling = empty = 0
    for (s, e), first, stop in zip(spans, firsts.tolist(), stops.tolist()):
        if first >= stop:
            empty += 1
            continue
        labels[first:stop] = ids[first:stop]
        crossing = {first} if starts[first] < s else set()
        if ends[stop - 1] > e:
            crossing.add(stop - 1)
        straddling += len(crossing)
    return Mask(labels, straddling, empty)


def labels_by_search(ids: np.ndarray, offsets: np.ndarray, spans) -> Mask:
    """The definition's result in O((tokens + spans) log tokens): each span's overlapping tokens found by
    binary search, where token offsets never go backwards (else the definition itself)."""
    starts, ends = offsets[:, 0], offsets[:, 1]
    if len(ids) > 1 and (np.any(np.diff(starts) < 0) or np.any(np.diff(ends) < 0)):
        return labels_by_offsets(ids, offsets, spans)
    trained = np.zeros(len(ids), dtype=bool)
    straddling = empty = 0
    for s, e in spans:
        first = int(np.searchsorted(ends, s, side="right"))  # first token ending after s
        last = int(np.searchsorted(starts, e, side="left"))  # one past the last token starting before e
        window_starts, window_ends = starts[first:last], ends[first:last]
        inside = (window_starts < e) & (window_ends > s)
        if not inside.any():
            empty += 1
            continue
        trained[first:last] |= inside
        straddling += int(np.count_nonzero(inside & ((window_starts < s) | (window_ends > e))))
    labels = np.where(trained, ids, IGNORE_INDEX).astype(np.int32, copy=False)
    return Mask(labels, straddling, empty)


def stop_tokens_after(tokens: Tokens, spans, labels: np.ndarray, stop_ids: frozenset[int]) -> list[tuple[int, int]]:
    """The stop signal where the template writes no end-of-turn marker: the token right after each span, where
    it is one the model stops on (``stop_ids``: eos, a role marker the template opens turns with), is trained
    (``labels`` set in place). Returns (token index, span index) of each token trained so."""
    if not stop_ids or not len(spans):
        return []
    ids, enc = tokens.ids, tokens.encoding
    n, out = len(ids), []
    starts = None
    for j, (s, e) in enumerate(spans):
        if s >= e:  # a reply the template writes nothing of: no stop either
            continue
        k = enc.char_to_token(e) if enc is not None else None
        if k is not None:
            if enc.token_to_chars(k)[0] < e:  # the token holding the span's end straddles it: the next one follows
                k += 1
        else:
            if starts is None:
                starts = tokens.offsets[:, 0]
            k = int(np.searchsorted(starts, e, side="left"))
        if k < n and int(ids[k]) in stop_ids and labels[k] == IGNORE_INDEX:
            labels[k] = ids[k]
            out.append((k, j))
    return out
