"""Exact reuse of repeated text: a long stretch between two special tokens, seen before, is not tokenized again.

In agent and tool-calling data most tokens repeat: every conversation's system turn carries one of a
few tool catalogs. ``tokenizers`` cuts a text at its added tokens before anything else (normalizer,
pre-tokenizer, model), so the text between two of them is tokenized on its own: its ids, and its
offsets shifted by where it starts, are the same in every render that holds it. ``Segments`` keeps
the tokens of such stretches (at least ``MIN_CHARS`` long, seen at least twice) per process, and
``Encoder`` (``encode.py``) tokenizes only the rest of each render, in one batch, and joins the pieces.

Only added tokens that cut exactly are used as cuts: no ``lstrip`` / ``rstrip`` (they would eat the
spaces beside them), no ``single_word``, not ``normalized``. ``probe`` checks, per tokenizer, that
joined pieces give the ids and offsets of the whole text on probe texts; preflight checks it again
on the sample's renders (``run/preflight.encoding_agrees``), and the build falls back to plain
tokenizing where either disagrees. The bookkeeping is per stretch, never per token: text with no
stretch seen before costs one regex scan and a hash per long stretch.
"""

from __future__ import annotations

import re

import numpy as np
from tokenizers import Tokenizer

from padprep.input.repeats import Sightings

# A stretch shorter than this is not worth its bookkeeping (a dict lookup, two array joins).
MIN_CHARS = 512
# Characters of cached stretches kept per process; past it the oldest go (insertion order).
BUDGET_CHARS = 32 << 20
# Hashes of stretches seen once, kept to know a second sight; cleared when this many.
SEEN_LIMIT = 1 << 20
# Past this many long stretches with none seen twice, the data does not repeat: texts are tokenized whole
# straight away, without the scan for cuts (output the same either way).
GIVE_UP_AFTER = 4096


class Segments:
    """The long stretches between cutting added tokens, and the tokens of those seen before.

    Example:
        >>> segments = Segments.probe(tokenizer)  # None where the tokenizer's added tokens do not cut exactly
        >>> segments.plan(render)  # None: nothing to reuse in this text (yet)
    """

    def __init__(self, cuts: re.Pattern):
        self.cuts = cuts
        # stretch -> (ids int32, offsets (n, 2) int64, whether the offsets came from the tokens' bytes)
        self.cache: dict[str, tuple[np.ndarray, np.ndarray, bool]] = {}
        self._chars = 0
        self._sightings = Sightings(SEEN_LIMIT, GIVE_UP_AFTER)
        self.hits = 0

    @property
    def gave_up(self) -> bool:
        return self._sightings.gave_up

    @classmethod
    def probe(cls, tokenizer: Tokenizer, texts: list[str]) -> "Segments | None":
        """The cuts for ``tokenizer`` when joined pieces give its own ids and offsets on ``texts``; else None."""
        cuts = _cutting_tokens(tokenizer)
        if not cuts:
            return None
        pattern = re.compile("|".join(re.escape(c) for c in sorted(cuts, key=len, reverse=True)))
        segments = cls(pattern)
        for text in texts:
            whole = tokenizer.encode(text, add_special_tokens=False)
            pieces = segments.pieces(text, min_chars=1)
            parts = tokenizer.encode_batch([text[s:e] for s, e in pieces], add_special_tokens=False)
            ids = [i for p in parts for i in p.ids]
            offsets = [(a + s, b + s) for (s, _), p in zip(pieces, parts) for a, b in p.offsets]
            if ids != whole.ids or offsets != [tuple(o) for o in whole.offsets]:
                return None
        return segments

    def pieces(self, text: str, min_chars: int = MIN_CHARS) -> list[tuple[int, int]]:
        """``text`` cut around its stretches of at least ``min_chars`` between cutting tokens: (start, end) pieces,
        each either such a stretch or what lies between two of them (cutting tokens included)."""
        return [(s, e) for s, e, _ in self._marked(text, min_chars)]

    def _marked(self, text: str, min_chars: int) -> list[tuple[int, int, bool]]:
        """``pieces``, each marked: True for a stretch (no cutting token inside), False for what lies between."""
        out, start, prev_end = [], 0, 0
        for m in self.cuts.finditer(text):
            s = m.start()
            if s - prev_end >= min_chars:
                if prev_end > start:
                    out.append((start, prev_end, False))
                out.append((prev_end, s, True))
                start = s
            prev_end = m.end()
        if len(text) - prev_end >= min_chars:
            if prev_end > start:
                out.append((start, prev_end, False))
            out.append((prev_end, len(text), True))
            start = len(text)
        if start < len(text):
            out.append((start, len(text), False))
        return out

    def plan(self, text: str) -> list[tuple[int, int, str | None]] | None:
        """How to tokenize ``text``: pieces (start, end, the stretch when it is to be cached or is cached), or None
        when no stretch of it has been seen before (tokenize it whole)."""
        if len(text) < MIN_CHARS or self.gave_up:
            return None
        pieces = self._marked(text, MIN_CHARS)
        if len(pieces) == 1:  # the whole text: no cutting token in it, or no stretch long enough
            return None
        plan, useful = [], False
        for s, e, is_stretch in pieces:
            stretch = text[s:e] if is_stretch else None
            if stretch is not None:
                if stretch in self.cache:
                    useful = True
                elif self._sightings.again(stretch, nothing_kept=not self.cache):  # worth tokenizing apart and keeping
                    useful = True
                else:
                    stretch = None
            plan.append((s, e, stretch))
        return plan if useful else None

    def keep(self, stretch: str, ids: np.ndarray, offsets: np.ndarray, from_bytes: bool) -> None:
        if stretch in self.cache:
            return
        self.cache[stretch] = (ids, offsets, from_bytes)
        self._chars += len(stretch)
        while self._chars > BUDGET_CHARS and self.cache:
            old = next(iter(self.cache))
            self._chars -= len(old)
            del self.cache[old]


def _cutting_tokens(tokenizer: Tokenizer) -> list[str]:
    """Added tokens that cut a text exactly: matched as written, eating nothing beside them."""
    out = []
    for tok in tokenizer.get_added_tokens_decoder().values():
        if tok.content and not (tok.lstrip or tok.rstrip or tok.single_word or tok.normalized):
            out.append(tok.content)
    return out
