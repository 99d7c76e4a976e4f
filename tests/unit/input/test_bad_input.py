"""Bad input loses nothing: every record ends as a row or a line of rejects.jsonl, with a human reason.

Covers the deliberately broken sample, the reject limits (--max-rejects, --max-reject-rate, --strict)
and what a failed build leaves behind, harmless quirks (BOM, CRLF, blank lines, whitespace), hostile
input (NUL bytes, lone surrogates, huge lines, deep nesting, paths in records, template syntax in
content), interruption (SIGTERM, SIGKILL) and a property-based test that corrupts records at random.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from padprep.config import BuildConfig, TrainOn, Truncation
from padprep.input import read
from padprep.input.read import InputError, read_records
from padprep.run.pipeline import BuildFailed, TooManyRejects, build
from tests.conftest import ROOT, SAMPLE, padprep_cli, run_build, unpadded_rows, write_jsonl

TOK = SAMPLE / "tokenizer"
BROKEN = SAMPLE / "formats" / "broken.jsonl"
GOOD = {"messages": [{"role": "user", "content": "Say hi."}, {"role": "assistant", "content": "Hi!"}]}

# line -> (stage, start of the reason): what the broken sample must report, and nothing else
BROKEN_EXPECTED = {
    4: ("normalize", "invalid JSON at byte 90: Expecting ',' delimiter"),
    5: ("normalize", "not valid UTF-8 at byte 46"),
    6: ("normalize", "NUL byte at byte 0"),
    7: ("normalize", "missing field `messages`"),
    8: ("normalize", "unknown role `bot` (did you mean `--role-map bot=assistant`?)"),
    9: ("normalize", "empty assistant reply"),
    10: ("normalize", "conversation ends on a user turn (nothing to train after it)"),
    11: ("normalize", "record holds a lone surrogate"),
    12: ("render", "chat template raised an error: 'dict object' has no attribute 'name'"),
    13: ("normalize", "record has the alpaca shape but its file holds messages records"),
    14: ("policy", "longer than --max-length"),
}


def file_lines(path: Path) -> dict[int, bytes]:
    """Line number -> the line's bytes without its ending (as read.py numbers them)."""
    out = {}
    for n, data in enumerate(path.read_bytes().split(b"\n"), start=1):
        out[n] = data[:-1] if data.endswith(b"\r") else data
    return out


def rejects_of(path: Path) -> list[dict]:
    # split on "\n" only: a record may hold U+0085 or U+2028, which str.splitlines() would split on
    return [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line]


# -- the broken sample -----------------------------------------------------------------------------


def test_broken_sample_accounts_for_every_record(tmp_path):
    m = run_build([BROKEN], TOK, tmp_path / "o", max_length=128, max_reject_rate=1.0, allow_empty=True)
    t = m["totals"]
    assert (t["records_read"], t["rows_written"], t["rejected"], t["dropped"]) == (14, 3, 10, 1)
    assert t["records_read"] == t["rows_written"] + t["rejected"] + t["dropped"]
    assert m["inputs"][0] | {} == {
        **m["inputs"][0],
        "format": "messages",
        "records_read": 14,
        "rows_written": 3,
        "rejected": 10,
        "dropped": 1,
    }
    rejects = rejects_of(tmp_path / "o" / "rejects.jsonl")
    assert {r["line"]: (r["stage"], r["reason"][: len(BROKEN_EXPECTED[r["line"]][1])]) for r in rejects} == BROKEN_EXPECTED
    lines = file_lines(BROKEN)
    for r in rejects:  # the original record, untouched
        assert r["file"] == str(BROKEN)
        if "record_base64" in r:
            assert base64.b64decode(r["record_base64"]) == lines[r["line"]]
        else:
            assert r["record"].encode("utf-8") == lines[r["line"]]
    assert next(r for r in rejects if r["line"] == 8)["field"] == "messages[1].role"
    # the BOM / CRLF / trailing-whitespace lines are rows, the same rows as clean copies give
    clean = [json.loads(lines[n].decode("utf-8-sig").strip()) for n in (1, 2, 15)]
    run_build([write_jsonl(tmp_path / "clean.jsonl", clean)], TOK, tmp_path / "clean")
    as_set = lambda out: sorted(ids.tolist() for ids, _ in unpadded_rows(out))  # noqa: E731
    assert as_set(tmp_path / "o") == as_set(tmp_path / "clean")
    # inspect shows where every record went
    res = padprep_cli("inspect", str(tmp_path / "o"))
    assert "records: 14 read = 3 written + 10 rejected + 1 dropped by policy" in res.stdout


