"""URLs: an http:// input served on 127.0.0.1 builds the bytes of the same file, compressed or columnar;
what cannot be had, or changes while the build runs, is one line and exit 2."""

from __future__ import annotations

import gzip
import hashlib
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from padprep.input.read import read_records
from tests.conftest import SAMPLE, padprep_cli, run_build, shard_bytes
from tests.support.serve import serve

TOK = SAMPLE / "tokenizer"
CHAT = SAMPLE / "chat.jsonl"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("served")
    data = CHAT.read_bytes()
    (root / "chat.jsonl").write_bytes(data)
    (root / "chat.jsonl.gz").write_bytes(gzip.compress(data))
    (root / "changes.jsonl").write_bytes(data)
    rows = [json.loads(line) for line in data.decode().splitlines()]
    for r in rows:
        r.pop("tools", None)  # their schemas differ in shape from record to record: not one Parquet type
        for m in r["messages"]:
            for c in m.get("tool_calls") or []:
                c["function"]["arguments"] = json.dumps(c["function"]["arguments"])
    (root / "plain.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    pq.write_table(pa.Table.from_pylist(rows), root / "plain.parquet", row_group_size=5)
    with serve(root) as srv:
        yield srv


@pytest.fixture(scope="module")
def from_file(tmp_path_factory) -> dict[str, bytes]:
    out = tmp_path_factory.mktemp("from_file") / "out"
    run_build([CHAT], TOK, out)
    return shard_bytes(out)


def test_http_url_builds_the_bytes_of_the_file(tmp_path, server, from_file):
    url = server.url("chat.jsonl?sig=abc")  # a query string does not hide the suffix
    manifest = run_build([url], TOK, tmp_path / "out")
    assert shard_bytes(tmp_path / "out") == from_file
    entry = manifest["inputs"][0]
    assert entry["path"] == url and entry["sha256"] == hashlib.sha256(CHAT.read_bytes()).hexdigest()
    assert entry["records_read"] == len(CHAT.read_text().splitlines())


def test_compressed_url_is_decompressed_while_it_streams(tmp_path, server, from_file):
    run_build([server.url("chat.jsonl.gz")], TOK, tmp_path / "out")
    assert shard_bytes(tmp_path / "out") == from_file


def test_parquet_url_builds_the_bytes_of_its_json_lines(tmp_path, server):
    run_build([server.root / "plain.jsonl"], TOK, tmp_path / "jsonl")
    manifest = run_build([server.url("plain.parquet")], TOK, tmp_path / "parquet")
    assert shard_bytes(tmp_path / "parquet") == shard_bytes(tmp_path / "jsonl")
    assert manifest["inputs"][0]["format"] == "messages"


@pytest.mark.slow  # over a second: out of make test-fast (under a minute)
def test_url_build_is_up_to_date_the_second_time(tmp_path, server):
    url = server.url("chat.jsonl")
    first = padprep_cli("build", url, "--tokenizer", str(TOK), "--output", str(tmp_path / "out"))
    assert first.returncode == 0, first.stderr
    again = padprep_cli("build", url, "--tokenizer", str(TOK), "--output", str(tmp_path / "out"))
    assert again.returncode == 0 and "is up to date" in again.stdout, again.stderr


@pytest.mark.slow  # over a second: out of make test-fast (under a minute)
def test_missing_url_is_one_line_and_exit_2(tmp_path, server):
    url = server.url("nothing.jsonl")
    done = padprep_cli("build", url, "--tokenizer", str(TOK), "--output", str(tmp_path / "out"))
    assert done.returncode == 2
    assert f"{url}: cannot read (the server answered 404" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow  # over a second: out of make test-fast (under a minute)
def test_url_that_changes_while_the_build_runs_fails_the_build(tmp_path, server):
    server.swap["/changes.jsonl"] = CHAT.read_bytes().replace(b"e", b"a")  # same size, other bytes
    done = padprep_cli("build", server.url("changes.jsonl"), "--tokenizer", str(TOK), "--output", str(tmp_path / "out"))
    assert done.returncode == 2, done.stderr
    assert "its content changed while the build ran" in done.stderr and "run the build again" in done.stderr
    assert not (tmp_path / "out").exists()


def test_digest_is_checked_at_the_end_of_the_stream(server):
    bad = "0" * 64
    with pytest.raises(Exception, match="content changed"):
        list(read_records(server.url("chat.jsonl"), expect=bad))
    good = hashlib.sha256(CHAT.read_bytes()).hexdigest()
    assert len(list(read_records(server.url("chat.jsonl"), expect=good))) == len(CHAT.read_text().splitlines())


@pytest.mark.slow  # over a second: out of make test-fast (under a minute)
def test_object_store_url_without_its_backend_says_what_to_install(tmp_path):
    pytest.importorskip("fsspec")
    try:
        import s3fs  # noqa: F401

        pytest.skip("s3fs is installed: the missing-backend message cannot be shown")
    except ImportError:
        pass
    done = padprep_cli("build", "s3://bucket/chat.jsonl", "--tokenizer", str(TOK), "--output", str(tmp_path / "out"))
    assert done.returncode == 2
    assert "s3://bucket/chat.jsonl: cannot read" in done.stderr and "padprep[cloud]" in done.stderr
