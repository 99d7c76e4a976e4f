"""Stage 4, tokenize: rendered text -> token ids, once per conversation.

The chat template already wrote every special token it wants (BOS included), so the text is encoded
without the tokenizer's post-processor, exactly as ``apply_chat_template(tokenize=True)`` does; a
post-processor that adds BOS would otherwise give two.

A tokenizer whose normalizer is a Unicode normal form (NFC: Qwen, ...) spends about 14% of its
time normalizing (counted with callgrind on 1,500 benchmark renders), and on text already in that
form (all ASCII text, most of the rest) the normalizer changes nothing. ``Encoder`` sends such text
to a twin tokenizer that shares the model and every other part but has no normalizer: the same ids
and offsets, as a probe checks once per tokenizer and preflight again on the sample.

The mask stage needs to know which characters each token covers. Two ways to know it:

* the ``tokenizers.Encoding`` of ``encode_batch``, which maps characters to tokens;
* for a byte-level BPE tokenizer (GPT-2's byte alphabet: Qwen, Llama 3, ...), the tokens' own
  lengths: each token stands for a fixed byte string, and the tokens' bytes, end to end, are the
  text's bytes. So ``encode_batch_fast`` (no offsets: 2-7% less tokenizer time, measured in pairs
  on 6,000 conversations) gives the ids, and each token's characters follow from the running sum of its bytes
  (``ByteOffsets``). This holds only where the text reaches the model as it is: no normalizer, or
  one that leaves this text unchanged (NFC on NFC text), and no added token that strips the spaces
  beside it. Each text is checked (its tokens' bytes must add up to its own); one that fails is
  encoded the first way. ``ByteOffsets.probe`` decides once per tokenizer whether the way applies
  at all, by comparing both ways on probe texts, and preflight compares them again on the sample.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Callable

import numpy as np
from tokenizers import Encoding, Tokenizer

from padprep.chat.reuse import Segments


@dataclass(frozen=True)
class Tokens:
    """Token ids (int32) of one text, and either the encoding that maps characters to tokens or every
    token's ``[start, end)`` character offsets, shape (n, 2), computed from the tokens' bytes."""

    ids: np.ndarray
    encoding: Encoding | None = None
    char_offsets: np.ndarray | None = None
    # ``char_offsets`` came from the tokens' bytes (in order, no token empty); False: joined from pieces
    # whose offsets an ``Encoding`` gave (``reuse.py``), which may overlap within a character.
    from_bytes: bool = True

    @property
    def offsets(self) -> np.ndarray:
        """Every token's ``[start, end)`` character offsets, shape (n, 2): the complete view."""
        if self.char_offsets is not None:
            return self.char_offsets
        return np.asarray(self.encoding.offsets, dtype=np.int64).reshape(-1, 2)


def tokenize_batch(
    tokenizer: Tokenizer, texts: list[str], add_special_tokens: bool = False, byte_offsets: "ByteOffsets | None" = None
) -> list[Tokens]:
    """Encode a batch in one call (the Rust side releases the GIL and may use its own threads).

    With ``byte_offsets`` (chat renders, no special tokens added), ids come without offsets and each
    token's characters are computed from its bytes; a text where that does not hold is encoded again
    the usual way."""
    if byte_offsets is None or add_special_tokens:
        encodings = tokenizer.encode_batch(texts, add_special_tokens=add_special_tokens)
        return [Tokens(np.asarray(enc.ids, dtype=np.int32), enc) for enc in encodings]
    out: list[Tokens | None] = []
    again: list[int] = []
    for k, enc in enumerate(tokenizer.encode_batch_fast(texts, add_special_tokens=False)):
        ids = np.asarray(enc.ids, dtype=np.int32)
        offsets = byte_offsets.char_offsets(texts[k], ids)
        if offsets is None:
            again.append(k)
        out.append(None if offsets is None else Tokens(ids, char_offsets=offsets))
    if again:
        for k, tokens in zip(again, tokenize_batch(tokenizer, [texts[k] for k in again])):
            out[k] = tokens
    return out  # type: ignore[return-value]