@pytest.mark.slow  # over a second: out of make test-fast (under a minute)
def test_default_limits_fail_a_mostly_broken_file_and_keep_the_rejects(tmp_path):
    out = tmp_path / "o"
    res = padprep_cli("build", str(BROKEN), "--tokenizer", str(TOK), "--output", str(out))
    assert res.returncode == 1
    kept = tmp_path / "o.rejects.jsonl"
    assert "10 of 14 records rejected (71.4%), more than --max-reject-rate 0.05" in res.stderr
    assert str(kept) in res.stderr and f"{BROKEN}:4: invalid JSON" in res.stderr
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".o")]
    assert sorted(r["line"] for r in rejects_of(kept)) == [n for n in BROKEN_EXPECTED if n != 14]
    m = run_build([BROKEN], TOK, out, max_reject_rate=1.0, allow_empty=True)
    assert out.is_dir() and not kept.exists()  # the failed run's copy is gone once a build succeeds
    assert (m["totals"]["records_read"], m["totals"]["rows_written"], m["totals"]["rejected"]) == (14, 4, 10)


def test_max_rejects(tmp_path):
    run_build([BROKEN], TOK, tmp_path / "a", max_rejects=10, max_reject_rate=1.0, allow_empty=True)
    with pytest.raises(TooManyRejects, match=r"10 records rejected, more than --max-rejects 9") as err:
        run_build([BROKEN], TOK, tmp_path / "b", max_rejects=9, max_reject_rate=1.0, allow_empty=True)
    assert err.value.rejects_copy == tmp_path / "b.rejects.jsonl" and err.value.rejects_copy.is_file()
    assert not (tmp_path / "b").exists()


def test_strict_fails_on_the_first_bad_record(tmp_path):
    with pytest.raises(TooManyRejects, match=rf"--strict: rejected {BROKEN}:4: invalid JSON at byte 90"):
        run_build([BROKEN], TOK, tmp_path / "o", strict=True, pad_token="<|endoftext|>")
    assert not (tmp_path / "o").exists() and (tmp_path / "o.rejects.jsonl").is_file()


def test_a_few_bad_lines_in_a_big_file_pass_a_mostly_broken_big_file_stops_early(tmp_path):
    good = json.dumps(GOOD)
    src = tmp_path / "big.jsonl"
    src.write_text("{oops\n" * 8 + (good + "\n") * 2000)  # 8 bad lines, all at the start: 0.4%
    m = run_build([src], TOK, tmp_path / "ok")
    assert (m["totals"]["rows_written"], m["totals"]["rejected"]) == (2000, 8)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(("{oops\n" * 9 + good + "\n") * 1000)  # 90% bad, 10,000 records
    with pytest.raises(TooManyRejects, match="more than --max-reject-rate 0.05"):
        run_build([bad], TOK, tmp_path / "bad", chunk_size=256)
    kept = rejects_of(tmp_path / "bad.rejects.jsonl")
    assert 900 <= len(kept) < 2000  # stopped after about a thousand records, not at the end of the file


# -- quirks, limits and hostile input --------------------------------------------------------------


