"""The tokenized store (padprep/store): a build that changes only the layout takes pass 1 from the store and
writes the bytes of a fresh build, without reading, rendering or tokenizing (checked: the processor and the
record stream raise if made); what might not match is tokenized again, never used."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import padprep.run.pipeline as pipeline
from padprep.config import PaddingSide, Truncation
from tests.conftest import ROOT, SAMPLE, padprep_cli, run_build, tree_bytes, write_jsonl

TOK = SAMPLE / "tokenizer"
BASE = {"max_length": 512, "shard_tokens": 3000}


@pytest.fixture
def data(tmp_path) -> Path:
    """The sample conversations and one bad record (a reject to carry through the store)."""
    path = tmp_path / "in" / "chat.jsonl"
    path.parent.mkdir()
    path.write_text((SAMPLE / "chat.jsonl").read_text() + '{"messages": "not a list"}\n', encoding="utf-8")
    return path


@pytest.fixture
def store(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "store"
    monkeypatch.setenv("PADPREP_CACHE_DIR", str(root))
    monkeypatch.delenv("PADPREP_NO_CACHE", raising=False)
    return root


class _Forbidden:
    """Stands for the processor (render + tokenize) and the record stream (reading): made, it fails the test."""

    def __init__(self, *args, **kwargs):
        raise AssertionError("pass 1 ran: the inputs were read, rendered or tokenized")


def _no_pass_one(monkeypatch) -> None:
    monkeypatch.setattr(pipeline, "Processor", _Forbidden)
    monkeypatch.setattr(pipeline, "RecordStream", _Forbidden)


def _counting(monkeypatch) -> list[int]:
    """Counts the processors made (one per build that runs pass 1)."""
    made = []
    real = pipeline.Processor

    def counted(*args, **kwargs):
        made.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline, "Processor", counted)
    return made


def _fresh(data, out: Path, **options) -> dict[str, bytes]:
    run_build([data], TOK, out, no_cache=True, **options)
    return tree_bytes(out)


LAYOUTS = {
    "seed": {"seed": 7},
    "pack": {"pack": True},
    "buckets": {"buckets": (128, 256, 512)},
    "padding_side": {"padding_side": PaddingSide.left},
    "shard_tokens": {"shard_tokens": 1500},
    "pad_to_multiple_of": {"pad_to_multiple_of": 64},
}


@pytest.mark.parametrize("name", [pytest.param(n, marks=() if n == "pack" else pytest.mark.slow) for n in LAYOUTS])
def test_a_layout_option_changed_gives_a_fresh_builds_bytes_from_the_store(data, store, tmp_path, monkeypatch, name):
    run_build([data], TOK, tmp_path / "first", **BASE)  # fills the store
    options = {**BASE, **LAYOUTS[name]}
    fresh = _fresh(data, tmp_path / "fresh", **options)
    with monkeypatch.context() as m:
        _no_pass_one(m)
        manifest = run_build([data], TOK, tmp_path / "stored", **options)
    assert tree_bytes(tmp_path / "stored") == fresh  # shards, sidecars, rejects.jsonl and manifest.json
    assert manifest["totals"]["rejected"] == 1


def test_the_store_says_so_in_one_line(data, store, tmp_path):
    run_build([data], TOK, tmp_path / "first", **BASE)
    res = padprep_cli("build", str(data), "-t", str(TOK), "-o", str(tmp_path / "again"), "--max-length", "512", "--seed", "3")
    assert res.returncode == 0, res.stderr
    said = [line for line in res.stderr.splitlines() if "tokenizing skipped" in line]
    assert len(said) == 1 and "48 rows" not in said[0] and "from the tokenized store" in said[0], res.stderr
    nocache = padprep_cli(
        "build", str(data), "-t", str(TOK), "-o", str(tmp_path / "nocache"), "--max-length", "512", "--seed", "3", "--no-cache"
    )
    assert "tokenizing skipped" not in nocache.stderr
    assert tree_bytes(tmp_path / "again") == tree_bytes(tmp_path / "nocache")


@pytest.mark.slow
def test_a_changed_input_is_tokenized_again(data, store, tmp_path, monkeypatch):
    run_build([data], TOK, tmp_path / "first", **BASE)
    records = [json.loads(line) for line in (SAMPLE / "chat.jsonl").read_text().splitlines()]
    records[0]["messages"][-1]["content"] = "changed"
    write_jsonl(data, records)
    made = _counting(monkeypatch)
    run_build([data], TOK, tmp_path / "second", **BASE, seed=1)
    assert made == [1]  # tokenized again: the input's digest is in the key
    assert tree_bytes(tmp_path / "second") == _fresh(data, tmp_path / "fresh", **BASE, seed=1)
    made.clear()
    run_build([data], TOK, tmp_path / "third", **BASE, seed=2)  # unchanged since: from the store
    assert made == []


@pytest.mark.slow
def test_token_options_and_the_length_limit_are_in_the_key(data, store, tmp_path, monkeypatch):
    run_build([data], TOK, tmp_path / "first", **BASE)
    made = _counting(monkeypatch)
    run_build([data], TOK, tmp_path / "longer", max_length=1024)  # the length policy runs in pass 1
    run_build([data], TOK, tmp_path / "cut", **{**BASE, "truncation": Truncation.right})
    run_build([data], TOK, tmp_path / "all", **BASE, train_on="all")
    assert made == [1, 1, 1]


@pytest.mark.parametrize(
    "damage", ["spill", pytest.param("rejects", marks=pytest.mark.slow), pytest.param("entry", marks=pytest.mark.slow)]
)
def test_a_damaged_entry_is_rebuilt_never_used(data, store, tmp_path, monkeypatch, damage):
    run_build([data], TOK, tmp_path / "first", **BASE)
    (entry,) = (store / "entries").iterdir()
    target = {"spill": "spill-00000.arrow", "rejects": "rejects.jsonl", "entry": "entry.json"}[damage]
    blob = bytearray((entry / target).read_bytes())
    at = len(blob) // 2
    blob[at] = (blob[at] + 1) % 256 if damage != "entry" else ord("7") if blob[at] != ord("7") else ord("8")
    os.unlink(entry / target)  # a new file: a hard link elsewhere keeps its bytes
    (entry / target).write_bytes(bytes(blob))
    made = _counting(monkeypatch)
    logged: list[str] = []
    from padprep.config import BuildConfig
    from padprep.input.read import as_input
    from padprep.run.progress import Progress

    class _Log(Progress):
        def log(self, message: str) -> None:
            logged.append(message)

    cfg = BuildConfig(inputs=(as_input(data),), tokenizer=str(TOK), output=tmp_path / "second", seed=5, **BASE)
    pipeline.build(cfg, _Log())
    assert made == [1], logged  # tokenized again
    assert any("damaged" in line for line in logged), logged
    assert tree_bytes(tmp_path / "second") == _fresh(data, tmp_path / "fresh", **BASE, seed=5)
    with monkeypatch.context() as m:  # the entry was written anew, whole: used from now on
        _no_pass_one(m)
        run_build([data], TOK, tmp_path / "third", **BASE, seed=5)
    assert tree_bytes(tmp_path / "third") == tree_bytes(tmp_path / "fresh")


def test_no_cache_neither_uses_nor_fills_the_store(data, store, tmp_path):
    run_build([data], TOK, tmp_path / "out", no_cache=True, **BASE)
    assert not store.exists()


def test_least_recently_used_entries_go_past_the_bound(data, store, tmp_path, monkeypatch):
    run_build([data], TOK, tmp_path / "a", **BASE)
    (first,) = (store / "entries").iterdir()
    size = json.loads((first / "entry.json").read_text())["bytes"]
    monkeypatch.setenv("PADPREP_CACHE_MAX_BYTES", str(size + size // 2))  # room for one entry
    run_build([data], TOK, tmp_path / "b", **BASE, train_on="all")
    (kept,) = (store / "entries").iterdir()
    assert kept.name != first.name


def test_cache_list_and_prune(data, store, tmp_path):
    run_build([data], TOK, tmp_path / "a", **BASE)
    (store / "entries" / "mine.txt").write_text("not padprep's")
    listed = padprep_cli("cache", "list", "--cache-dir", str(store))
    assert listed.returncode == 0, listed.stderr
    assert "1 entry" in listed.stdout and "49 records" in listed.stdout, listed.stdout
    pruned = padprep_cli("cache", "prune", "--all", "--cache-dir", str(store))
    assert pruned.returncode == 0, pruned.stderr
    assert [p.name for p in (store / "entries").iterdir()] == ["mine.txt"]  # only padprep's entries go
    assert (store / "padprep-store.json").is_file()


def test_prune_touches_no_folder_that_is_not_padprep_store(tmp_path):
    other = tmp_path / "other"
    (other / "entries" / ("a" * 64)).mkdir(parents=True)
    (other / "entries" / ("a" * 64) / "entry.json").write_text("{}")
    res = padprep_cli("cache", "prune", "--all", "--cache-dir", str(other))
    assert res.returncode != 0
    assert "not padprep's store" in res.stderr
    assert (other / "entries" / ("a" * 64) / "entry.json").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("kill_at", ["between", "pass2:2"])
def test_a_build_from_the_store_killed_resumes_to_the_same_bytes(data, store, tmp_path, kill_at):
    run_build([data], TOK, tmp_path / "first", **BASE)
    out = tmp_path / "out"
    args = [sys.executable, "-m", "padprep", "build", str(data), "-t", str(TOK), "-o", str(out)]
    args += ["--max-length", "512", "--shard-tokens", "3000", "--seed", "9"]
    env = {**os.environ, "PADPREP_KILL_AT": kill_at}
    killed = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, env=env, timeout=300, start_new_session=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert "tokenizing skipped" in killed.stderr
    env.pop("PADPREP_KILL_AT")
    again = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert again.returncode == 0 and "resuming in pass 2" in again.stderr, again.stderr
    assert tree_bytes(out) == _fresh(data, tmp_path / "fresh", **BASE, seed=9)


def test_a_preference_build_relayout_comes_from_the_store(store, tmp_path, monkeypatch):
    pairs = write_jsonl(
        tmp_path / "pairs.jsonl",
        [
            {
                "prompt": [{"role": "user", "content": f"question {i}" + " word" * (i % 7)}],
                "chosen": [{"role": "assistant", "content": f"good answer {i}" + " more" * (i % 5)}],
                "rejected": [{"role": "assistant", "content": f"bad {i}"}],
            }
            for i in range(40)
        ],
    )
    run_build([pairs], TOK, tmp_path / "first", max_length=512)
    run_build([pairs], TOK, tmp_path / "fresh", max_length=512, seed=3, no_cache=True)
    fresh = tree_bytes(tmp_path / "fresh")
    with monkeypatch.context() as m:
        _no_pass_one(m)
        manifest = run_build([pairs], TOK, tmp_path / "stored", max_length=512, seed=3)
    assert manifest["task"] == "preference"
    assert tree_bytes(tmp_path / "stored") == fresh


def _conversations(path: Path, tag: str, n: int, bad_at: tuple[int, ...] = ()) -> Path:
    """``n`` records: the sample's conversations, each made unique by ``tag``, with bad records at ``bad_at``."""
    base = [json.loads(line) for line in (SAMPLE / "chat.jsonl").read_text().splitlines()]
    lines = []
    for i in range(n):
        if i in bad_at:
            lines.append('{"messages": "not a list"}')
            continue
        record = json.loads(json.dumps(base[i % len(base)]))
        record["messages"][-1]["content"] = f"({tag}{i}) " + (record["messages"][-1].get("content") or "")
        lines.append(json.dumps(record))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _records_tokenized(monkeypatch) -> list[int]:
    """How many records pass 1 renders and tokenizes in this process (a small input is built here)."""
    from padprep.chat.process import Processor

    seen: list[int] = []
    real = Processor.prepare

    def counted(self, records):
        seen.append(len(records))
        return real(self, records)

    monkeypatch.setattr(Processor, "prepare", counted)
    return seen


