"""Inputs made for the tests."""

from __future__ import annotations

import json

from tests.conftest import SAMPLE

CHAT = SAMPLE / "chat.jsonl"


def mixed_input(tmp_path):
    """The sample chat, some bad lines and an over-long record, so rows, rejects and drops interleave."""
    lines = CHAT.read_text(encoding="utf-8").splitlines()
    long = json.dumps({"messages": [{"role": "user", "content": "go"}, {"role": "assistant", "content": "word " * 400}]})
    mixed = []
    for i, line in enumerate(lines):
        mixed.append(line)
        if i % 7 == 3:
            mixed.append('{"messages": [{"role": "user", "content": "unterminated')
        if i % 11 == 5:
            mixed.append(long)
    path = tmp_path / "mixed.jsonl"
    path.write_text("\n".join(mixed) + "\n", encoding="utf-8")
    return path