def test_quirks_are_accepted_without_complaint(tmp_path):
    good = json.dumps(GOOD).encode()
    data = b"\xef\xbb\xbf" + good + b"\r\n\r\n  \n" + good + b" \t\r\n\n" + b"\xef\xbb\xbf" + good + b"\n\t\n" + good
    src = tmp_path / "q.jsonl"
    src.write_bytes(data)
    m = run_build([src], TOK, tmp_path / "o")
    assert (m["totals"]["records_read"], m["totals"]["rows_written"], m["totals"]["rejected"]) == (4, 4, 0)
    arr = tmp_path / "q.json"
    arr.write_bytes(b"\xef\xbb\xbf \r\n[\r\n  " + good + b" ,\r\n" + good + b"\r\n]\r\n\r\n")
    m = run_build([arr], TOK, tmp_path / "a")
    assert (m["totals"]["records_read"], m["totals"]["rows_written"]) == (2, 2)


def _read_with_peak(path):
    """All records of ``path`` and the peak Python memory that reading them took."""
    tracemalloc.start()
    try:
        recs = list(read_records(str(path)))
        return recs, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_long_lines_are_rejected_without_being_read(monkeypatch, tmp_path):
    monkeypatch.setattr(read, "MAX_LINE_BYTES", 64 << 10)
    good = json.dumps(GOOD)
    huge = '{"messages": [{"role": "user", "content": "' + "x" * (24 << 20) + '"}]}'
    src = tmp_path / "long.jsonl"
    src.write_text(good + "\n" + huge + "\n" + good + "\n")
    recs, peak = _read_with_peak(src)
    assert [r.line for r in recs] == [1, 2, 3] and recs[2].text == good
    assert recs[1].text is None and recs[1].error.startswith("line longer than 65,536 bytes")
    assert recs[1].raw == huge.encode()[:1024] and recs[1].raw_is_prefix
    assert peak < 4 << 20, f"reading a 24 MiB line peaked at {peak:,} bytes"
    # the same for an element of a JSON array
    arr = tmp_path / "long.json"
    arr.write_text("[" + good + ",\n" + huge + ",\n" + good + "]")
    recs, peak = _read_with_peak(arr)
    assert [r.line for r in recs] == [0, 1, 2] and recs[2].text == good and recs[0].text == good
    assert recs[1].error.startswith("array element longer than 65,536 bytes")
    assert peak < 6 << 20, f"reading a 24 MiB array element peaked at {peak:,} bytes"
    # through a build: one reject with the reason and the record's first bytes
    m = run_build([src], TOK, tmp_path / "o", max_reject_rate=1.0, allow_empty=True)
    assert (m["totals"]["rows_written"], m["totals"]["rejected"]) == (2, 1)
    r = rejects_of(tmp_path / "o" / "rejects.jsonl")[0]
    assert r["line"] == 2 and r["record_truncated"] is True and len(r["record"]) == 1024


