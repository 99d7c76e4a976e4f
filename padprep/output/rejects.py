"""Reject accounting: where every record went, ``rejects.jsonl``, and the limits on bad records.

Every record read is written, rejected (a bad record: reading, conversion, render) or dropped (a valid record
dropped by policy: too long, nothing to train). Each reject carries a stable reason code
(``Reject.code``: ``invalid_json``, ``missing_field``, ``too_long``...); the manifest counts rejects
by code, with the first reason text seen for each code as its human description.

The engine does not matter here: results reach ``RejectLog.add`` in input order, whatever ran them.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, TextIO

from padprep.config import BuildConfig
from padprep.errors import BuildFailed
from padprep.input.conversation import Reject

# The reject rate is checked while the build runs only once this many records were read (a few bad
# lines early in a big file do not stop it), and always at the end.
MIN_RECORDS_FOR_RATE = 1000
# Rejects named one by one in the log; the rest are only in rejects.jsonl.
_LOGGED_REJECTS = 20


class RejectsKept(BuildFailed):
    """A build that failed because of what happened to its records.

    No output directory is left, but the rejects are copied beside it (``rejects_copy``) so the
    user can see why.
    """

    def __init__(self, message: str, rejects_copy: Path):
        super().__init__(message)
        self.rejects_copy = rejects_copy


class TooManyRejects(RejectsKept):
    """Bad records beyond --max-rejects / --max-reject-rate (or any, with --strict)."""


class EmptyOutput(RejectsKept):
    """No row to write: the inputs held no record, or every record was rejected or dropped.

    A CI step must not mistake that for success; ``--allow-empty`` writes the empty output instead.
    """


@dataclass
class Counts:
    """Where every record went: read = written + rejected + dropped, per file too.

    ``reasons`` and ``dropped_reasons`` count by reason code; ``descriptions`` holds, per code, the
    first reason text seen (its detail cut off), for people.
    """

    read: int = 0
    written: int = 0
    rejected: int = 0  # bad records (reading, conversion, render)
    dropped: int = 0  # valid records dropped by policy (too long, nothing to train)
    per_file: Counter = field(default_factory=Counter)  # rows written
    per_file_tokens: Counter = field(default_factory=Counter)  # their tokens
    per_file_rejected: Counter = field(default_factory=Counter)
    per_file_dropped: Counter = field(default_factory=Counter)
    reasons: Counter = field(default_factory=Counter)
    dropped_reasons: Counter = field(default_factory=Counter)  # the policy drops among ``reasons``
    descriptions: dict[str, str] = field(default_factory=dict)
    first_reject: str | None = None  # "file:line: reason" of the first bad record

    def file_totals(self, path: str) -> dict:
        written, rejected, dropped = self.per_file[path], self.per_file_rejected[path], self.per_file_dropped[path]
        return {"records_read": written + rejected + dropped, "rows_written": written, "rejected": rejected, "dropped": dropped}


def reject_code(reject: Reject) -> str:
    """The reject's stable code; ``unclassified`` for a reject made without one (a bug to report)."""
    return reject.code or "unclassified"


def describe_reason(reason: str) -> str:
    """A reason without its per-record detail: ``invalid JSON at byte 16: ...`` -> ``invalid JSON``."""
    return reason.split(" (")[0].split(" at byte")[0].split(": ")[0]


class RejectLog:
    """Counts every reject and appends it to ``rejects.jsonl`` as one JSON line, in the order given.

    Args:
        fh: the open ``rejects.jsonl``.
        log: where the first rejects are named (the progress log).

    Example:
        >>> with open("rejects.jsonl", "w") as fh:  # doctest: +SKIP
        ...     rejects = RejectLog(fh, print)
        ...     for r in result.rejects:
        ...         rejects.add(r)
    """

    def __init__(self, fh: TextIO, log: Callable[[str], None], counts: Counts | None = None):
        self.counts = counts if counts is not None else Counts()  # a resumed build counts on from its checkpoint
        self._fh = fh
        self._log = log

    def add(self, reject: Reject) -> None:
        counts, code = self.counts, reject_code(reject)
        if reject.stage == "policy":
            counts.dropped += 1
            counts.per_file_dropped[reject.source] += 1
            counts.dropped_reasons[code] += 1
        else:
            counts.rejected += 1
            counts.per_file_rejected[reject.source] += 1
            if counts.first_reject is None:
                counts.first_reject = reject.describe()
            if counts.rejected <= _LOGGED_REJECTS:
                self._log(f"rejected {reject.describe()}")
        counts.reasons[code] += 1
        counts.descriptions.setdefault(code, describe_reason(reject.reason))
        self._fh.write(reject_line(reject) + "\n")


