"""The command line as CI runs it: exit codes, messages, determinism, atomic output, inspect --verify."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa

from tests.conftest import SAMPLE, padprep_cli, tree_bytes, write_jsonl

TOK = str(SAMPLE / "tokenizer")
CHAT = str(SAMPLE / "chat.jsonl")


def build_sample(out: Path, *extra: str):
    return padprep_cli("build", CHAT, "--tokenizer", TOK, "--output", str(out), *extra)


def test_build_then_inspect_verify(tmp_path):
    out = tmp_path / "out"
    res = build_sample(out)
    assert res.returncode == 0, res.stderr
    assert "rows written" in res.stdout and "48" in res.stdout
    assert "pad_is_eos" in res.stdout + res.stderr  # the eos fallback for padding is reported, never silent
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["totals"]["records_read"] == 48 == manifest["totals"]["rows_written"]
    assert manifest["tokenizer"]["pad_origin"].startswith("fallback")
    assert manifest["totals"]["padding_fraction"] < 0.05
    res = padprep_cli("inspect", str(out), "--verify", "--show", "1")
    assert res.returncode == 0, res.stderr
    assert "verify: ok" in res.stdout
    assert "[[" in res.stdout and "]]" in res.stdout  # plain marking of trained tokens when not a terminal
    assert "<pad x" in res.stdout or manifest["totals"]["pad_tokens"] == 0


def test_two_builds_are_byte_identical(tmp_path):
    assert build_sample(tmp_path / "a", "--seed", "7").returncode == 0
    assert build_sample(tmp_path / "b", "--seed", "7").returncode == 0
    assert tree_bytes(tmp_path / "a") == tree_bytes(tmp_path / "b")
    assert build_sample(tmp_path / "c", "--seed", "8").returncode == 0
    assert tree_bytes(tmp_path / "a") != tree_bytes(tmp_path / "c")


def test_existing_output_needs_overwrite(tmp_path):
    out = tmp_path / "out"
    assert build_sample(out).returncode == 0
    res = build_sample(out, "--max-length", "300")  # a different build into the same directory
    assert res.returncode == 2
    assert "--overwrite" in res.stderr
    assert build_sample(out, "--max-length", "300", "--overwrite").returncode == 0


def test_repeated_build_is_up_to_date_and_force_rebuilds(tmp_path):
    out = tmp_path / "out"
    assert build_sample(out).returncode == 0
    before = tree_bytes(out)
    res = build_sample(out)
    assert res.returncode == 0 and "is up to date" in res.stdout and "records read" not in res.stdout
    assert tree_bytes(out) == before
    (out / "manifest.json").touch()
    stamp = (out / "manifest.json").stat().st_mtime_ns
    res = build_sample(out, "--force")
    assert res.returncode == 0 and "records read" in res.stdout  # built again, without --overwrite
    assert (out / "manifest.json").stat().st_mtime_ns != stamp
    assert tree_bytes(out) == before  # and the same bytes


def test_build_key_hashes_content_not_paths(tmp_path):
    """Same bytes under other names: up to date. One changed byte in an input, a tokenizer file or an
    option, or a shard gone: built again."""
    import shutil

    out = tmp_path / "out"
    assert build_sample(out).returncode == 0
    key = json.loads((out / "manifest.json").read_text())["build_key"]
    data, tok = tmp_path / "elsewhere.jsonl", tmp_path / "tok-copy"
    shutil.copyfile(CHAT, data)
    shutil.copytree(TOK, tok)
    same = padprep_cli("build", str(data), "--tokenizer", str(tok), "--output", str(out))
    assert same.returncode == 0 and "is up to date" in same.stdout

    def rebuilt(*args: str, same_key: bool = False) -> bool:
        res = padprep_cli("build", *args, "--output", str(out), "--overwrite")
        assert res.returncode == 0, res.stderr
        fresh = json.loads((out / "manifest.json").read_text())["build_key"]
        return "is up to date" not in res.stdout and (fresh == key) == same_key

    data.write_bytes(data.read_bytes().replace(b"Paris", b"Lyon", 1))
    assert b"Lyon" in data.read_bytes() and rebuilt(str(data), "--tokenizer", TOK)
    assert build_sample(out, "--overwrite").returncode == 0  # back to the original
    config = tok / "tokenizer_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "model_max_length": 7}))
    assert rebuilt(CHAT, "--tokenizer", str(tok))
    assert build_sample(out, "--overwrite").returncode == 0
    assert rebuilt(CHAT, "--tokenizer", TOK, "--train-on", "last")
    assert build_sample(out, "--overwrite").returncode == 0
    gone = next(out.glob("bucket-*.arrow"))
    gone.unlink()
    assert rebuilt(CHAT, "--tokenizer", TOK, same_key=True) and gone.is_file()


def test_malformed_record_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(Path(CHAT).read_text().splitlines()[0] + "\n{not json\n")
    res = padprep_cli(
        "build", str(bad), "--tokenizer", TOK, "--output", str(tmp_path / "o"), "--strict", "--pad-token", "<|endoftext|>"
    )
    assert res.returncode != 0
    assert f"{bad}:2" in res.stderr + res.stdout
    assert "invalid JSON" in res.stderr + res.stdout
    assert not (tmp_path / "o").exists()  # a failed build leaves no output directory
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".o")]  # nor a temp dir


def test_strict_preflight_stops_on_hazard(tmp_path):
    res = build_sample(tmp_path / "o", "--strict")
    assert res.returncode == 3
    assert "pad_is_eos" in res.stderr
    assert not (tmp_path / "o").exists()
    ok = build_sample(tmp_path / "o", "--strict", "--pad-token", "<|endoftext|>")
    assert ok.returncode == 0, ok.stderr


def test_missing_tokenizer_and_template_are_usage_errors(tmp_path):
    res = padprep_cli("build", CHAT, "--tokenizer", str(tmp_path / "nope"), "--output", str(tmp_path / "o"))
    assert res.returncode == 2 and "nope" in res.stderr
    res = padprep_cli("build", CHAT, "--tokenizer", str(SAMPLE / "tokenizer-bos"), "--output", str(tmp_path / "o"))
    assert res.returncode == 2 and "--chat-template" in res.stderr
    res = padprep_cli("build", str(tmp_path / "*.nothing"), "--tokenizer", TOK, "--output", str(tmp_path / "o"))
    assert res.returncode == 2 and "no file matches" in res.stderr


def test_hub_id_without_network_fails_clearly(tmp_path, monkeypatch):
    res = padprep_cli("build", CHAT, "--tokenizer", "padprep-test/no-such-tokenizer", "--output", str(tmp_path / "o"))
    assert res.returncode == 2
    assert "padprep-test/no-such-tokenizer" in res.stderr and "Hub" in res.stderr


def test_glob_and_several_inputs(tmp_path):
    lines = Path(CHAT).read_text().splitlines()
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.jsonl").write_text("\n".join(lines[:20]) + "\n")
    (tmp_path / "in" / "b.jsonl").write_text("\n".join(lines[20:]) + "\n")
    res = padprep_cli("build", str(tmp_path / "in" / "*.jsonl"), "--tokenizer", TOK, "--output", str(tmp_path / "o"))
    assert res.returncode == 0, res.stderr
    manifest = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert [Path(i["path"]).name for i in manifest["inputs"]] == ["a.jsonl", "b.jsonl"]
    assert [i["rows_written"] for i in manifest["inputs"]] == [20, 28]
    assert all(len(i["sha256"]) == 64 for i in manifest["inputs"])


def test_verify_catches_tampering(tmp_path):
    out = tmp_path / "out"
    assert build_sample(out).returncode == 0
    manifest = json.loads((out / "manifest.json").read_text())
    shard = out / manifest["shards"][0]["file"]
    with pa.memory_map(str(shard)) as src:
        table = pa.ipc.open_stream(src).read_all()
    labels = table.column("labels").combine_chunks()
    seq_len = labels.type.list_size
    values = labels.values.to_numpy().copy().reshape(-1, seq_len)
    mask = table.column("attention_mask").combine_chunks().values.to_numpy().reshape(-1, seq_len)
    values[0, :] = np.where(mask[0] == 0, 5, values[0])  # a label on padding: must be caught
    if (mask[0] == 1).all():
        values[0, 0] = 5  # no padding in this row: a label that differs from its input id instead
    new = pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1), pa.int32()), seq_len)
    table = table.set_column(2, "labels", new)
    with pa.OSFile(str(shard), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    res = padprep_cli("inspect", str(out), "--verify")
    assert res.returncode == 1
    assert "sha256" in res.stdout
    res = padprep_cli("inspect", str(out), "--json", "--verify")
    assert res.returncode == 1
    assert json.loads(res.stdout)["verify"]["problems"]


def test_inspect_json_reports_totals(tmp_path):
    out = tmp_path / "out"
    assert build_sample(out, "--buckets", "128,256,512,1024").returncode == 0
    res = padprep_cli("inspect", str(out), "--json")
    assert res.returncode == 0
    stats = json.loads(res.stdout)
    assert [b["seq_len"] for b in stats["buckets"]] == [128, 256, 512, 1024]
    assert stats["records"]["records_read"] == 48
    assert stats["totals"]["rows"] == 48
    assert stats["totals"]["unbucketed_padding_fraction"] > stats["totals"]["padding_fraction"]


def test_inspect_on_non_output_is_usage_error(tmp_path):
    res = padprep_cli("inspect", str(tmp_path))
    assert res.returncode == 2 and "manifest.json" in res.stderr


def test_records_of_stdin(tmp_path):
    res = padprep_cli("build", "-", "--tokenizer", TOK, "--output", str(tmp_path / "o"), input=Path(CHAT).read_text())
    assert res.returncode == 0, res.stderr
    assert json.loads((tmp_path / "o" / "manifest.json").read_text())["totals"]["rows_written"] == 48


def test_explicit_bucket_too_small_drops_long_rows(tmp_path):
    rec = json.loads(Path(CHAT).read_text().splitlines()[0])
    long = {"messages": [{"role": "user", "content": "word " * 200}, {"role": "assistant", "content": "ok"}]}
    longer = {"messages": [{"role": "user", "content": "word " * 5000}, {"role": "assistant", "content": "ok"}]}
    src = write_jsonl(tmp_path / "in.jsonl", [rec, long, longer])  # dropped once tokenized, and before
    res = padprep_cli("build", str(src), "--tokenizer", TOK, "--output", str(tmp_path / "o"), "--buckets", "64,128")
    assert res.returncode == 0, res.stderr
    totals = json.loads((tmp_path / "o" / "manifest.json").read_text())["totals"]
    assert (totals["rows_written"], totals["dropped"]) == (1, 2)
    rejects = [json.loads(x) for x in (tmp_path / "o" / "rejects.jsonl").read_text().splitlines()]
    assert [r["line"] for r in rejects] == [2, 3]
    for reject in rejects:  # the limit named as given: no --max-length was
        assert "longer than the largest bucket of --buckets (" in reject["reason"], reject
        assert "--max-length" not in reject["reason"], reject
    assert " > 128 tokens) with --truncation drop" in rejects[0]["reason"]  # tokenized, then dropped