def test_corrupt_or_truncated_compressed_input_fails_clearly(tmp_path):
    data = gzip.compress(((json.dumps(GOOD) + "\n") * 5000).encode())
    src = tmp_path / "cut.jsonl.gz"
    src.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"cut\.jsonl\.gz: cannot read past record \d+"):
        list(read_records(str(src)))
    with pytest.raises(InputError, match="cut.jsonl.gz"):  # the CLI's usage error (exit 2)
        run_build([src], TOK, tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_json_array_bad_elements_are_single_rejects(tmp_path):
    good = json.dumps(GOOD).encode()
    src = tmp_path / "a.json"
    src.write_bytes(b"[" + good + b', {"messages": [1,}, "\xff\xfe", 42, ' + good + b", " + good[:30])
    recs = list(read_records(str(src)))
    assert [r.line for r in recs] == [0, 1, 2, 3, 4, 5]
    m = run_build([src], TOK, tmp_path / "o", max_reject_rate=1.0, allow_empty=True)
    assert (m["totals"]["records_read"], m["totals"]["rows_written"], m["totals"]["rejected"]) == (6, 2, 4)
    reasons = {r["index"]: r["reason"] for r in rejects_of(tmp_path / "o" / "rejects.jsonl")}
    assert reasons[1] == "invalid JSON at byte 16: Expecting value"
    assert reasons[2] == "not valid UTF-8 at byte 1"
    assert reasons[3] == "record must be a JSON object, got a number"
    assert reasons[5].startswith("array element is cut off by the end of the file")


@pytest.mark.slow  # over a second: out of make test-fast (under a minute)
def test_hostile_records_stay_harmless(tmp_path):
    """Paths in records are never opened (a FIFO would block forever), template syntax in content is
    text, deep nesting and huge numbers are rejects, not crashes."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    recs = [
        {
            "messages": [{"role": "user", "content": str(fifo)}, {"role": "assistant", "content": "{{ 7 * 7 }} {% raise %}"}],
            "tools": [{"$ref": f"file://{fifo}"}],
            "images": [str(fifo)],
            "file": str(fifo),
        },
        {
            "messages": [{"role": "user", "content": "Read this file."}, {"role": "assistant", "content": str(fifo)}],
            "path": str(fifo),
        },
        {
            "messages": [
                {"role": "user", "content": [{"type": "image", "image": str(fifo)}]},
                {"role": "assistant", "content": "x"},
            ]
        },
    ]
    lines = [json.dumps(r) for r in recs] + [
        "[" * 100_000 + "]" * 100_000,
        '{"text": ' + "9" * 5000 + "}",
        '{"messages": ' + "[" * 50_000 + "]" * 50_000 + "}",
    ]
    src = tmp_path / "hostile.jsonl"
    src.write_text("\n".join(lines) + "\n")
    out = tmp_path / "o"
    cmd = [
        sys.executable,
        "-m",
        "padprep",
        "build",
        str(src),
        "-t",
        str(TOK),
        "-o",
        str(out),
        "--max-reject-rate",
        "1",
        "--allow-empty",
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    totals = json.loads((out / "manifest.json").read_text())["totals"]
    assert (totals["records_read"], totals["rows_written"], totals["rejected"]) == (6, 2, 4)
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(TOK / "tokenizer.json"))
    decoded = [tok.decode(ids.tolist(), skip_special_tokens=False) for ids, _ in unpadded_rows(out)]
    assert any("{{ 7 * 7 }} {% raise %}" in d for d in decoded)  # data, never template code
    reasons = sorted(r["reason"] for r in rejects_of(out / "rejects.jsonl"))
    assert any(r.startswith("invalid JSON: nested too deeply") for r in reasons)
    assert any(r.startswith("invalid JSON: Exceeds the limit") for r in reasons)
    assert any(r.startswith("unsupported content part type `image`") for r in reasons)


def test_template_error_is_the_records_reason(tmp_path):
    template = tmp_path / "t.jinja"
    template.write_text(
        "{% for m in messages %}{% if m.role == 'system' %}{{ raise_exception('System messages are not supported.') }}"
        "{% endif %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    sys_rec = {"messages": [{"role": "system", "content": "s"}, *GOOD["messages"]]}
    src = write_jsonl(tmp_path / "in.jsonl", [GOOD, sys_rec, GOOD])
    m = run_build([src], TOK, tmp_path / "o", chat_template=str(template), max_reject_rate=1.0, allow_empty=True)
    assert (m["totals"]["rows_written"], m["totals"]["rejected"]) == (2, 1)
    r = rejects_of(tmp_path / "o" / "rejects.jsonl")[0]
    assert (r["line"], r["stage"]) == (2, "render")
    assert r["reason"] == "chat template raised an error: System messages are not supported."


def test_a_hostile_template_is_sandboxed(tmp_path):
    """A chat template is code: it runs sandboxed, and reaching for Python internals is a per-record error."""
    template = tmp_path / "evil.jinja"
    template.write_text("{{ messages.__class__.__mro__[1].__subclasses__() }}{% for m in messages %}{{ m.content }}{% endfor %}")
    src = write_jsonl(tmp_path / "in.jsonl", [GOOD, GOOD])
    m = run_build([src], TOK, tmp_path / "o", chat_template=str(template), max_reject_rate=1.0, allow_empty=True)
    assert (m["totals"]["rows_written"], m["totals"]["rejected"]) == (0, 2)
    reasons = {r["reason"] for r in rejects_of(tmp_path / "o" / "rejects.jsonl")}
    assert len(reasons) == 1 and reasons.pop().startswith("chat template raised an error")


@pytest.mark.parametrize(
    "reach",
    [
        "{{ m.content.__class__.__mro__ }}",  # an underscore attribute of a type whose other attributes were judged safe
        '{{ "{0.__class__.__mro__}".format(m.content) }}',  # str.format reaches attributes too
        "{% set seen = [] %}{{ seen.append(m.content) }}",  # a mutating method (ImmutableSandboxedEnvironment)
    ],
)
def test_the_sandbox_judges_every_access_even_after_safe_ones(tmp_path, reach):
    """Verdicts are cached per (type, attribute): a safe ``content.strip`` and ``loop.last`` must not open
    ``content.__class__``, ``format`` or ``append`` on the same types."""
    template = tmp_path / "reach.jinja"
    template.write_text(
        "{% for m in messages %}{{ m.content.strip() }}{{ loop.last }}{{ m.role.upper() }}" + reach + "{% endfor %}"
    )
    src = write_jsonl(tmp_path / "in.jsonl", [GOOD, GOOD])
    m = run_build([src], TOK, tmp_path / "o", chat_template=str(template), max_reject_rate=1.0, allow_empty=True)
    assert (m["totals"]["rows_written"], m["totals"]["rejected"]) == (0, 2)
    assert all(r["stage"] == "render" for r in rejects_of(tmp_path / "o" / "rejects.jsonl"))


# -- interruption ----------------------------------------------------------------------------------


def _big_input(path: Path, n: int = 40_000) -> Path:
    rec = json.dumps(
        {
            "messages": [
                {"role": "user", "content": "Tell me about rivers. " * 6},
                {"role": "assistant", "content": "Rivers flow to the sea. " * 10},
            ]
        }
    )
    path.write_text((rec + "\n") * n)
    return path


def _start_build(src: Path, out: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "padprep", "build", str(src), "-t", str(TOK), "-o", str(out)]
    # A job started in the background inherits SIGINT ignored (and then rightly ignores Ctrl-C); the
    # test is about what padprep does with the signal, so the build gets the default disposition.
    return subprocess.Popen(
        cmd,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def _wait_for_spill(out: Path, proc: subprocess.Popen, timeout: float = 60) -> None:
    """Until the build is mid-way: its partial output exists and rows are being spilled."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the build finished before it could be interrupted"
        spills = list(out.parent.glob(f".{out.name}.padprep-partial/spill-*.arrow"))
        if spills and spills[0].stat().st_size > 0:
            return
        time.sleep(0.05)
    raise AssertionError("the build never started spilling rows")


def _processes_mentioning(text: str, grace: float = 10.0) -> list[int]:
    """Live processes whose command line holds ``text`` (forked workers share their parent's), after a grace period."""
    if not Path("/proc").is_dir():
        return []  # not Linux: nothing to look at
    deadline = time.monotonic() + grace
    while True:
        found = []
        for entry in Path("/proc").iterdir():
            try:
                if entry.name.isdigit() and text.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL])
