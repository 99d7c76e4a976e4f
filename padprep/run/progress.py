"""Progress of a build: what the pipeline reports, and the rates and ETA a display shows.

The pipeline calls a ``Progress`` (which discards everything); the CLI passes a ``Throughput`` that
it draws. The share done is measured in bytes of the inputs on disk (compressed bytes for .gz and
.zst), read where the display asks for it rather than once per record.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable


class Progress:
    """What the pipeline reports as it goes; this one discards it."""

    def log(self, message: str) -> None:
        """A line worth showing now (hazards, the first rejects, detected formats)."""

    def start(self, total_bytes: int | None) -> None:
        """Pass 1 begins; the inputs hold this many bytes on disk (None: unknown, standard input)."""

    def reading(self, offset: int, tell: Callable[[], int]) -> None:
        """A new input file starts ``offset`` bytes into the inputs; ``tell()`` says how far into it reading is."""

    def advance(self, records: int, tokens: int) -> None:
        """This many more records were processed, giving this many tokens."""


@dataclass(frozen=True)
class Snapshot:
    records: int
    tokens: int
    seconds: float
    records_per_second: float
    tokens_per_second: float
    fraction: float | None  # share of the input bytes read (None: size unknown)
    eta_seconds: float | None

    def line(self) -> str:
        """One plain line, for logs."""
        done = f", {self.fraction:.0%} of input, ETA {format_duration(self.eta_seconds)}" if self.eta_seconds is not None else ""
        return (
            f"build: {self.records:,} records ({self.records_per_second:,.0f}/s), "
            f"{self.tokens:,} tokens ({self.tokens_per_second:,.0f}/s){done}"
        )


class Throughput(Progress):
    """Counts what the pipeline reports and derives rates and the time left."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._started = clock()
        self._total: int | None = None
        self._offset = 0
        self._tell: Callable[[], int] = lambda: 0
        self.records = 0
        self.tokens = 0

    def start(self, total_bytes: int | None) -> None:
        self._started = self._clock()
        self._total = total_bytes
        self.records = self.tokens = 0  # a recipe's next side is a build of its own: its counts start over

    def reading(self, offset: int, tell: Callable[[], int]) -> None:
        self._offset, self._tell = offset, tell

    def advance(self, records: int, tokens: int) -> None:
        self.records += records
        self.tokens += tokens

    def snapshot(self) -> Snapshot:
        seconds = max(self._clock() - self._started, 1e-9)
        fraction = eta = None
        if self._total:
            fraction = min(1.0, (self._offset + self._tell()) / self._total)
            if fraction > 0:
                eta = seconds * (1 - fraction) / fraction
        return Snapshot(self.records, self.tokens, seconds, self.records / seconds, self.tokens / seconds, fraction, eta)


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"
