"""hf://datasets/ inputs through huggingface_hub's cache, offline: the split's files, a pinned path, one-line failures."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from padprep.input.hub import HubPath, hub_files
from tests.conftest import SAMPLE, padprep_cli, run_build, shard_bytes, write_jsonl

TOK = SAMPLE / "tokenizer"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _rows() -> list[dict]:
    return [
        {"messages": json.loads(line)["messages"]} for line in (SAMPLE / "chat.jsonl").read_text(encoding="utf-8").splitlines()
    ]


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """A Hub cache holding org/chat at COMMIT (main points at it): train in two Parquet files, test in one."""
    pytest.importorskip("huggingface_hub")
    repo = tmp_path / "cache" / "datasets--org--chat"
    snapshot = repo / "snapshots" / COMMIT / "data"
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    rows = [r for r in _rows() if not any(m.get("tool_calls") for m in r["messages"])]  # one schema for every row
    half = len(rows) // 2
    pq.write_table(pa.Table.from_pylist(rows[:half]), snapshot / "train-00000-of-00002.parquet")
    pq.write_table(pa.Table.from_pylist(rows[half:-5]), snapshot / "train-00001-of-00002.parquet")
    pq.write_table(pa.Table.from_pylist(rows[-5:]), snapshot / "test-00000-of-00001.parquet")
    (snapshot.parent / "README.md").write_text("a card\n")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return rows, half


def test_parse_names_repo_revision_and_path():
    assert HubPath.parse("hf://datasets/org/chat") == HubPath("org/chat", None, None)
    assert HubPath.parse("hf://datasets/org/chat@v2/data/x.parquet") == HubPath("org/chat", "v2", "data/x.parquet")


def test_the_split_is_its_files_in_order_and_builds_like_them(tmp_path, hub_cache):
    rows, half = hub_cache
    train = hub_files("hf://datasets/org/chat")
    assert [p.rsplit("/", 1)[-1] for p in train] == ["train-00000-of-00002.parquet", "train-00001-of-00002.parquet"]
    assert [p.rsplit("/", 1)[-1] for p in hub_files(f"hf://datasets/org/chat@{COMMIT}", "test")] == [
        "test-00000-of-00001.parquet"
    ]
    manifest = run_build(["hf://datasets/org/chat"], TOK, tmp_path / "hub")
    run_build([write_jsonl(tmp_path / "train.jsonl", pa.Table.from_pylist(rows[:-5]).to_pylist())], TOK, tmp_path / "local")
    assert manifest["totals"]["rows_written"] == len(rows) - 5
    assert shard_bytes(tmp_path / "hub") == shard_bytes(tmp_path / "local")


def test_a_path_inside_the_repository_names_its_files(hub_cache):
    files = hub_files("hf://datasets/org/chat/data/test-*.parquet")
    assert [p.rsplit("/", 1)[-1] for p in files] == ["test-00000-of-00001.parquet"]


@pytest.mark.slow  # over a second: out of make test-fast (under a minute)
def test_what_cannot_be_had_offline_fails_in_one_line(tmp_path, hub_cache):
    env_cache = str(tmp_path / "cache")
    for uri, said in (
        ("hf://datasets/org/missing", "not in the local cache"),
        ("hf://datasets/org/chat", "no files of split 'dev'"),
    ):
        res = padprep_cli(
            "build",
            uri,
            "-t",
            str(TOK),
            "-o",
            str(tmp_path / "out"),
            "--split",
            "dev",
            env={"HF_HUB_CACHE": env_cache, "HF_HUB_OFFLINE": "1"},
        )
        errors = [line for line in res.stderr.splitlines() if line.startswith("padprep: error:")]
        assert res.returncode == 2 and len(errors) == 1 and said in errors[0] and "Traceback" not in res.stderr, res.stderr


CARD = """---
license: apache-2.0
configs:
- config_name: chat
  default: true
  data_files:
  - split: train
    path: "data/train-00001-*.parquet"
  - split: validation
    path: ["data/test-*"]
- config_name: other
  data_files: "data/*.parquet"
---
# org/chat
"""


def test_the_dataset_cards_configs_name_the_split_files(tmp_path, hub_cache):
    snapshot = tmp_path / "cache" / "datasets--org--chat" / "snapshots" / COMMIT
    (snapshot / "README.md").write_text(CARD)
    logged = []
    train = hub_files("hf://datasets/org/chat", "train", logged.append)
    assert [p.rsplit("/", 1)[-1] for p in train] == ["train-00001-of-00002.parquet"]  # the card's, not the convention's
    assert "the dataset card's config 'chat'" in logged[0]
    assert [p.rsplit("/", 1)[-1] for p in hub_files("hf://datasets/org/chat", "validation")] == ["test-00000-of-00001.parquet"]
    with pytest.raises(Exception, match="config 'chat' has no split 'test' \\(it has train, validation\\)"):
        hub_files("hf://datasets/org/chat", "test")


@pytest.mark.slow  # over a second: out of make test-fast (under a minute)
def test_a_pinned_commit_is_up_to_date_without_the_cache(tmp_path, hub_cache):
    """A commit hash names content that never changes: the second build needs neither the network nor the files."""
    env = {"HF_HUB_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    args = ["build", f"hf://datasets/org/chat@{COMMIT}", "-t", str(TOK), "-o", str(tmp_path / "out")]
    first = padprep_cli(*args, env=env)
    assert first.returncode == 0, first.stderr
    import shutil

    shutil.rmtree(tmp_path / "cache")
    again = padprep_cli(*args, env=env)
    assert again.returncode == 0 and "is up to date" in again.stdout, again.stderr
    other = padprep_cli(*args, "--split", "test", env=env)  # another split is another build: it must be fetched
    assert other.returncode == 2 and "not in the local cache" in other.stderr
    moving = padprep_cli("build", "hf://datasets/org/chat@main", "-t", str(TOK), "-o", str(tmp_path / "out2"), env=env)
    assert moving.returncode == 2  # a branch is not a content address: it is resolved, and here cannot be