@pytest.mark.slow  # over a second: out of make test-fast (under a minute)
def test_interrupted_build_leaves_nothing_that_looks_complete(tmp_path, sig):
    src = _big_input(tmp_path / "big.jsonl")
    out = tmp_path / "out"
    proc = _start_build(src, out)
    _wait_for_spill(out, proc)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=60)
    assert not out.exists()
    assert _processes_mentioning(str(out)) == [], "worker processes outlived the interrupted build"
    assert (tmp_path / ".out.padprep-partial").is_dir()  # kept, hidden, for the next run to resume
    if sig == signal.SIGKILL:
        assert proc.returncode == -signal.SIGKILL
    else:
        assert proc.returncode == 130 and "interrupted; no output written (run the same command again to resume" in stderr
    src.write_text(src.read_text()[: 2000 * (len(src.read_text().splitlines()[0]) + 1)])  # a quicker re-run
    m = run_build([src], TOK, out)  # another input: it starts over, and the partial build goes
    assert out.is_dir() and sorted(p.name for p in tmp_path.iterdir()) == ["big.jsonl", "out"]
    assert m["totals"]["rows_written"] == 2000


# -- property-based ----------------------------------------------------------------------------------

_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12)
_role = st.sampled_from(["user", "assistant", "system", "tool", "bot", "human", "gpt", ""])
_content = st.one_of(
    _text, st.none(), st.integers(), st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": _text}), max_size=2)
)
_message = st.fixed_dictionaries({"role": _role, "content": _content})
_call = st.just(json.dumps({"name": "f", "arguments": {"x": 1}}))
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | _text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
    max_leaves=8,
)
_record = st.one_of(
    st.fixed_dictionaries({"messages": st.lists(_message, max_size=4)}, optional={"tools": st.just([{"name": "f"}])}),
    st.fixed_dictionaries(
        {
            "conversations": st.lists(
                st.fixed_dictionaries(
                    {
                        "from": st.sampled_from(["human", "gpt", "system", "function_call", "observation", "bot"]),
                        "value": st.one_of(_text, _call),
                    }
                ),
                max_size=4,
            )
        },
        optional={"system": _text, "tools": st.sampled_from(["[]", '[{"name": "f"}]', "oops"])},
    ),
    st.fixed_dictionaries(
        {"instruction": _text, "output": _text},
        optional={"input": _text, "system": _text, "history": st.lists(st.lists(_text, min_size=2, max_size=2), max_size=2)},
    ),
    st.fixed_dictionaries(
        {
            "prompt": st.one_of(_text, st.lists(_message, max_size=2)),
            "completion": st.one_of(_text, st.lists(_message, max_size=2)),
        }
    ),
    st.fixed_dictionaries({"text": _text}),
    _json,
)
_CORRUPTIONS = ["none", "none", "truncate", "flip", "nul", "bom", "crlf", "space", "bad_utf8", "surrogate", "garbage", "newline"]


