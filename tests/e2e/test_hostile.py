"""Hostile templates and records cost little: bounded time and memory, and a reason for every record.

No timed assertions: each test asserts on what happened (exit code, reason, counts, peak memory of
the build process from ``wait4``), with sizes large enough that the old behaviour (23 GB and killed;
6.4 GB; still running after five minutes) would fail them visibly. A file-size-independent address
space limit keeps a regression from taking the machine down with it.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from padprep.config import SpanMethod
from tests.conftest import ROOT, SAMPLE, run_build, write_jsonl

TOK = SAMPLE / "tokenizer"
CHAT = SAMPLE / "chat.jsonl"
PLAIN = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
MIB = 1 << 20


# The build's own peak: VmHWM of its process, which starts afresh at exec (ru_maxrss would carry the
# pytest process's peak into the child). The oversized records below lie in the preflight sample,
# which the main process handles.
_MEASURED = """
import sys
from padprep.cli import app
try:
    app(sys.argv[2:], prog_name="padprep")
except SystemExit as exit:
    code = exit.code
else:
    code = 0
hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
open(sys.argv[1], "w").write(str(int(hwm.split()[1]) * 1024))
sys.exit(code)
"""


def run_limited(args: list[str], tmp_path: Path, limit_bytes: int = 6 << 30) -> tuple[subprocess.CompletedProcess, int]:
    """The CLI in a child under an address-space limit; returns the result and the peak RSS (bytes) of
    the build's main process."""

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (limit_bytes, limit_bytes))

    peak_file = tmp_path / "peak"
    res = subprocess.run(
        [sys.executable, "-c", _MEASURED, str(peak_file), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        preexec_fn=limit,
        env={**os.environ, "COLUMNS": "200"},
        timeout=300,
    )
    return res, int(peak_file.read_text()) if peak_file.exists() else 0


BOMBS = {
    "repeat": "{{ 'x' * 1000000000 }}",
    "namespace doubling": "{% set ns = namespace(s='xx') %}{% for i in range(40) %}{% set ns.s = ns.s + ns.s %}{% endfor %}",
    "macro doubling": "{% macro f(s, n) %}{% if n %}{{ f(s ~ s, n - 1) }}{% endif %}{% endmacro %}{{ f('xy', 40) }}",
    "ljust": "{{ 'x'.ljust(1000000000) }}",
    "replace": "{% set s = 'x' * 100000 %}{{ s.replace('x', s) }}",
    "center filter": "{{ 'x' | center(1000000000) }}",
    "power": "{{ 10 ** 100000000 }}",
    "output loop": "{% for i in range(100000) %}{% for j in range(100) %}{{ messages | tojson }}{% endfor %}{% endfor %}",
}


@pytest.mark.parametrize("name", list(BOMBS))
def test_a_template_that_builds_without_limit_fails_the_build_in_one_line(tmp_path, name):
    template = tmp_path / "bomb.jinja"
    template.write_text(BOMBS[name] + PLAIN)
    res, peak = run_limited(
        ["build", str(CHAT), "-t", str(TOK), "-o", str(tmp_path / "out"), "--chat-template", str(template)], tmp_path
    )
    assert res.returncode == 1, (res.stdout, res.stderr)
    assert "Traceback" not in res.stderr
    errors = [line for line in res.stderr.splitlines() if line.startswith("padprep: error:")]
    assert len(errors) == 1 and "went past a limit on the preflight sample" in errors[0], res.stderr
    assert "over the limit" in errors[0] or "limit of" in errors[0]
    assert peak < 700 * MIB, f"peak RSS {peak / MIB:.0f} MiB"
    assert not (tmp_path / "out").exists()


def test_a_template_limit_hit_by_one_record_only_rejects_that_record(tmp_path):
    """After the preflight sample, a record that makes the template blow up is one reject with the limit's name."""
    template = tmp_path / "t.jinja"
    template.write_text(
        "{% for m in messages %}{% if m.content == 'BOOM' %}{{ 'x' * 1000000000 }}{% endif %}{% endfor %}" + PLAIN
    )
    good = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}
    bad = {"messages": [{"role": "user", "content": "BOOM"}, {"role": "assistant", "content": "yo"}]}
    src = write_jsonl(tmp_path / "in.jsonl", [good] * 70 + [bad] + [good] * 10)
    m = run_build([src], TOK, tmp_path / "out", chat_template=str(template))
    assert (m["totals"]["rows_written"], m["totals"]["rejected"]) == (80, 1)
    reject = json.loads((tmp_path / "out" / "rejects.jsonl").read_text())
    assert reject["stage"] == "render" and "over the limit" in reject["reason"] and reject["line"] == 71


