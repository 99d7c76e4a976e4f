"""Outcomes a CI step must not mistake for success, directory inputs, and every user-caused error as one line.

Each failure is checked the way a CI log shows it: the exit code, exactly one ``padprep: error:``
line, no Python traceback, and nothing left behind that looks like a finished output.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, SAMPLE, padprep_cli, write_jsonl

TOK = str(SAMPLE / "tokenizer")
CHAT = SAMPLE / "chat.jsonl"


def assert_one_line_failure(res: subprocess.CompletedProcess, code: int, *needles: str) -> str:
    """The run failed with ``code`` and said why in one ``padprep: error:`` line, without a traceback."""
    assert res.returncode == code, (res.returncode, res.stdout, res.stderr)
    assert "Traceback" not in res.stderr + res.stdout, res.stderr
    errors = [line for line in res.stderr.splitlines() if line.startswith("padprep: error:")]
    assert len(errors) == 1, res.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


def assert_no_output(parent: Path, name: str = "out") -> None:
    assert not (parent / name).exists()
    assert not list(parent.glob(f".{name}.padprep-*"))  # no partial output, state or lock: a failure keeps nothing


def build(out: Path, *inputs, extra=()) -> subprocess.CompletedProcess:
    return padprep_cli("build", *map(str, inputs), "--tokenizer", TOK, "--output", str(out), *extra)


# -- empty outcomes --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content", ["", "\n\n  \n", "[]", "[\n]\n"], ids=["empty", "blank-lines", "empty-array", "empty-array-2"]
)
def test_input_without_records_fails(tmp_path, content):
    path = tmp_path / ("data.json" if content.startswith("[") else "data.jsonl")
    path.write_text(content)
    res = build(tmp_path / "out", path)
    assert_one_line_failure(res, 1, "0 rows written", "no records", "--allow-empty")
    assert_no_output(tmp_path)


def test_every_record_dropped_fails_and_says_why(tmp_path):
    res = build(tmp_path / "out", CHAT, extra=("--max-length", "5"))
    line = assert_one_line_failure(res, 1, "0 rows written: 48 dropped (longer than --max-length)")
    assert_no_output(tmp_path)
    kept = tmp_path / "out.rejects.jsonl"
    assert str(kept) in line
    assert len(kept.read_text().splitlines()) == 48  # every record accounted for, beside the output


def test_every_record_rejected_fails_even_when_the_limits_allow_it(tmp_path):
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"messages": []}, {"messages": []}, {"nothing": 1}])
    res = build(tmp_path / "out", bad, extra=("--max-reject-rate", "1"))
    assert_one_line_failure(res, 1, "0 rows written: ", "3 rejected")
    assert_no_output(tmp_path)


def test_allow_empty_writes_an_empty_output_that_inspects(tmp_path):
    out = tmp_path / "out"
    res = build(out, CHAT, extra=("--max-length", "5", "--allow-empty"))
    assert res.returncode == 0, res.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["totals"]["rows_written"] == 0 and manifest["totals"]["dropped"] == 48
    assert manifest["shards"] == []
    res = padprep_cli("inspect", str(out), "--verify")
    assert res.returncode == 0, res.stderr
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    res = build(tmp_path / "out2", empty, extra=("--allow-empty",))
    assert res.returncode == 0, res.stderr


# -- directories as inputs -------------------------------------------------------------------------


def test_a_directory_is_read_as_the_data_files_inside_it(tmp_path):
    lines = CHAT.read_text().splitlines(keepends=True)
    data = tmp_path / "data"
    (data / "b" / "deeper").mkdir(parents=True)
    (data / "a.jsonl").write_text("".join(lines[:10]))
    (data / "b" / "deeper" / "c.jsonl").write_text("".join(lines[30:]))
    (data / "b" / "b.jsonl").write_text("".join(lines[10:30]))
    (data / "README.md").write_text("not data\n")
    (data / "b" / "notes.txt").write_text("not data either\n")
    (data / ".hidden").mkdir()
    (data / ".hidden" / "x.jsonl").write_text("{}\n")
    res = build(tmp_path / "out", data)
    assert res.returncode == 0, res.stderr
    assert "README.md" in res.stderr and "notes.txt" in res.stderr and "skipped" in res.stderr
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert [Path(i["path"]).relative_to(data).as_posix() for i in manifest["inputs"]] == [
        "a.jsonl",
        "b/b.jsonl",
        "b/deeper/c.jsonl",
    ]
    assert manifest["totals"]["rows_written"] == 48
    # the same records as the one file: the same shards
    assert build(tmp_path / "one", CHAT).returncode == 0
    one = json.loads((tmp_path / "one" / "manifest.json").read_text())
    assert [s["sha256"] for s in manifest["shards"]] == [s["sha256"] for s in one["shards"]]


def test_a_directory_without_data_files_fails(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "README.md").write_text("x\n")
    assert_one_line_failure(build(tmp_path / "out", tmp_path / "docs"), 2, "no data files")


def test_a_missing_input_fails(tmp_path):
    assert_one_line_failure(build(tmp_path / "out", tmp_path / "nope.jsonl"), 2, "nope.jsonl", "no such file")


# -- inspect on damaged output ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("built") / "out"
    res = build(out, CHAT, extra=("--shard-tokens", "4096"))
    assert res.returncode == 0, res.stderr
    return out


def _damage(built: Path, tmp_path: Path, how: str) -> tuple[Path, str]:
    out = tmp_path / "damaged"
    shutil.copytree(built, out)
    manifest = json.loads((out / "manifest.json").read_text())
    name = manifest["shards"][0]["file"]
    shard = out / name
    if how == "truncated":
        shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    elif how == "header":
        data = bytearray(shard.read_bytes())
        data[:64] = b"\xff" * 64
        shard.write_bytes(bytes(data))
    elif how == "missing":
        shard.unlink()
    elif how == "manifest":
        (out / "manifest.json").write_text('{"shards": [')
        name = "manifest.json"
    elif how == "manifest-shape":
        (out / "manifest.json").write_text('{"shards": [{"file": 3}]}')
        name = "manifest.json"
    return out, name


@pytest.mark.parametrize("how", ["truncated", "header", "missing", "manifest", "manifest-shape"])
def test_inspect_on_damaged_output_never_shows_a_traceback(built, tmp_path, how):
    out, name = _damage(built, tmp_path, how)
    res = padprep_cli("inspect", str(out), "--verify")
    assert res.returncode == 1, (res.stdout, res.stderr)
    assert "Traceback" not in res.stdout + res.stderr
    breaches = [line for line in res.stdout.splitlines() if line.startswith("verify:")]
    assert breaches and any(name in b for b in breaches), res.stdout
    assert "verify: ok" not in res.stdout
    for args in (("inspect", str(out)), ("inspect", str(out), "--show", "2"), ("inspect", str(out), "--json")):
        assert_one_line_failure(padprep_cli(*args), 1, name)


def test_inspect_verify_reports_each_damaged_shard_and_the_rest(built, tmp_path):
    out, first = _damage(built, tmp_path, "truncated")
    second = json.loads((out / "manifest.json").read_text())["shards"][1]["file"]
    (out / second).unlink()
    res = padprep_cli("inspect", str(out), "--verify", "--json")
    assert res.returncode == 1
    problems = json.loads(res.stdout)["verify"]["problems"]
    assert any(first in p for p in problems) and any(second in p and "missing" in p for p in problems)


def test_inspect_on_something_that_is_not_an_output(tmp_path):
    assert_one_line_failure(padprep_cli("inspect", str(tmp_path / "nope")), 2, "no such directory")
    assert_one_line_failure(padprep_cli("inspect", str(tmp_path)), 2, "manifest.json")


# -- usage errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, said",
    [
        (("build", str(CHAT), "-t", TOK, "-o", "o", "--bogus"), "No such option: --bogus"),
        (("build", str(CHAT), "-t", TOK), "Missing option '--output'"),
        (("build", str(CHAT), "-t", TOK, "-o", "o", "--buckets", "a,b"), "Invalid value for '--buckets'"),
        (("build", str(CHAT), "-t", TOK, "-o", "o", "--truncation", "middle"), "Invalid value for '--truncation'"),
        (("build", str(CHAT), "-t", TOK, "-o", "o", "--max-length"), "Option '--max-length' requires an argument"),
        (("inspect",), "Missing argument 'output'"),
        (("buidl",), "No such command 'buidl'"),
    ],
    ids=["unknown-option", "missing-option", "bad-value", "bad-choice", "no-value", "missing-argument", "no-command"],
)
def test_usage_errors_are_one_line(tmp_path, args, said):
    res = padprep_cli(*args, cwd=tmp_path)
    line = assert_one_line_failure(res, 2, said)
    assert "--help" in line  # where the options are listed
    assert "╭" not in res.stderr and "Usage:" not in res.stderr, res.stderr  # no Rich box, no usage block
    assert not (tmp_path / "o").exists()


def test_help_and_no_arguments_still_show_the_help():
    assert "build" in padprep_cli().stdout + padprep_cli().stderr
    res = padprep_cli("build", "--help")
    assert res.returncode == 0 and "--max-length" in res.stdout


# -- errors a user can cause while building --------------------------------------------------------


def test_unreadable_tokenizer_files_fail_in_one_line(tmp_path):
    tok = tmp_path / "tok"
    shutil.copytree(SAMPLE / "tokenizer", tok)
    (tok / "tokenizer.json").write_bytes(b"\xff\xfe not a tokenizer")
    assert_one_line_failure(build(tmp_path / "out", CHAT, extra=("--tokenizer", str(tok))), 2, "tokenizer.json")
    (tok / "tokenizer.json").write_text("{}")
    assert_one_line_failure(build(tmp_path / "out", CHAT, extra=("--tokenizer", str(tok))), 2, "tokenizer.json")
    shutil.copy(SAMPLE / "tokenizer" / "tokenizer.json", tok / "tokenizer.json")
    (tok / "tokenizer_config.json").write_bytes(b"\xff{")
    assert_one_line_failure(build(tmp_path / "out", CHAT, extra=("--tokenizer", str(tok))), 2, "tokenizer_config.json")
    assert_no_output(tmp_path)


def test_output_where_a_directory_cannot_be_made(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    res = build(blocker / "out", CHAT)
    assert_one_line_failure(res, 1, str(blocker))


def _limit_file_size(limit: int):
    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead of a kill
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


@pytest.mark.skipif(not hasattr(resource, "RLIMIT_FSIZE"), reason="needs RLIMIT_FSIZE")
def test_a_write_that_fails_midway_leaves_nothing(tmp_path):
    """A disk that fills up while shards are written (simulated by a file-size limit): one line, no output."""
    src = tmp_path / "big.jsonl"
    src.write_text(CHAT.read_text() * 20)  # spill and shards well past the limit; the input itself is read only
    res = subprocess.run(
        [sys.executable, "-m", "padprep", "build", str(src), "--tokenizer", TOK, "--output", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "COLUMNS": "120"},
        timeout=300,
        preexec_fn=_limit_file_size(64 * 1024),
    )
    assert_one_line_failure(res, 1, "File too large", "no output written")
    assert_no_output(tmp_path)
