"""Builds killed with SIGKILL (the whole process group) at each point resume when run again, say so, and
write the same bytes as a build never interrupted; what differs starts over; a torn segment is redone;
one build per output at a time.

Kills land where ``PADPREP_KILL_AT`` names (``padprep/failpoints.py``): after a pass-1 checkpoint,
between the passes, after a shard of pass 2, before the final rename. ``PADPREP_CHECKPOINT_SECONDS=0``
checkpoints after every chunk, so that a small input has many checkpoints.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, SAMPLE, padprep_cli, tree_bytes, write_jsonl

TOK = SAMPLE / "tokenizer"


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """6,000 conversations (the sample's, each made unique: a dozen chunks), and a bad record."""
    records = [json.loads(line) for line in (SAMPLE / "chat.jsonl").read_text().splitlines()]
    out = []
    for i in range(125):
        for r in records:
            m = [dict(x) for x in r["messages"]]
            m[-1]["content"] = f"({i}) " + (m[-1].get("content") or "")
            out.append({**r, "messages": m})
    path = write_jsonl(tmp_path_factory.mktemp("resume") / "chat.jsonl", out)
    with path.open("a") as fh:
        fh.write('{"messages": [{"role": "user", "content": "unterminated\n')
    return path


@pytest.fixture(autouse=True)
def _no_store(monkeypatch):
    """The builds these tests start themselves run pass 1 too (no tokenized store)."""
    monkeypatch.setenv("PADPREP_NO_CACHE", "1")


OPTIONS = ["--workers", "2", "--shard-tokens", "4000", "--max-reject-rate", "0.01", "--seed", "4"]


def _build(src: Path, out: Path, *extra: str, kill_at: str | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    # no tokenized store: a build killed in pass 1 must run pass 1 (tests/e2e/test_store.py resumes one from the store)
    env = {**os.environ, "COLUMNS": "120", "PADPREP_CHECKPOINT_SECONDS": "0", "PADPREP_NO_CACHE": "1", **(env or {})}
    env.pop("PADPREP_KILL_AT", None)
    if kill_at:
        env["PADPREP_KILL_AT"] = kill_at
    return subprocess.run(
        [sys.executable, "-m", "padprep", "build", str(src), "-t", str(TOK), "-o", str(out), *OPTIONS, *extra],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=300,
        start_new_session=True,  # its own process group: the kill takes the workers and the pad process too
    )


@pytest.fixture(scope="module")
def clean(data, tmp_path_factory) -> dict[str, bytes]:
    out = tmp_path_factory.mktemp("clean") / "out"
    done = _build(data, out)
    assert done.returncode == 0, done.stderr
    return tree_bytes(out)


@pytest.mark.parametrize("kill_at", ["pass1:1", "pass1:8", "between", "pass2:3", "rename"])
def test_killed_build_resumes_to_the_same_bytes(data, clean, tmp_path, kill_at):
    out = tmp_path / "out"
    killed = _build(data, out, kill_at=kill_at)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert not out.exists()  # nothing that looks complete
    again = _build(data, out)
    assert again.returncode == 0, again.stderr
    assert "resuming" in again.stderr, again.stderr
    assert tree_bytes(out) == clean
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no lock, state or partial output left
    # the rate counts what this run did: the tokens the killed run had processed are named, not divided again
    done_before = re.search(r"resumed: ([\d,]+) tokens done by the interrupted run", again.stdout)
    assert done_before, again.stdout
    real = json.loads((out / "manifest.json").read_text())["totals"]["real_tokens"]
    assert 0 < int(done_before.group(1).replace(",", "")) <= real


def test_pack_resumes_to_the_same_bytes(data, tmp_path):
    clean = tmp_path / "clean"
    assert _build(data, clean, "--pack", "--max-length", "1024").returncode == 0
    out = tmp_path / "out"
    assert _build(data, out, "--pack", "--max-length", "1024", kill_at="pass1:5").returncode == -signal.SIGKILL
    again = _build(data, out, "--pack", "--max-length", "1024")
    assert again.returncode == 0 and "resuming" in again.stderr, again.stderr
    assert tree_bytes(out) == tree_bytes(clean)


def test_sigterm_keeps_what_was_done(data, clean, tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "PADPREP_CHECKPOINT_SECONDS": "0"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "padprep", "build", str(data), "-t", str(TOK), "-o", str(out), *OPTIONS],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=env,
    )
    state = tmp_path / ".out.padprep-state.json"
    while proc.poll() is None and not (state.exists() and len(json.loads(state.read_text() or "{}").get("segments", [])) >= 3):
        pass
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    if proc.returncode == 0:
        pytest.skip("the build finished before the signal came")
    assert proc.returncode == 130 and "run the same command again to resume" in err, err
    again = _build(data, out)
    assert again.returncode == 0 and "resuming" in again.stderr
    assert tree_bytes(out) == clean


def test_an_interrupt_before_the_first_checkpoint_says_the_rerun_starts_over(data, tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "PADPREP_CHECKPOINT_SECONDS": "1000"}  # no checkpoint before pass 1 ends
    env.pop("PADPREP_KILL_AT", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "padprep", "build", str(data), "-t", str(TOK), "-o", str(out), *OPTIONS],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=env,
    )
    partial = tmp_path / ".out.padprep-partial"
    while proc.poll() is None and not partial.exists():
        pass
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    if proc.returncode == 0 or (tmp_path / ".out.padprep-state.json").exists():
        pytest.skip("the build reached a checkpoint before the signal came")
    assert proc.returncode == 130 and "or to start over where none was made yet" in err, err
    again = _build(data, out)
    assert again.returncode == 0, again.stderr
    assert "starting over: the interrupted build was stopped before its first checkpoint" in again.stderr, again.stderr
    assert "no partial state" not in again.stderr