class Encoder:
    """Texts -> ``Tokens`` for one tokenizer, by the cheapest way that gives exactly its own ids and offsets.

    Build it with ``probe``. Text the tokenizer's normalizer leaves as it is goes to ``twin`` (the same
    tokenizer without a normalizer), when there is one; offsets come from the tokens' bytes where
    ``byte_offsets`` allows. Either shortcut is None where the probe found it does not apply.

    Example:
        >>> encoder = Encoder.probe(tokenizer)
        >>> tokens = encoder.encode(["<|im_start|>user\nHi<|im_end|>\n"])
        >>> tokens[0].ids, tokens[0].offsets  # as tokenizer.encode_batch(..., add_special_tokens=False) gives them
    """

    def __init__(
        self,
        tokenizer: Tokenizer,
        twin: Tokenizer | None = None,
        unchanged: Callable[[str], bool] | None = None,
        byte_offsets: "ByteOffsets | None" = None,
        segments: Segments | None = None,
    ):
        self.tokenizer = tokenizer
        self.twin = twin  # ``tokenizer`` less its normalizer, for text the normalizer leaves unchanged
        self._unchanged = unchanged
        self.byte_offsets = byte_offsets
        self.segments = segments  # repeated long stretches between special tokens, tokenized once (reuse.py)

    @classmethod
    def probe(
        cls,
        tokenizer: Tokenizer,
        vocab: dict[str, int] | None = None,
        byte_offsets: bool = True,
        skip_normalizer: bool = True,
        reuse: bool = True,
    ) -> "Encoder":
        """The encoder for ``tokenizer``, with each shortcut its probe allows (and the caller asks for)."""
        unchanged = _normalizer_check(tokenizer)
        twin = _twin_without_normalizer(tokenizer, unchanged) if skip_normalizer else None
        table = ByteOffsets.probe(tokenizer, vocab) if byte_offsets else None
        segments = Segments.probe(tokenizer, _reuse_probe_texts(tokenizer)) if reuse else None
        return cls(tokenizer, twin, unchanged if twin is not None else None, table, segments)

    def encode(self, texts: list[str], add_special_tokens: bool = False) -> list[Tokens]:
        """Every text's tokens, in order, as ``tokenize_batch(tokenizer, texts, add_special_tokens)`` gives them;
        a long stretch between special tokens seen before is taken from ``segments`` instead of tokenized."""
        plans = None if self.segments is None or add_special_tokens else [self.segments.plan(t) for t in texts]
        if not plans or not any(plans):
            return self._encode(texts, add_special_tokens)
        jobs: list[str] = []
        layout: list = []  # per text: its job's index, or its pieces (start, job index or None: cached, stretch)
        cache = self.segments.cache
        for text, plan in zip(texts, plans):
            if plan is None:
                layout.append(len(jobs))
                jobs.append(text)
                continue
            parts = []
            for start, end, stretch in plan:
                if stretch is not None and stretch in cache:
                    parts.append((start, None, stretch))
                else:
                    parts.append((start, len(jobs), stretch))
                    jobs.append(text[start:end])
            layout.append(parts)
        tokens = self._encode(jobs, False)
        out = []
        for entry in layout:
            if isinstance(entry, int):
                out.append(tokens[entry])
                continue
            ids, offsets, from_bytes = [], [], self.byte_offsets is not None
            for start, job, stretch in entry:
                if job is None:
                    piece_ids, piece_offsets, piece_from_bytes = cache[stretch]
                    self.segments.hits += 1
                else:
                    piece = tokens[job]
                    piece_ids, piece_offsets, piece_from_bytes = piece.ids, piece.offsets, piece.encoding is None
                    if stretch is not None:
                        self.segments.keep(stretch, piece_ids, piece_offsets, piece_from_bytes)
                from_bytes = from_bytes and piece_from_bytes
                ids.append(piece_ids)
                offsets.append(piece_offsets + start)
            joined = np.concatenate(offsets)
            out.append(Tokens(np.concatenate(ids).astype(np.int32, copy=False), char_offsets=joined, from_bytes=from_bytes))
        return out

    def _encode(self, texts: list[str], add_special_tokens: bool) -> list[Tokens]:
        offsets = None if add_special_tokens else self.byte_offsets
        if self.twin is None:
            return tokenize_batch(self.tokenizer, texts, add_special_tokens, offsets)
        plain = [k for k, text in enumerate(texts) if self._unchanged(text)]
        if len(plain) == len(texts):
            return tokenize_batch(self.twin, texts, add_special_tokens, offsets)
        out: list[Tokens | None] = [None] * len(texts)
        rest = sorted(set(range(len(texts))).difference(plain))
        for tokenizer, which in ((self.twin, plain), (self.tokenizer, rest)):
            for k, tokens in zip(which, tokenize_batch(tokenizer, [texts[k] for k in which], add_special_tokens, offsets)):
                out[k] = tokens
        return out  # type: ignore[return-value]


