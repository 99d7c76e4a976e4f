"""Exact reuse of repeated JSON values: a long array or object that a record holds, seen before, is not parsed again.

In agent and tool-calling data every record carries one of a few tool catalogs: most of a line's
bytes are a ``tools`` value that other lines hold character for character. Parsing is a pure
function of the text, so a value whose text was parsed before is that value again. ``Repeats`` keeps,
per process, the values of the long arrays and objects it has seen twice, found at a record's top
level (``loads``) or given as a JSON string (``loads_string``: ShareGPT writes ``tools`` that way),
and hands out the one value it keeps to every record that holds its text.

The values handed out are shared by every record that holds them: padprep reads them and never
changes them (the converters copy what they change; a template cannot change anything). The
containers of a kept value are listed in ``kept_ids``, so that the chat template's ``tojson`` of one
of them is computed once (``chat/templates.py``): an id there always names that object, which the
memo keeps alive.

A value is recognized by its text: an array or object ends where its brackets balance, so a record
whose text at that position starts with a kept value's text holds exactly that value there. The
bookkeeping is per long value (a slice, a hash, a dict lookup), never per character: records
without a long value are parsed by ``json.loads`` as before, and anything this parser does not
take as valid JSON goes to ``json.loads`` too, whose error is the record's.
"""

from __future__ import annotations

import json
import re
from json.decoder import scanstring
from json.scanner import make_scanner
from typing import Any

# A value shorter than this is not worth its bookkeeping (a slice, a hash, a lookup).
MIN_CHARS = 512
# Characters of kept values per process; past it no more are kept (those kept stay).
BUDGET_CHARS = 16 << 20
# Hashes of long values seen once, kept to know a second sight; cleared when this many.
SEEN_LIMIT = 1 << 18
# Kept values are found by this many of their first characters (then compared whole).
_HEAD = 96
# Past this many long values with none seen twice, the data does not repeat: records go to json.loads
# straight away (the memo's own parsing and hashing cost 2 us a record, json.loads 4 us: docs/performance.md).
GIVE_UP_AFTER = 4096

_WS = re.compile(r"[ \t\n\r]*")  # JSON's whitespace, as json.decoder has it
_scan = make_scanner(json.JSONDecoder())  # the C scanner json.loads uses: (value, end) of the value at an index


class _NotTaken(Exception):
    """The text is not what this parser takes (not an object, or not valid JSON): ``json.loads`` decides."""


class Repeats:
    """Long JSON values seen twice, by their text, and the one value kept for each.

    Example:
        >>> memo = Repeats()
        >>> line = json.dumps({"messages": [], "tools": [{"name": "f", "description": "x" * 1200}]})
        >>> first, second = memo.loads(line), memo.loads(line)  # the second sight keeps it
        >>> memo.loads(line)["tools"] is memo.loads(line)["tools"]
        True
    """

    def __init__(self) -> None:
        self._heads: dict[str, list[tuple[str, Any]]] = {}  # first _HEAD characters -> (text, value) kept
        self._strings: dict[str, Any] = {}  # a JSON string's text -> its value, kept
        self._sightings = Sightings(SEEN_LIMIT, GIVE_UP_AFTER)
        self._chars = 0
        self.kept_ids: set[int] = set()  # ids of every container inside a kept value
        self.hits = 0

    @property
    def gave_up(self) -> bool:
        return self._sightings.gave_up

    def loads(self, text: str) -> Any:
        """``json.loads(text)`` (its value and its errors), with the long values at an object's top level reused."""
        if len(text) < 2 * MIN_CHARS or text[0] != "{" or self.gave_up:
            return json.loads(text)
        try:
            return self._object(text)
        except (_NotTaken, StopIteration, ValueError, IndexError, RecursionError):
            return json.loads(text)

    def loads_string(self, text: str) -> Any:
        """``json.loads`` of a field that holds JSON as a string (ShareGPT's ``tools``), reused when seen before."""
        if len(text) < MIN_CHARS:
            return json.loads(text)
        value = self._strings.get(text)
        if value is not None:
            self.hits += 1
            return value
        value = json.loads(text)
        if isinstance(value, (list, dict)) and self._second_sight(text):
            self._strings[text] = value
            self._keep(text, value)
        return value

    def _object(self, text: str) -> dict:
        """The object ``text`` holds, each top-level value parsed by json's own scanner or taken from the kept ones."""
        out: dict = {}
        at = _WS.match(text, 1).end()
        if text[at] == "}":
            at += 1
        else:
            while True:
                if text[at] != '"':
                    raise _NotTaken
                key, at = scanstring(text, at + 1, True)
                at = _WS.match(text, at).end()
                if text[at] != ":":
                    raise _NotTaken
                at = _WS.match(text, at + 1).end()
                out[key], at = self._value(text, at)
                at = _WS.match(text, at).end()
                if text[at] == ",":
                    at = _WS.match(text, at + 1).end()
                    continue
                if text[at] != "}":
                    raise _NotTaken
                at += 1
                break
        if _WS.match(text, at).end() != len(text):
            raise _NotTaken  # extra data after the object: json.loads says so
        return out

    def _value(self, text: str, at: int) -> tuple[Any, int]:
        opens = text[at] in "[{"
        if opens and len(text) - at >= MIN_CHARS:
            for kept, value in self._heads.get(text[at : at + _HEAD], ()):
                if text.startswith(kept, at):  # brackets balance where the kept text ends: the same value
                    self.hits += 1
                    return value, at + len(kept)
        value, end = _scan(text, at)
        if opens and end - at >= MIN_CHARS:
            piece = text[at:end]
            if self._second_sight(piece):
                self._heads.setdefault(piece[:_HEAD], []).append((piece, value))
                self._keep(piece, value)
        return value, end

    def _second_sight(self, text: str) -> bool:
        """Whether ``text`` was seen before (and there is room to keep it); a first sight is remembered."""
        if self._chars + len(text) > BUDGET_CHARS:
            return False
        return self._sightings.again(text, nothing_kept=not self._chars)

    def _keep(self, text: str, value: Any) -> None:
        self._chars += len(text)
        stack = [value]
        while stack:
            v = stack.pop()
            if isinstance(v, dict):
                self.kept_ids.add(id(v))
                stack.extend(v.values())
            elif isinstance(v, list):
                self.kept_ids.add(id(v))
                stack.extend(v)


class Sightings:
    """Hashes of long texts seen once, to know a second sight (``again``); cleared when ``limit`` many. Past
    ``give_up_after`` first sights while nothing was kept, the data does not repeat: ``gave_up`` (its owner
    then stops looking). Serves this memo and the segment cache (``chat/reuse.py``)."""

    def __init__(self, limit: int, give_up_after: int):
        self._seen: set[int] = set()
        self._limit, self._give_up_after = limit, give_up_after
        self._first_sights = 0
        self.gave_up = False

    def again(self, text: str, nothing_kept: bool) -> bool:
        """Whether ``text`` was seen before; a first sight is remembered."""
        h = hash(text)
        if h in self._seen:
            return True
        self._first_sights += 1
        if self._first_sights > self._give_up_after and nothing_kept:
            self.gave_up = True
        if len(self._seen) >= self._limit:
            self._seen.clear()
        self._seen.add(h)
        return False


# One per process: worker processes fill their own.
REPEATS = Repeats()
