"""Every build option in one typed, immutable object.

The CLI fills it, the pipeline reads it, and the manifest records it (``as_manifest``), so what a
build did is always reconstructible from its output.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import Enum
from pathlib import Path


class TrainOn(str, Enum):
    """Which tokens get labels: every assistant reply, only the final one, or every token."""

    assistant = "assistant"
    last = "last"
    all = "all"


class Truncation(str, Enum):
    """What to do with a row longer than ``max_length``.

    ``drop`` is the default: a truncated SFT example that lost its answer teaches nothing.
    """

    drop = "drop"
    right = "right"
    left = "left"


class SpanMethod(str, Enum):
    """How reply spans are found: ``auto`` scans for the generation header where preflight proved it
    agrees with the template's own boundaries; ``template`` always uses the prefix renders."""

    auto = "auto"
    template = "template"


class PaddingSide(str, Enum):
    """Right padding for training, left padding for batched generation."""

    right = "right"
    left = "left"


# Options that change how a build runs but never what it writes: kept out of the manifest so that
# output is byte-identical whatever their value.
_NOT_IN_MANIFEST = frozenset({"output", "overwrite", "workers", "chunk_size"})


@dataclass(frozen=True)
class BuildConfig:
    """Options of one ``padprep build`` run."""

    inputs: tuple[Path, ...]
    tokenizer: str
    output: Path
    chat_template: str | None = None
    pad_token: str | None = None
    train_on: TrainOn = TrainOn.assistant
    span_method: SpanMethod = SpanMethod.auto
    max_length: int | None = None
    truncation: Truncation = Truncation.drop
    buckets: tuple[int, ...] | None = None
    pad_to_multiple_of: int = 1
    padding_side: PaddingSide = PaddingSide.right
    shard_tokens: int = 1 << 20
    seed: int | None = None
    overwrite: bool = False
    strict: bool = False
    workers: int = 1
    chunk_size: int = 256
    preflight_records: int = 64

    def __post_init__(self) -> None:
        if self.max_length is not None and self.max_length < 1:
            raise ValueError("--max-length must be a positive integer")
        if self.pad_to_multiple_of < 1:
            raise ValueError("--pad-to-multiple-of must be a positive integer")
        if self.buckets is not None:
            if not self.buckets or any(b < 1 for b in self.buckets):
                raise ValueError("--buckets must be positive integers, e.g. 256,512,1024")
            if list(self.buckets) != sorted(set(self.buckets)):
                raise ValueError("--buckets must be strictly increasing, e.g. 256,512,1024")
        if self.workers < 1:
            raise ValueError("--workers must be at least 1")
        if self.shard_tokens < 1:
            raise ValueError("--shard-tokens must be positive")

    def as_manifest(self) -> dict:
        """The options as plain JSON values (paths as given, enums as their names)."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in _NOT_IN_MANIFEST:
                continue
            if isinstance(value, Enum):
                value = value.value
            elif isinstance(value, Path):
                value = str(value)
            elif isinstance(value, tuple):
                value = [str(v) if isinstance(v, Path) else v for v in value]
            out[f.name] = value
        return out