def test_a_changed_input_or_option_starts_over(data, tmp_path):
    out = tmp_path / "out"
    assert _build(data, out, kill_at="pass1:4").returncode == -signal.SIGKILL
    other = _build(data, out, "--max-length", "1500")
    assert other.returncode == 0 and "resuming" not in other.stderr
    assert "starting over: this build differs from the partial build in --max-length (None, now 1500)" in other.stderr
    clean = tmp_path / "clean"
    assert _build(data, clean, "--max-length", "1500").returncode == 0
    assert tree_bytes(out) == tree_bytes(clean)
    changed = tmp_path / "changed.jsonl"  # the same name and size, one byte different
    changed.write_bytes(data.read_bytes().replace(b"gold", b"GOLD", 1))
    assert _build(changed, tmp_path / "out2", kill_at="pass1:4").returncode == -signal.SIGKILL
    changed.write_bytes(data.read_bytes())
    again = _build(changed, tmp_path / "out2")
    assert (
        again.returncode == 0
        and "starting over: this build differs from the partial build in the content of input 1 of 1" in again.stderr
    )


def test_fresh_starts_over(data, clean, tmp_path):
    out = tmp_path / "out"
    assert _build(data, out, kill_at="pass1:4").returncode == -signal.SIGKILL
    again = _build(data, out, "--fresh")
    assert again.returncode == 0 and "starting over: --fresh" in again.stderr and "resuming" not in again.stderr
    assert tree_bytes(out) == clean


def test_a_torn_segment_is_redone(data, clean, tmp_path):
    out = tmp_path / "out"
    assert _build(data, out, kill_at="pass1:6").returncode == -signal.SIGKILL
    segment = tmp_path / ".out.padprep-partial" / "spill-00004.arrow"
    segment.write_bytes(segment.read_bytes()[:-40])  # a write the disk lost
    again = _build(data, out)
    assert again.returncode == 0 and "redoing from spill-00004.arrow" in again.stderr, again.stderr
    assert "starting over" not in again.stderr and "resuming" in again.stderr
    assert tree_bytes(out) == clean


def test_a_torn_segment_older_than_the_kept_counts_starts_over(data, clean, tmp_path):
    """The state keeps pass 1's counts for its last three segments only (it would grow with the build's duration):
    a segment torn before them leaves no counts to go on from."""
    out = tmp_path / "out"
    assert _build(data, out, kill_at="pass1:6").returncode == -signal.SIGKILL
    state = json.loads((tmp_path / ".out.padprep-state.json").read_text())
    assert [s["done"] is not None for s in state["segments"]] == [False, False, False, True, True, True]
    segment = tmp_path / ".out.padprep-partial" / "spill-00001.arrow"
    segment.write_bytes(segment.read_bytes()[:-40])
    again = _build(data, out)
    assert again.returncode == 0 and "starting over: a spill segment older than the last checkpoints" in again.stderr
    assert tree_bytes(out) == clean


def test_a_second_build_fails_while_one_runs_and_a_stale_lock_is_taken_over(data, tmp_path):
    out = tmp_path / "out"
    lock = tmp_path / ".out.padprep-lock"
    with open(lock, "w") as fh:
        fh.write(json.dumps({"pid": 4242, "host": "trainer-7", "started": "2026-12-01 10:00:00"}))
        fh.flush()
        fcntl.flock(fh, fcntl.LOCK_EX)  # held, as a running build holds it
        second = padprep_cli("build", str(data), "-t", str(TOK), "-o", str(out))
    errors = [line for line in second.stderr.splitlines() if line.startswith("padprep: error:")]
    assert second.returncode == 2 and len(errors) == 1, second.stderr
    assert "another build is writing this output (pid 4242 on trainer-7, started 2026-12-01 10:00:00)" in errors[0]
    # released without being removed, as by a build that was killed: taken over
    done = padprep_cli("build", str(data), "-t", str(TOK), "-o", str(out), "--max-reject-rate", "0.01")
    assert done.returncode == 0, done.stderr
    assert "took over the lock left by a build that is no longer running (pid 4242 on trainer-7" in done.stderr
    assert not lock.exists()