@st.composite
def _lines(draw) -> list[bytes]:
    out = []
    for rec in draw(st.lists(_record, min_size=1, max_size=12)):
        data = json.dumps(rec, ensure_ascii=draw(st.booleans())).encode("utf-8")
        how = draw(st.sampled_from(_CORRUPTIONS))
        at = draw(st.integers(0, len(data)))
        if how == "truncate":
            data = data[:at]
        elif how == "flip" and data:
            i = min(at, len(data) - 1)
            data = data[:i] + bytes([data[i] ^ draw(st.integers(1, 255))]) + data[i + 1 :]
        elif how == "nul":
            data = data[:at] + b"\x00" + data[at:]
        elif how == "bom":
            data = b"\xef\xbb\xbf" + data
        elif how == "crlf":
            data = data + b"\r"
        elif how == "space":
            data = b" \t" + data + b"  "
        elif how == "bad_utf8":
            data = data[:at] + b"\xc3\x28\xff" + data[at:]
        elif how == "surrogate":
            data = data.replace(b'"', b'"\\udc80', 1) if b'"' in data else data
        elif how == "garbage":
            data = draw(st.binary(max_size=40))
        elif how == "newline":
            data = data[:at] + b"\n" + data[at:]
        out.append(data)
    return out


# PADPREP_FUZZ_EXAMPLES=2000 runs the property tests longer (e.g. before a release).
_EXAMPLES = int(os.environ.get("PADPREP_FUZZ_EXAMPLES", "40"))


