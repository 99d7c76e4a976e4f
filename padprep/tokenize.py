"""Stage 4, tokenize: rendered text -> token ids and character offsets, once per conversation.

The chat template already wrote every special token it wants (BOS included), so the text is encoded
without the tokenizer's post-processor, exactly as ``apply_chat_template(tokenize=True)`` does; a
post-processor that adds BOS would otherwise give two.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tokenizers import Tokenizer


@dataclass(frozen=True)
class Tokens:
    """Token ids (int32) and each token's ``[start, end)`` character offsets into the rendered text."""

    ids: np.ndarray
    offsets: np.ndarray  # shape (n, 2)


def tokenize_batch(tokenizer: Tokenizer, texts: list[str], add_special_tokens: bool = False) -> list[Tokens]:
    """Encode a batch in one call, so the Rust side can use its own threads."""
    encodings = tokenizer.encode_batch(texts, add_special_tokens=add_special_tokens)
    out = []
    for enc in encodings:
        ids = np.asarray(enc.ids, dtype=np.int32)
        offsets = np.asarray(enc.offsets, dtype=np.int64).reshape(-1, 2)
        out.append(Tokens(ids, offsets))
    return out
