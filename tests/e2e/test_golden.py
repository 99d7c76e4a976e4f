"""Golden builds: a bucketed, a packed and a left-padded build write what padprep 0.1.0 wrote, byte for byte.

The digests were taken from the code before the move into sub-packages (commit 6d61d9b) and cover
the shards only (the manifest names paths and options). ``contents`` hashes each shard's name,
schema and column values; ``files`` the shard files' bytes, which also depend on pyarrow's IPC
writer, so they are compared where pyarrow is the version they were taken with.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from padprep.config import PaddingSide
from tests.conftest import SAMPLE, alpaca_to_messages, run_build, shared_file, sharegpt_to_messages, write_jsonl

PYARROW_OF_THE_DIGESTS = "26."  # the files digests were taken with pyarrow 26

GOLDEN = {
    # name: (options, files digest, contents digest)
    "bucketed": ({"buckets": (64, 128, 256, 700), "shard_tokens": 2000, "seed": 3}, "803d44b87f479e26", "d41e77d1cd1f74d4"),
    "packed": ({"pack": True, "max_length": 512, "seed": 3}, "e3dac88f86084aef", "1d4c4eb32bac78aa"),
    "left": ({"padding_side": PaddingSide.left}, "c5a155d2a6d71f4e", "3a0074d7a69af8d3"),
}


def shard_digests(out: Path) -> tuple[str, str]:
    """(files, contents) digests of a build's shards."""
    files, contents = hashlib.sha256(), hashlib.sha256()
    for path in sorted(out.glob("*.arrow")):
        data = path.read_bytes()
        files.update(path.name.encode() + b"\0" + data)
        table = pa.ipc.open_stream(pa.py_buffer(data)).read_all()
        contents.update(path.name.encode() + b"\0" + str(table.schema).encode())
        for column in table.itercolumns():
            array = column.combine_chunks()
            if pa.types.is_list(array.type):
                contents.update(np.asarray(array.offsets).tobytes())
            contents.update(np.asarray(array.flatten()).tobytes())
    return files.hexdigest()[:16], contents.hexdigest()[:16]


@pytest.mark.parametrize("name", list(GOLDEN))
def test_sample_builds_write_the_golden_bytes(tmp_path, name):
    options, files, contents = GOLDEN[name]
    run_build([SAMPLE / "chat.jsonl"], SAMPLE / "tokenizer", tmp_path / name, **options)
    got_files, got_contents = shard_digests(tmp_path / name)
    assert got_contents == contents
    if pa.__version__.startswith(PYARROW_OF_THE_DIGESTS):
        assert got_files == files


QWEN3_SHARED = {
    "bucketed": ({}, "1e633d711145508b", "8ec8f37f2aad2982"),
    "packed": ({"pack": True, "max_length": 2048}, "a0c600ad1be10a59", "01ac8d61b1b9a0cb"),
    "left": ({"padding_side": PaddingSide.left}, "aa5fe5a344d041b1", "73205cb30133c123"),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(QWEN3_SHARED))
def test_shared_data_with_qwen3_writes_the_golden_bytes(tmp_path, qwen_dir, name):
    """The shared data (glaive tool calls as messages + alpaca) with the real Qwen3 template."""
    glaive = json.loads(shared_file("glaive_toolcall_en_demo.json").read_text())
    alpaca = json.loads(shared_file("alpaca_en_demo.json").read_text())
    src = write_jsonl(tmp_path / "in.jsonl", [sharegpt_to_messages(r) for r in glaive] + [alpaca_to_messages(r) for r in alpaca])
    options, files, contents = QWEN3_SHARED[name]
    run_build([src], qwen_dir, tmp_path / name, **options)
    got_files, got_contents = shard_digests(tmp_path / name)
    assert got_contents == contents
    if pa.__version__.startswith(PYARROW_OF_THE_DIGESTS):
        assert got_files == files