@settings(max_examples=_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(
    lines=_lines(),
    container=st.sampled_from(["jsonl", "json"]),
    chunk_size=st.sampled_from([1, 3, 64]),
    train_on=st.sampled_from(list(TrainOn)),
    max_length=st.sampled_from([None, 24]),
    truncation=st.sampled_from(list(Truncation)),
)
@pytest.mark.slow  # over a second: out of make test-fast (under a minute)
def test_random_and_corrupted_records_never_crash_and_always_reconcile(
    lines, container, chunk_size, train_on, max_length, truncation
):
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        src = tmp / f"in.{container}"
        src.write_bytes(b"\n".join(lines) + b"\n" if container == "jsonl" else b"[" + b",\n".join(lines) + b"]")
        cfg = BuildConfig(
            inputs=(src,),
            tokenizer=str(TOK),
            output=tmp / "o",
            chunk_size=chunk_size,
            preflight_records=2,
            train_on=train_on,
            max_length=max_length,
            truncation=truncation,
            max_reject_rate=1.0,
            allow_empty=True,
        )
        m = build(cfg).manifest.to_json()
        t = m["totals"]
        assert t["records_read"] == t["rows_written"] + t["rejected"] + t["dropped"]
        assert t["rows_written"] == len(unpadded_rows(tmp / "o"))
        event("rows written" if t["rows_written"] else "no row written")
        event("some dropped by policy" if t["dropped"] else "none dropped")
        rejects = rejects_of(tmp / "o" / "rejects.jsonl")
        assert len(rejects) == t["rejected"] + t["dropped"]
        assert sum(1 for r in rejects if r["stage"] == "policy") == t["dropped"]
        assert not [r for r in rejects if r["reason"].startswith("internal error")]
        assert m["inputs"][0]["records_read"] == t["records_read"]
        if container == "jsonl":
            numbered = file_lines(src)
            records = {n: d for n, d in numbered.items() if d.strip(b" \t\r\n") not in (b"", b"\xef\xbb\xbf")}
            assert t["records_read"] == len(records)
            seen = [r["line"] for r in rejects]
            assert len(seen) == len(set(seen)) and set(seen) <= set(records)
            for r in rejects:  # the record as it was in the file
                raw = base64.b64decode(r["record_base64"]) if "record_base64" in r else r["record"].encode("utf-8")
                original = records[r["line"]]
                assert raw in (original, original.removeprefix(b"\xef\xbb\xbf"))
        # limits turn the same input into a clean failure, never a crash or a half-written output
        if t["rejected"]:
            strict = BuildConfig(inputs=(src,), tokenizer=str(TOK), output=tmp / "s", max_rejects=0, chunk_size=chunk_size)
            with pytest.raises(BuildFailed):
                build(strict)
            assert not (tmp / "s").exists() and (tmp / "s.rejects.jsonl").is_file()


@settings(max_examples=max(60, _EXAMPLES), deadline=None)
@given(values=st.lists(_json, max_size=8), chunk=st.sampled_from([1, 2, 5, 64, 1 << 20]), indent=st.sampled_from([None, 1]))
def test_json_array_reader_finds_exactly_the_elements(values, chunk, indent):
    """Whatever the chunk boundaries (inside strings, escapes, multi-byte characters), each element once."""
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "a.json"
        src.write_text(json.dumps(values, indent=indent, ensure_ascii=False), encoding="utf-8")
        old = read._CHUNK
        read._CHUNK = chunk
        try:
            recs = list(read_records(str(src)))
        finally:
            read._CHUNK = old
        assert [r.line for r in recs] == list(range(len(values)))
        assert [json.loads(r.text) for r in recs] == values


@pytest.mark.parametrize(
    "body, texts",
    [
        ("[}", ["}"]),
        ("[1}]", ["1", "}"]),
        ("[}}{]", ["}", "}", "{]"]),
        ('[1{"a":1}]', ["1", '{"a":1}']),
        ('[{"a": [1, 2}, {"b": 2}]', ['{"a": [1, 2}', '{"b": 2}']),  # a missing bracket costs one element
        ("[,,{}, ,]", ["{}"]),
    ],
)
def test_malformed_arrays_end_and_lose_nothing(tmp_path, body, texts):
    src = tmp_path / "a.json"
    src.write_text(body)
    assert [r.text for r in read_records(str(src))] == texts
