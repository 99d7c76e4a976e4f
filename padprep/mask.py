"""Stage 5, mask: character spans to train -> ``labels`` (``input_ids`` where trained, -100 elsewhere).

Labels keep the shape of ``input_ids`` and are not shifted: the trainer shifts them. A token is
trained when its characters overlap a trained span, so a token that straddles a prompt/reply
boundary (a header newline merged with the reply's first newline) is trained: it holds text the
model must produce. Such tokens are counted so that preflight can report them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

IGNORE_INDEX = -100


@dataclass(frozen=True)
class Mask:
    labels: np.ndarray  # int32, same shape as ids
    straddling: int  # tokens that cross a span boundary (trained)
    empty_spans: int  # spans (assistant replies) that got no token at all


def labels_from_spans(ids: np.ndarray, offsets: np.ndarray, spans) -> Mask:
    """Vectorised over tokens; one pass per trained span."""
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
