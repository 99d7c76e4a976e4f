"""Preference rows: the two sides of a pair, each made as an SFT row trained on its final reply, split
into TRL's ``prompt_ids`` / ``chosen_ids`` / ``rejected_ids``.

A side's completion is its trained tokens: from after the generation header through the end-of-turn
token (the template's whitespace after it is not part of it), with what the template writes inside
the reply (an empty think block) included, as ``--reasoning`` decides. Everything before it is the
prompt, and both sides must give the same prompt tokens: a pair whose sides render different
prompts is rejected, never written.

Pure functions of numpy arrays: nothing here renders or tokenizes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from padprep.config import Truncation
from padprep.schema import IGNORE_INDEX


@dataclass(frozen=True)
class PairRow:
    """One preference pair, unpadded, and where it came from."""

    prompt: np.ndarray  # int32
    chosen: np.ndarray
    rejected: np.ndarray
    source: str
    line: int
    truncated: bool = False  # the prompt was cut from the left to fit --max-length
    weights: None = None  # pairs carry no loss weights

    @property
    def length(self) -> int:
        """What bucketing and --max-length measure: the prompt and the longer side."""
        return len(self.prompt) + max(len(self.chosen), len(self.rejected))

    @property
    def ids(self) -> np.ndarray:
        """prompt + chosen, as a row: what preflight's token checks look at."""
        return np.concatenate([self.prompt, self.chosen])

    @property
    def labels(self) -> np.ndarray:
        return np.concatenate([np.full(len(self.prompt), IGNORE_INDEX, np.int32), self.chosen])


@dataclass(frozen=True)
class PairProblem:
    """Why two side rows make no pair: ``code`` (``schema.REJECT_CODES``), the reason, whether a policy drop."""

    code: str
    reason: str
    policy: bool = False


def split_side(ids: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(prompt, completion) of one side's row: the completion is its trained tokens, which must be one run
    (None when untrained tokens lie inside it).

    Example:
        >>> split_side(np.array([5, 6, 7, 8, 9]), np.array([-100, -100, 7, 8, -100]))
        (array([5, 6]), array([7, 8]))
    """
    trained = np.flatnonzero(labels != IGNORE_INDEX)
    start, end = int(trained[0]), int(trained[-1]) + 1
    if end - start != len(trained):
        return None
    return ids[:start], ids[start:end]


def make_pair(
    chosen: tuple[np.ndarray, np.ndarray],
    rejected: tuple[np.ndarray, np.ndarray],
    source: str,
    line: int,
    max_length: int | None,
    truncation: Truncation,
    limit_name: str = "--max-length",
) -> PairRow | PairProblem:
    """A pair from its sides' (ids, labels), or the reason there is none.

    ``--max-length`` applies to the prompt plus the longer side: ``drop`` drops the pair; ``left`` and
    ``right`` keep both completions whole and cut the prompt from the left (the end of a prompt is what
    the reply answers), dropping the pair when the completions alone do not fit. ``limit_name`` says where
    ``max_length`` came from, in the reasons.
    """
    sides = []
    for name, (ids, labels) in (("chosen", chosen), ("rejected", rejected)):
        split = split_side(ids, labels)
        if split is None:
            return PairProblem(
                "completion_gap", f"{name}: the reply's tokens are not one run (the template writes untrained text inside it)"
            )
        sides.append(split)
    (prompt, c), (other, r) = sides
    if not np.array_equal(prompt, other):
        at = _parting(prompt, other)
        return PairProblem(
            "prompt_mismatch",
            f"the two sides render different prompts (they part at prompt token {at} of {len(prompt)} / {len(other)}): "
            "the chat template writes the history differently for each reply",
        )
    if np.array_equal(c, r):
        return PairProblem("no_preference", "chosen and rejected are the same tokens (no preference to learn)", policy=True)
    longer = max(len(c), len(r))
    truncated = False
    if max_length is not None and len(prompt) + longer > max_length:
        if truncation is Truncation.drop:
            reason = f"longer than {limit_name} ({len(prompt) + longer} > {max_length} tokens: prompt and longer side) with --truncation drop"
            return PairProblem("too_long", reason, policy=True)
        if longer >= max_length:
            reason = f"its longer side alone ({longer} tokens) does not fit {limit_name} {max_length}, even with the prompt cut"
            return PairProblem("too_long", reason, policy=True)
        prompt, truncated = prompt[len(prompt) + longer - max_length :], True
    return PairRow(prompt, c, r, source, line, truncated)


def _parting(a: np.ndarray, b: np.ndarray) -> int:
    n = min(len(a), len(b))
    differ = np.flatnonzero(a[:n] != b[:n])
    return int(differ[0]) if len(differ) else n


@dataclass(frozen=True)
class FlatPairs:
    """A chunk's pairs as flat arrays (one spill write): each column's tokens one pair after another."""

    prompt: np.ndarray  # int32
    chosen: np.ndarray
    rejected: np.ndarray
    prompt_lengths: np.ndarray  # int64, one per pair
    chosen_lengths: np.ndarray
    rejected_lengths: np.ndarray
    per_file: dict[str, int]  # pairs per input file
    per_file_tokens: dict[str, int]  # their tokens (prompt + both sides)
    weights: None = None
    # Where each pair came from, as ``FlatRows`` says it: its record's line, and its file (``files[file_of[i]]``).
    lines: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    files: tuple[str, ...] = ()
    file_of: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))

    @property
    def lengths(self) -> np.ndarray:
        """Per pair, the prompt and the longer side (what bucketing measures)."""
        return self.prompt_lengths + np.maximum(self.chosen_lengths, self.rejected_lengths)

    @property
    def tokens(self) -> int:
        return int(self.prompt_lengths.sum() + self.chosen_lengths.sum() + self.rejected_lengths.sum())

    @classmethod
    def of(cls, rows: list[PairRow]) -> "FlatPairs":
        per_file: dict[str, int] = {}
        tokens: dict[str, int] = {}
        for r in rows:
            per_file[r.source] = per_file.get(r.source, 0) + 1
            tokens[r.source] = tokens.get(r.source, 0) + len(r.prompt) + len(r.chosen) + len(r.rejected)
        cols = []
        for name in ("prompt", "chosen", "rejected"):
            parts = [getattr(r, name) for r in rows]
            cols.append(np.concatenate(parts).astype(np.int32) if parts else np.zeros(0, np.int32))
            cols.append(np.fromiter((len(p) for p in parts), np.int64, len(parts)))
        files = tuple(per_file)
        index = {f: i for i, f in enumerate(files)}
        lines = np.fromiter((r.line for r in rows), np.int64, len(rows))
        file_of = np.fromiter((index[r.source] for r in rows), np.int32, len(rows))
        return cls(cols[0], cols[2], cols[4], cols[1], cols[3], cols[5], per_file, tokens, None, lines, files, file_of)