def _big_input(path: Path, giant_chars: int) -> Path:
    small = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    giant = {"messages": [{"role": "user", "content": "word " * (giant_chars // 5)}, {"role": "assistant", "content": "ok"}]}
    with open(path, "w") as fh:
        for rec in [small] * 20 + [giant] + [small] * 20:
            fh.write(json.dumps(rec) + "\n")
    return path


def test_a_giant_record_is_dropped_before_it_is_expensive(tmp_path, qwen_dir):
    src = _big_input(tmp_path / "big.jsonl", 50_000_000)
    res, peak = run_limited(
        ["build", str(src), "-t", str(qwen_dir), "-o", str(tmp_path / "out"), "--max-length", "4096"], tmp_path
    )
    assert res.returncode == 0, res.stderr
    m = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert (m["totals"]["rows_written"], m["totals"]["dropped"]) == (40, 1)
    reject = json.loads((tmp_path / "out" / "rejects.jsonl").read_text())
    assert reject["line"] == 21 and reject["reason"].startswith("longer than --max-length")
    assert json.loads(reject["record"])["messages"][1]["content"] == "ok"  # kept whole, as read
    assert peak < 1200 * MIB, f"peak RSS {peak / MIB:.0f} MiB (tokenizing it took 6.4 GB)"


def test_a_conversation_of_100000_messages_is_dropped_without_quadratic_work(tmp_path, qwen_dir):
    msgs = []
    for i in range(50_000):
        msgs += [{"role": "user", "content": f"question {i}"}, {"role": "assistant", "content": f"answer {i}"}]
    small = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    src = write_jsonl(tmp_path / "many.jsonl", [small, {"messages": msgs}, small])
    res, peak = run_limited(
        ["build", str(src), "-t", str(qwen_dir), "-o", str(tmp_path / "out"), "--max-length", "4096"], tmp_path
    )
    assert res.returncode == 0, res.stderr
    m = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert (m["totals"]["rows_written"], m["totals"]["dropped"]) == (2, 1)
    reject = json.loads((tmp_path / "out" / "rejects.jsonl").read_text())
    assert reject["line"] == 2 and reject["reason"].startswith("longer than --max-length")


def test_too_many_replies_for_the_template_path_is_a_reject_with_the_limit(tmp_path):
    from padprep.chat.render import MAX_TEMPLATE_REPLIES

    msgs = []
    for i in range(MAX_TEMPLATE_REPLIES + 1):
        msgs += [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]
    small = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    src = write_jsonl(tmp_path / "many.jsonl", [small, {"messages": msgs}])
    m = run_build([src], TOK, tmp_path / "out", span_method=SpanMethod.template, max_reject_rate=1.0)
    assert m["totals"]["rejected"] == 1
    reject = json.loads((tmp_path / "out" / "rejects.jsonl").read_text())
    assert f"the limit is {MAX_TEMPLATE_REPLIES}" in reject["reason"]
    # the header fast path finds the same conversation's spans in linear time
    m = run_build([src], TOK, tmp_path / "fast")
    assert m["totals"]["rows_written"] == 2


def test_masks_of_huge_conversations_equal_the_definition():
    """The binary-search masking used past the scan budget gives the definition's labels and counts."""
    import numpy as np

    from padprep.chat.mask import labels_by_offsets, labels_by_search

    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 6, size=5000)
    ends = np.cumsum(lengths)
    starts = ends - lengths
    starts[100] = starts[99]  # two tokens on one character (a split multi-byte character)
    ends[99] = ends[100]
    offsets = np.stack([starts, ends], axis=1)
    ids = rng.integers(0, 1000, size=5000).astype(np.int32)
    cuts = np.sort(rng.choice(int(ends[-1]), size=400, replace=False))
    spans = [(int(a), int(b)) for a, b in zip(cuts[::2], cuts[1::2])] + [(7, 7)]
    fast, ref = labels_by_search(ids, offsets, spans), labels_by_offsets(ids, offsets, spans)
    assert fast.labels.tolist() == ref.labels.tolist()
    assert (fast.straddling, fast.empty_spans) == (ref.straddling, ref.empty_spans)


@pytest.mark.parametrize("policy", ["right", "left"])
def test_truncation_tokenizes_a_window_not_the_record_and_gives_the_same_row(tmp_path, monkeypatch, policy):
    """Under --truncation right|left a long render is tokenized over a window that holds the kept tokens:
    the row is byte for byte what tokenizing the whole render gives."""
    from padprep.chat.process import Processor
    from padprep.config import Truncation

    answer = "\n".join(f"line {i}: the answer goes on, {i * 7} words in." for i in range(6000))
    recs = [
        {"messages": [{"role": "user", "content": "Tell me everything."}, {"role": "assistant", "content": answer}]},
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]},
    ]
    src = write_jsonl(tmp_path / "long.jsonl", recs)
    seen = []
    original = Processor._window
    monkeypatch.setattr(Processor, "_window", lambda self, text: seen.append(original(self, text)) or seen[-1])
    m = run_build([src], TOK, tmp_path / "window", max_length=256, truncation=Truncation(policy), workers=1)
    assert m["totals"]["truncated"] == 1 and any(w is not None for w in seen)  # the long render was windowed
    window = [w for w in seen if w is not None][0]
    assert window[1] - window[0] < len(answer) / 5
    monkeypatch.setattr(Processor, "_window", lambda self, text: None)
    run_build([src], TOK, tmp_path / "whole", max_length=256, truncation=Truncation(policy), workers=1)
    from tests.conftest import tree_bytes

    assert tree_bytes(tmp_path / "window") == tree_bytes(tmp_path / "whole")


# A Hermes-style tool template: tool parameters written as Python types by a macro that calls itself on
# an array's ``items``, falling back to the array itself where ``items`` is missing (so it never ends).
RECURSING = (
    """{%- macro py_type(spec) -%}
{%- if spec.type == "array" -%}list[{{ py_type(spec.get("items", spec)) }}]
{%- elif spec.type == "object" -%}dict
{%- else -%}{{ spec.type }}{%- endif -%}
{%- endmacro -%}
{%- if tools %}<|im_start|>system
{% for t in tools %}{{ t.function.name }}({% for k, v in t.function.parameters.properties.items() %}{{ k }}: {{ py_type(v) }}{% endfor %})
{% endfor %}<|im_end|>
{% endif %}"""
    + PLAIN
)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_template_that_recurses_on_some_records_rejects_exactly_those(tmp_path, workers):
    """RecursionError on 3 of 90 records (two in the preflight sample, one after it): 3 rejects with the
    template's line, one line each, no traceback; the other 87 are written."""
    template = tmp_path / "hermes.jinja"
    template.write_text(RECURSING)
    bad_lines = {6, 18, 80}
    records = []
    for n in range(1, 91):
        prop = {"type": "array"} if n in bad_lines else {"type": "array", "items": {"type": "string"}}
        tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {"x": prop}}}}]
        records.append(
            {"messages": [{"role": "user", "content": f"q{n}"}, {"role": "assistant", "content": f"a{n}"}], "tools": tools}
        )
    src = write_jsonl(tmp_path / "in.jsonl", records)
    res, _ = run_limited(
        [
            "build",
            str(src),
            "-t",
            str(TOK),
            "-o",
            str(tmp_path / "out"),
            "--chat-template",
            str(template),
            "--max-reject-rate",
            "0.1",
            "--workers",
            workers,
        ],
        tmp_path,
    )
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr and "RecursionError" not in res.stderr
    said = [line for line in res.stderr.splitlines() if line.startswith("rejected ")]
    assert len(said) == 3 and all("recursed past Python's limit" in line and "(template line 2)" in line for line in said)
    rejects = [json.loads(line) for line in (tmp_path / "out" / "rejects.jsonl").read_text().splitlines()]
    assert {r["line"] for r in rejects} == bad_lines and {r["stage"] for r in rejects} == {"render"}
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["totals"]["rows_written"] == 87 and manifest["totals"]["reasons"] == {"template_error": 3}