def reject_line(reject: Reject) -> str:
    """The ``rejects.jsonl`` line of a reject (``code`` included); text that UTF-8 cannot encode is escaped."""
    record = {**reject.as_json(), "code": reject_code(reject)}
    line = json.dumps(record, ensure_ascii=False)
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:  # text that is not encodable (lone surrogates) is written escaped
        line = json.dumps(record, ensure_ascii=True)
    return line


def check_limits(cfg: BuildConfig, counts: Counts, final: bool) -> None:
    """Stop the build when bad records pass --strict (any), --max-rejects (a count) or --max-reject-rate.

    Records dropped by policy (too long, nothing to train) are not bad records and never count. The
    rate is checked at the end, and while running once MIN_RECORDS_FOR_RATE records were read.
    """
    bad, read = counts.rejected, counts.read
    if not bad:
        return
    copy = failed_rejects_path(cfg)
    tail = f"; nothing written; every reject is in {copy}"
    if cfg.strict:
        raise TooManyRejects(f"--strict: rejected {counts.first_reject}{tail}", copy)
    if cfg.max_rejects is not None and bad > cfg.max_rejects:
        raise TooManyRejects(
            f"{bad:,} records rejected, more than --max-rejects {cfg.max_rejects} (first: {counts.first_reject}){tail}", copy
        )
    rate = bad / read if read else 1.0
    if (final or read >= MIN_RECORDS_FOR_RATE) and rate > cfg.max_reject_rate:
        raise TooManyRejects(
            f"{bad:,} of {read:,} records rejected ({rate:.1%}), more than --max-reject-rate {cfg.max_reject_rate:g} "
            f"(first: {counts.first_reject}){tail}; raise --max-reject-rate or --max-rejects to accept them",
            copy,
        )


def check_not_empty(cfg: BuildConfig, counts: Counts, files: list[str]) -> None:
    """Fail a build that would write no row (unless ``--allow-empty``): a CI step must not take it for success."""
    if counts.written or cfg.allow_empty:
        return
    hint = "; pass --allow-empty to write an empty output anyway"
    if not counts.read:
        where = files[0] if len(files) == 1 else f"{len(files)} inputs"
        raise EmptyOutput(f"0 rows written: no records in {where} (empty input){hint}", failed_rejects_path(cfg))
    dropped = counts.dropped_reasons
    parts = [_tally(counts.reasons - dropped, counts.descriptions, "rejected"), _tally(dropped, counts.descriptions, "dropped")]
    copy = failed_rejects_path(cfg)
    raise EmptyOutput(f"0 rows written: {', '.join(p for p in parts if p)}; every record is in {copy}{hint}", copy)


def _tally(codes: Counter, descriptions: dict[str, str], kind: str) -> str:
    """``48 dropped (longer than --max-length)``, or ``3 rejected (2 × why; 1 × why)``: '' when none."""
    total = sum(codes.values())
    if not total:
        return ""
    if len(codes) == 1:
        return f"{total:,} {kind} ({descriptions[next(iter(codes))]})"
    return f"{total:,} {kind} (" + "; ".join(f"{n:,} × {descriptions[code]}" for code, n in codes.most_common()) + ")"


def failed_rejects_path(cfg: BuildConfig) -> Path:
    """Where the rejects of a build that failed on them are kept: beside the output, ``OUT.rejects.jsonl``."""
    from padprep.output.ownership import failed_rejects_path as beside_output

    return beside_output(cfg.output)


def keep_rejects(source: Path, dest: Path) -> None:
    """Copy ``rejects.jsonl`` of a failed build beside its output (best effort: the build already failed)."""
    try:
        shutil.copyfile(source, dest)
    except OSError:
        pass
