"""Stage 4, tokenize: rendered text -> token ids, once per conversation.

The chat template already wrote every special token it wants (BOS included), so the text is encoded
without the tokenizer's post-processor, exactly as ``apply_chat_template(tokenize=True)`` does; a
post-processor that adds BOS would otherwise give two.

Each row keeps its ``tokenizers.Encoding``: the mask stage asks it which token holds a given
character at the few span boundaries of a conversation, which costs far less than turning every
token's offsets into Python tuples.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tokenizers import Encoding, Tokenizer


@dataclass(frozen=True)
class Tokens:
    """Token ids (int32) of one text, and the encoding that maps characters to tokens."""

    ids: np.ndarray
    encoding: Encoding

    @property
    def offsets(self) -> np.ndarray:
        """Every token's ``[start, end)`` character offsets, shape (n, 2): the slow, complete view."""
        return np.asarray(self.encoding.offsets, dtype=np.int64).reshape(-1, 2)


def tokenize_batch(tokenizer: Tokenizer, texts: list[str], add_special_tokens: bool = False) -> list[Tokens]:
    """Encode a batch in one call (the Rust side releases the GIL and may use its own threads)."""
    encodings = tokenizer.encode_batch(texts, add_special_tokens=add_special_tokens)
    return [Tokens(np.asarray(enc.ids, dtype=np.int32), enc) for enc in encodings]