def _reuse_probe_texts(tokenizer: Tokenizer) -> list[str]:
    """Probe texts with the tokenizer's added tokens between and inside them (where cuts must be exact)."""
    added = [t.content for _, t in sorted(tokenizer.get_added_tokens_decoder().items())[:64] if t.content]
    if not added:
        return []
    out = []
    for k, text in enumerate(_PROBE_TEXTS):
        a, b = added[k % len(added)], added[(k + 1) % len(added)]
        out.append(a + text + b + "\n" + text + " " + a + " " + text + b + b + "\n\n" + text)
    return out


def _twin_without_normalizer(tokenizer: Tokenizer, unchanged: Callable[[str], bool] | None) -> Tokenizer | None:
    """``tokenizer`` without its normalizer (sharing its model, pre-tokenizer, post-processor and added
    tokens), when the normalizer is a Unicode normal form and the twin encodes the probe texts that form
    leaves unchanged exactly as ``tokenizer`` does; else None."""
    if tokenizer.normalizer is None or unchanged is None or tokenizer.truncation or tokenizer.padding:
        return None
    twin = Tokenizer(tokenizer.model)
    twin.pre_tokenizer = tokenizer.pre_tokenizer
    twin.post_processor = tokenizer.post_processor
    twin.decoder = tokenizer.decoder
    added = tokenizer.get_added_tokens_decoder()
    for i in sorted(added):
        (twin.add_special_tokens if added[i].special else twin.add_tokens)([added[i]])
    twin.encode_special_tokens = tokenizer.encode_special_tokens
    if twin.get_added_tokens_decoder() != added or twin.get_vocab_size(True) != tokenizer.get_vocab_size(True):
        return None
    specials = "".join(tok.content for _, tok in sorted(added.items())[:64])
    texts = [t for t in (*_PROBE_TEXTS, specials + _PROBE_TEXTS[0] + specials) if unchanged(t)]
    for special in (False, True):
        for a, b in zip(
            tokenizer.encode_batch(texts, add_special_tokens=special), twin.encode_batch(texts, add_special_tokens=special)
        ):
            if a.ids != b.ids or a.offsets != b.offsets:
                return None
    return twin


