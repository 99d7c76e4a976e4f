"""The draw: which records of each source go to train (how many times) and which to eval.

Per source, in this order:

1. the sample: ``count`` records (or ``fraction`` of them) drawn without replacement, seeded;
   every record when neither is given;
2. the eval split, by content: the sample's distinct conversations are ranked by a seeded hash of
   their content, and the first ``count`` (or ``fraction`` of the sample) are held out. Every record
   with a held-out content leaves train, in every source, so eval never holds a conversation that
   train holds (identical records always fall on the same side); eval holds each conversation once;
3. the weight, on train only: ``weight`` 2 keeps each record twice; a fractional part adds one copy
   of that share of the records, drawn, seeded.

All of it is a pure function of the sources' content keys, the recipe and the seed.

Example:
    >>> import numpy as np
    >>> from padprep.recipe.spec import EvalSplit, Source
    >>> keys = [np.array([1, 2, 3, 3, 4], dtype=np.uint64)]
    >>> d = draw_all(keys, [Source(("a.jsonl",), "sources[0]", weight=2.0)], EvalSplit(count=1), seed=0)[0]
    >>> int(d.train.sum()), int(d.eval.sum())
    (8, 1)
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np

from padprep.input.formats import FormatOptions
from padprep.recipe.spec import EvalSplit, RecipeError, Source

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


@dataclass(frozen=True)
class SourceDraw:
    """Per record of one source (in read order): copies in train, and whether it is in eval (0 or 1)."""

    train: np.ndarray  # int32
    eval: np.ndarray  # int32, 0 or 1
    sampled: int

    def counts(self) -> dict[str, int]:
        return {"records": len(self.train), "sampled": self.sampled, "eval": int(self.eval.sum()), "train": int(self.train.sum())}


@dataclass(frozen=True)
class Selection:
    """What one side (train or eval) of a recipe build reads: per input file, the copies of each of its
    records in read order (0: not taken), how the file's records are read, and the sources for the manifest."""

    side: str  # "train" or "eval"
    copies: dict[str, np.ndarray]
    formats: dict[str, FormatOptions]
    sources: list[dict]  # per source: "source", "files", and its draw's counts

    def of_source(self, written: dict[str, int], tokens: dict[str, int]) -> list[dict]:
        """The manifest's ``mixture.sources``: each source's counts and what was written of it."""
        out = []
        for s in self.sources:
            rows = sum(written.get(f, 0) for f in s["files"])
            out.append({**s, "rows_written": rows, "real_tokens": sum(tokens.get(f, 0) for f in s["files"])})
        return out


def content_key(text: str | None, raw: bytes | None = None) -> int:
    """A 64-bit key of a record's content: its JSON value (key order and spacing do not count), or its text.

    Example:
        >>> content_key('{"a": 1, "b": 2}') == content_key('{"b":2,"a":1}')
        True
    """
    if text is None:
        data = raw or b""
    else:
        try:
            data = json.dumps(json.loads(text), sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()
        except (ValueError, RecursionError):
            data = text.encode("utf-8", "surrogatepass")
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


def draw_all(
    keys: list[np.ndarray], sources: list[Source], evals: EvalSplit | None, seed: int, path: str = "recipe"
) -> list[SourceDraw]:
    """Every source's draw (``keys``: each source's content keys in read order); ``RecipeError`` when a
    count asks for more than there is."""
    samples = [_sample(k, s, seed, i, path) for i, (k, s) in enumerate(zip(keys, sources))]
    held: set[int] = set()
    evals_per_source = []
    for k, sample, s in zip(keys, samples, sources):
        chosen = _held_out(k[sample], evals, seed, s, path) if evals is not None else set()
        evals_per_source.append(chosen)
        held |= chosen
    draws, in_eval = [], set()
    for i, (k, sample, s, chosen) in enumerate(zip(keys, samples, sources, evals_per_source)):
        eval_ = np.zeros(len(k), np.int32)
        for j in sample:  # each held-out conversation once, in the first source (and record) that has it
            key = int(k[j])
            if key in chosen and key not in in_eval:
                eval_[j] = 1
                in_eval.add(key)
        keep = sample[~np.isin(k[sample], np.fromiter(held, np.uint64, len(held)))] if held else sample
        draws.append(SourceDraw(_weighted(len(k), keep, s.weight, seed, i), eval_, len(sample)))
    return draws


def _sample(keys: np.ndarray, source: Source, seed: int, index: int, path: str) -> np.ndarray:
    """The sampled records' positions, in read order."""
    n = len(keys)
    if source.count is not None and source.count > n:
        raise RecipeError(
            f"{path}: {source.where}.count: {source.count:,} is more than the source holds ({n:,} records in {source.name})"
        )
    k = source.count if source.count is not None else round(source.fraction * n) if source.fraction is not None else n
    if k >= n:
        return np.arange(n)
    rng = np.random.default_rng([seed, index, 1])
    return np.sort(rng.choice(n, size=k, replace=False))


def _held_out(keys: np.ndarray, evals: EvalSplit, seed: int, source: Source, path: str) -> set[int]:
    """The contents of the sample held out: the first by a seeded rank of the content (not the position)."""
    distinct = np.unique(keys)
    k = evals.count if evals.count is not None else round(evals.fraction * len(keys))
    if k and k >= len(distinct):  # nothing of the source would be left to train on
        raise RecipeError(
            f"{path}: eval: {k:,} held-out conversations is not less than the {len(distinct):,} distinct ones "
            f"of {source.where}'s sample ({len(keys):,} records in {source.name})"
        )
    with np.errstate(over="ignore"):
        salt = np.uint64(seed % (1 << 64)) * _GOLDEN  # wraps, as a hash should
    rank = _mix(distinct ^ _mix(np.array([salt], np.uint64))[0])
    return {int(x) for x in distinct[np.argsort(rank, kind="stable")[:k]]}


def _weighted(n: int, keep: np.ndarray, weight: float, seed: int, index: int) -> np.ndarray:
    """Copies per record: ``floor(weight)`` of each kept one, and one more for a drawn share ``weight % 1``."""
    times = np.zeros(n, np.int32)
    whole, part = int(weight), weight - int(weight)
    times[keep] = whole
    extra = round(part * len(keep))
    if extra:
        rng = np.random.default_rng([seed, index, 2])
        times[rng.choice(keep, size=extra, replace=False)] += 1
    return times


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer: a seeded, uniform order of 64-bit keys."""
    with np.errstate(over="ignore"):
        x = x.astype(np.uint64)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))
