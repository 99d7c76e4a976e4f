"""Parquet and Arrow inputs build exactly what the same records as JSON Lines build."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from padprep.input.read import expand_inputs, read_records
from tests.conftest import SAMPLE, padprep_cli, run_build, shard_bytes, write_jsonl

TOK = SAMPLE / "tokenizer"


def _records() -> list[dict]:
    """The sample conversations (tool calls with object arguments, tools as lists) as the JSON gives them."""
    return [json.loads(line) for line in (SAMPLE / "chat.jsonl").read_text(encoding="utf-8").splitlines()]


def _table(records: list[dict]) -> pa.Table:
    """Records as a table with nested columns. Arguments and tool schemas differ in shape from record to
    record, so they are stored as JSON strings, as hub data sets store them."""
    rows = []
    for r in records:
        messages = []
        for m in r["messages"]:
            m = dict(m)
            if m.get("tool_calls"):
                m["tool_calls"] = [
                    {**c, "function": {**c["function"], "arguments": json.dumps(c["function"]["arguments"])}}
                    for c in m["tool_calls"]
                ]
            messages.append(m)
        rows.append({"messages": messages, **({"tools": json.dumps(r["tools"])} if r.get("tools") else {})})
    return pa.Table.from_pylist(rows)


@pytest.fixture(scope="module")
def jsonl_build(tmp_path_factory) -> tuple[pa.Table, dict[str, bytes]]:
    tmp = tmp_path_factory.mktemp("columnar")
    table = _table(_records())
    src = write_jsonl(tmp / "in.jsonl", table.to_pylist())  # the table's own rows, nulls and all, as JSON Lines
    run_build([src], TOK, tmp / "out")
    return table, shard_bytes(tmp / "out")


def test_parquet_builds_the_bytes_of_its_json_lines(tmp_path, jsonl_build):
    table, expected = jsonl_build
    pq.write_table(table, tmp_path / "in.parquet", row_group_size=7)  # several row groups
    manifest = run_build([tmp_path / "in.parquet"], TOK, tmp_path / "out")
    assert shard_bytes(tmp_path / "out") == expected
    assert manifest["inputs"][0]["format"] == "messages" and manifest["totals"]["rows_written"] == table.num_rows


def test_parquet_is_known_by_its_magic_bytes(tmp_path, jsonl_build):
    table, expected = jsonl_build
    pq.write_table(table, tmp_path / "data.bin")
    run_build([tmp_path / "data.bin"], TOK, tmp_path / "out")
    assert shard_bytes(tmp_path / "out") == expected


def test_datasets_save_to_disk_directory_builds_the_same(tmp_path, jsonl_build):
    datasets = pytest.importorskip("datasets")
    table, expected = jsonl_build
    datasets.Dataset(table).save_to_disk(str(tmp_path / "saved"), num_shards=2)
    files = expand_inputs([str(tmp_path / "saved")])
    assert [Path(f).name for f in files] == ["data-00000-of-00002.arrow", "data-00001-of-00002.arrow"]
    run_build([tmp_path / "saved"], TOK, tmp_path / "out")
    assert shard_bytes(tmp_path / "out") == expected


def test_arrow_ipc_file_builds_the_same(tmp_path, jsonl_build):
    table, expected = jsonl_build
    with pa.OSFile(str(tmp_path / "in.arrow"), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        for batch in table.to_batches(max_chunksize=5):
            writer.write_batch(batch)
    run_build([tmp_path / "in.arrow"], TOK, tmp_path / "out")
    assert shard_bytes(tmp_path / "out") == expected


@pytest.mark.slow  # over a second: out of make test-fast (under a minute)
def test_nulls_are_absent_keys_and_rows_count_from_zero(tmp_path):
    rows = [
        {"messages": [{"role": "user", "content": "hi", "tool_calls": None}, {"role": "assistant", "content": "yo"}]},
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": None}]},  # no reply
    ]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "in.parquet")
    records = list(read_records(str(tmp_path / "in.parquet")))
    assert [(r.line, r.unit) for r in records] == [(0, "row"), (1, "row")]
    assert (
        json.loads(records[0].text_of())
        == records[0].json_value()
        == {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}
    )
    res = padprep_cli(
        "build", str(tmp_path / "in.parquet"), "-t", str(TOK), "-o", str(tmp_path / "out"), "--max-reject-rate", "1"
    )
    assert res.returncode == 0, res.stderr
    assert f"rejected {tmp_path / 'in.parquet'}:1: " in res.stderr
    reject = json.loads((tmp_path / "out" / "rejects.jsonl").read_text())
    assert reject["row"] == 1 and reject["stage"] == "normalize"
    assert json.loads(reject["record"]) == {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant"}]}


@pytest.mark.slow  # over a second: out of make test-fast (under a minute)
def test_a_damaged_parquet_file_fails_in_one_line(tmp_path):
    (tmp_path / "bad.parquet").write_bytes(b"PAR1" + b"\0" * 64)
    res = padprep_cli("build", str(tmp_path / "bad.parquet"), "-t", str(TOK), "-o", str(tmp_path / "out"))
    assert res.returncode == 2 and "Traceback" not in res.stderr
    errors = [line for line in res.stderr.splitlines() if line.startswith("padprep: error:")]
    assert len(errors) == 1 and "bad.parquet" in errors[0] and "Parquet" in errors[0]


@pytest.mark.parametrize("shards", [1, 3])
@pytest.mark.slow  # over a second: out of make test-fast (under a minute)
def test_a_save_to_disk_directory_builds_through_the_command_line(tmp_path, jsonl_build, shards):
    """The progress line asks how far reading is after the Arrow file was closed (it crashed for one file)."""
    datasets = pytest.importorskip("datasets")
    table, expected = jsonl_build
    datasets.Dataset(table).save_to_disk(str(tmp_path / "saved"), num_shards=shards)
    res = padprep_cli("build", str(tmp_path / "saved"), "-t", str(TOK), "-o", str(tmp_path / "out"))
    assert res.returncode == 0, res.stderr
    assert shard_bytes(tmp_path / "out") == expected


def test_the_reading_position_of_a_closed_arrow_file_is_its_size(tmp_path, jsonl_build):
    from padprep.input.columnar import read_arrow

    table, _ = jsonl_build
    path = tmp_path / "in.arrow"
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    tells = []
    rows = list(read_arrow(str(path), tells.append))
    assert len(rows) == table.num_rows and tells[0]() == path.stat().st_size  # asked after the file closed


@pytest.mark.slow  # over a second: out of make test-fast (under a minute)
def test_empty_arrow_and_parquet_files_are_empty_inputs(tmp_path, jsonl_build):
    table, _ = jsonl_build
    (tmp_path / "zero.arrow").write_bytes(b"")
    (tmp_path / "zero.parquet").write_bytes(b"")
    with pa.OSFile(str(tmp_path / "schema.arrow"), "wb") as sink:
        pa.ipc.new_stream(sink, table.schema).close()  # a schema and no batch
    for name in ("zero.arrow", "zero.parquet", "schema.arrow"):
        out = tmp_path / f"out-{name}"
        res = padprep_cli("build", str(tmp_path / name), "-t", str(TOK), "-o", str(out))
        errors = [line for line in res.stderr.splitlines() if line.startswith("padprep: error:")]
        assert res.returncode == 1 and len(errors) == 1 and "no records" in errors[0], res.stderr
        res = padprep_cli("build", str(tmp_path / name), "-t", str(TOK), "-o", str(out), "--allow-empty")
        assert res.returncode == 0, res.stderr
        assert json.loads((out / "manifest.json").read_text())["totals"]["rows_written"] == 0