def _byte_alphabet() -> dict[str, int]:
    """GPT-2's byte-level alphabet: the character that stands for each of the 256 bytes."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[chr(b)] = b
        else:
            chars[chr(256 + extra)] = b
            extra += 1
    return chars


# Texts the probe encodes both ways: ASCII, Latin, CJK, emoji (4-byte characters split across
# tokens), combining marks, whitespace runs, tabs and CRLF.
_PROBE_TEXTS = (
    "Hello, world!  How are you?\n\n\tIndented\r\nline 42: x = y ** 2",
    "Zürich, São Paulo, Kraków — naïve café; 東京と大阪で会いましょう。😀👍🏽 e\u0301 ﬁ ½",
    "   leading spaces, trailing spaces   \n\n\n",
    '{"name": "get_weather", "arguments": {"city": "Zürich"}}',
)


class ByteOffsets:
    """Each token's byte length (a table over the vocabulary), turned into character offsets per text.

    Build it with ``probe``, which returns None for a tokenizer where the tokens' bytes do not give
    the offsets (not byte-level BPE, a normalizer that rewrites text, ...).
    """

    def __init__(self, byte_lengths: np.ndarray, unchanged: Callable[[str], bool]):
        self.byte_lengths = byte_lengths  # int64, per id
        self._unchanged = unchanged  # whether the normalizer leaves a text as it is

    @classmethod
    def probe(cls, tokenizer: Tokenizer, vocab: dict[str, int] | None = None) -> "ByteOffsets | None":
        """The table for ``tokenizer`` when its tokens' bytes give exactly its own offsets on the probe
        texts and on its added tokens; else None (offsets then come from ``encode_batch``)."""
        unchanged = _normalizer_check(tokenizer)
        if unchanged is None:
            return None
        vocab = vocab if vocab is not None else tokenizer.get_vocab(with_added_tokens=True)
        alphabet = _byte_alphabet()
        added = {tok.content: i for i, tok in tokenizer.get_added_tokens_decoder().items()}
        lengths = np.zeros(max(vocab.values(), default=-1) + 1, dtype=np.int64)
        model_tokens = [t for t in vocab if t not in added]
        if not set("".join(model_tokens)) <= set(alphabet):  # not GPT-2's byte alphabet
            return None
        for token, i in vocab.items():
            lengths[i] = len(token.encode("utf-8")) if token in added else len(token)
        table = cls(lengths, unchanged)
        specials = "".join(list(added)[:64])
        texts = list(_PROBE_TEXTS) + [specials + _PROBE_TEXTS[0] + specials]
        for text, enc in zip(texts, tokenizer.encode_batch(texts, add_special_tokens=False)):
            ids = np.asarray(enc.ids, dtype=np.int32)
            mine = table.char_offsets(text, ids)
            if mine is None and not unchanged(text):  # the normalizer rewrites it: such texts take encode_batch
                continue
            if mine is None or not np.array_equal(mine, np.asarray(enc.offsets, dtype=np.int64).reshape(-1, 2)):
                return None
        return table

    def char_offsets(self, text: str, ids: np.ndarray) -> np.ndarray | None:
        """Every token's character offsets (as ``Encoding.offsets`` gives them), or None where this
        text's tokens do not add up to its bytes (the text must be encoded with offsets)."""
        if not self._unchanged(text):
            return None
        lengths = self.byte_lengths[ids]
        ends = np.cumsum(lengths)
        starts = ends - lengths
        total = int(ends[-1]) if len(ends) else 0
        if text.isascii():  # one byte, one character
            return np.stack([starts, ends], axis=1) if total == len(text) else None
        raw = text.encode("utf-8")
        if total != len(raw):
            return None
        # the byte where each character starts; a token inside a character covers all of it
        char_starts = np.flatnonzero((np.frombuffer(raw, dtype=np.uint8) & 0xC0) != 0x80)
        first = np.searchsorted(char_starts, starts, side="right") - 1
        last = np.searchsorted(char_starts, np.maximum(ends - 1, starts), side="right") - 1
        return np.stack([first, np.where(ends > starts, last + 1, first)], axis=1).astype(np.int64)


def _normalizer_check(tokenizer: Tokenizer) -> Callable[[str], bool] | None:
    """A test that the normalizer leaves a text unchanged: always (no normalizer), ``is_normalized`` for
    a Unicode normal form; None for any other normalizer (offsets then come from ``encode_batch``)."""
    normalizer = tokenizer.normalizer
    if normalizer is None:
        return lambda text: True
    form = type(normalizer).__name__
    if form in ("NFC", "NFD", "NFKC", "NFKD"):
        return lambda text: text.isascii() or unicodedata.is_normalized(form, text)
    return None