@pytest.mark.parametrize("layout", [{}, pytest.param({"pack": True}, marks=pytest.mark.slow)], ids=["buckets", "pack"])
def test_an_added_input_is_the_only_one_tokenized(store, tmp_path, monkeypatch, layout):
    a = _conversations(tmp_path / "a.jsonl", "a", 150, bad_at=(70,))
    b = _conversations(tmp_path / "b.jsonl", "b", 48)
    c = _conversations(tmp_path / "c.jsonl", "c", 61, bad_at=(5,))
    options = {**BASE, "chunk_size": 40, **layout}  # chunks that end elsewhere than the inputs do
    run_build([a, b], TOK, tmp_path / "ab", **options)
    seen = _records_tokenized(monkeypatch)
    import padprep.run.engine as engine

    read, real_read = [], engine.read_records
    monkeypatch.setattr(engine, "read_records", lambda path, *a, **k: read.append(Path(path).name) or real_read(path, *a, **k))
    logged: list[str] = []
    from padprep.config import BuildConfig
    from padprep.input.read import as_input
    from padprep.run.progress import Progress

    class _Log(Progress):
        def log(self, message: str) -> None:
            logged.append(message)

    cfg = BuildConfig(inputs=tuple(as_input(p) for p in (a, b, c)), tokenizer=str(TOK), output=tmp_path / "abc", **options)
    pipeline.build(cfg, _Log())
    # the preflight sample (the first 64 records, from a: hazards and shortcuts as a fresh build finds them), then c alone
    assert seen[0] == 64 and sum(seen[1:]) == 61, (seen, logged)
    # b opened once, for its first record (--task auto's look at each input); the stream reads a's sample, then c
    assert read.count("b.jsonl") == 1 and read[-2:] == ["a.jsonl", "c.jsonl"], read
    assert any("the first 2 of 3 inputs" in line for line in logged), logged
    assert tree_bytes(tmp_path / "abc") == _fresh_many([a, b, c], tmp_path / "fresh", **options)
    seen.clear()
    with monkeypatch.context() as m:  # and the three together are in the store now
        _no_pass_one(m)
        run_build([a, b, c], TOK, tmp_path / "abc-seed", **options, seed=4)
    assert tree_bytes(tmp_path / "abc-seed") == _fresh_many([a, b, c], tmp_path / "fresh-seed", **options, seed=4)


