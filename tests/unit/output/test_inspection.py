"""``inspect``'s decoded rows where colour is off: the trained text is marked with [[ ]] whenever it is not green."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from padprep.output.inspection import load_stats, show_examples
from padprep.output.selection import RowSelector
from tests.conftest import SAMPLE, run_build, write_jsonl

TOK = SAMPLE / "tokenizer"


def _shown(output, monkeypatch, no_color: bool) -> str:
    if no_color:
        monkeypatch.setenv("NO_COLOR", "1")
    else:
        monkeypatch.delenv("NO_COLOR", raising=False)
    out = io.StringIO()
    show_examples(Console(file=out, force_terminal=True, width=200), output, load_stats(output), RowSelector(count=1), None)
    return out.getvalue()


def _pairs(tmp_path):
    q = [{"role": "user", "content": "What is the capital of France?"}]
    pair = {
        "prompt": q,
        "chosen": [{"role": "assistant", "content": "Paris."}],
        "rejected": [{"role": "assistant", "content": "Lyon."}],
    }
    src = write_jsonl(tmp_path / "pairs.jsonl", [pair] * 2)
    run_build([src], TOK, tmp_path / "pairs")
    return tmp_path / "pairs"


@pytest.mark.parametrize("kind", ["rows", "pairs"])
def test_no_color_on_a_terminal_marks_the_trained_text(right_dir, tmp_path, monkeypatch, kind):
    output = right_dir if kind == "rows" else _pairs(tmp_path)
    plain = _shown(output, monkeypatch, no_color=True)
    assert "[[" in plain and "]]" in plain, plain
    assert "\x1b[32m" not in plain  # no green either
    coloured = _shown(output, monkeypatch, no_color=False)
    assert "\x1b[32m" in coloured and "[[" not in coloured  # on a terminal with colour: green, no marks