def test_a_changed_first_input_tokenizes_everything(store, tmp_path, monkeypatch):
    a = _conversations(tmp_path / "a.jsonl", "a", 100)
    b = _conversations(tmp_path / "b.jsonl", "b", 48)
    run_build([a, b], TOK, tmp_path / "ab", **BASE)
    _conversations(a, "changed", 100)
    seen = _records_tokenized(monkeypatch)
    run_build([a, b], TOK, tmp_path / "again", **BASE)
    assert sum(seen) == 148  # everything (the preflight sample's rows are the build's first)
    assert tree_bytes(tmp_path / "again") == _fresh_many([a, b], tmp_path / "fresh", **BASE)


@pytest.mark.slow
def test_rejects_that_a_limit_could_catch_elsewhere_build_again_from_the_start(store, tmp_path, monkeypatch):
    """Rejects past what --max-reject-rate allows in the first 1,000 records: a fresh build checks the rate at
    other records than one that takes its first inputs from the store, so the build is made again, fresh."""
    a = _conversations(tmp_path / "a.jsonl", "a", 600, bad_at=tuple(range(10, 18)))
    b = _conversations(tmp_path / "b.jsonl", "b", 300)
    c = _conversations(tmp_path / "c.jsonl", "c", 312, bad_at=(308, 309, 310, 311))  # in the last chunk
    options = {**BASE, "max_reject_rate": 0.01}
    run_build([a, b], TOK, tmp_path / "ab", **options)
    logged: list[str] = []
    from padprep.config import BuildConfig
    from padprep.input.read import as_input
    from padprep.run.progress import Progress

    class _Log(Progress):
        def log(self, message: str) -> None:
            logged.append(message)

    cfg = BuildConfig(inputs=tuple(as_input(p) for p in (a, b, c)), tokenizer=str(TOK), output=tmp_path / "abc", **options)
    pipeline.build(cfg, _Log())
    assert any("building again from the start" in line for line in logged), logged
    assert tree_bytes(tmp_path / "abc") == _fresh_many([a, b, c], tmp_path / "fresh", **options)


def _fresh_many(inputs, out: Path, **options) -> dict[str, bytes]:
    run_build(inputs, TOK, out, no_cache=True, **options)
    return tree_bytes(out)
