"""Every row traced to its record: each shard's sidecar names, per row (per sequence of a packed row), the input
and line it came from; ``inspect --show`` prints it and ``inspect --source FILE:N`` finds the row of a record.

Checked against the inputs: every record carries a unique tag in its question, and the decoded row must hold
the tag of the record its source names (and no other), for JSON Lines, a JSON array and Parquet in one build,
shuffled, bucketed and packed.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from tokenizers import Tokenizer

from padprep.layout.shards import read_shard, read_sources
from tests.conftest import SAMPLE, padprep_cli, write_jsonl

TOK = SAMPLE / "tokenizer"
TAG = re.compile(r"\{tag (\w+)\}")


def _record(tag: str, answer: str) -> dict:
    return {
        "messages": [
            {"role": "user", "content": f"{{tag {tag}}} What is {answer}?"},
            {"role": "assistant", "content": f"It is {answer}. " * (1 + len(answer) % 7)},
        ]
    }


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> tuple[list[Path], dict[tuple[str, int], str]]:
    """Three inputs of three kinds, and each record's tag by (file, number in the file's unit)."""
    tmp = tmp_path_factory.mktemp("sources")
    expected: dict[tuple[str, int], str] = {}
    lines = [_record(f"a{i}", f"alpha {i}") for i in range(30)]
    a = tmp / "a.jsonl"
    text = "".join(json.dumps(r) + "\n" for r in lines[:10]) + "\n" + "not json\n"  # a blank line and a bad record
    text += "".join(json.dumps(r) + "\n" for r in lines[10:])
    a.write_text(text)
    for n, line in enumerate(text.splitlines(), start=1):
        if line.startswith("{"):
            expected[(str(a), n)] = TAG.search(line).group(1)
    b = write_jsonl(tmp / "b.json", [])  # a JSON array
    records = [_record(f"b{i}", f"beta {i}") for i in range(25)]
    b.write_text(json.dumps(records))
    expected.update({(str(b), i): f"b{i}" for i in range(25)})
    c = tmp / "c.parquet"
    records = [_record(f"c{i}", f"gamma {i}") for i in range(20)]
    pq.write_table(pa.Table.from_pylist(records), c, row_group_size=6)
    expected.update({(str(c), i): f"c{i}" for i in range(20)})
    return [a, b, c], expected


def _rows(out: Path) -> list[tuple[str, int, list[tuple[str, int]]]]:
    """Every row's decoded text, its index and its sequences' sources as (path, number)."""
    manifest = json.loads((out / "manifest.json").read_text())
    paths = [i["path"] for i in manifest["inputs"]]
    tok = Tokenizer.from_file(str(TOK / "tokenizer.json"))
    rows = []
    for shard in manifest["shards"]:
        cols = read_shard(out / shard["file"])
        sources = read_sources(out / shard["sources"])
        assert shard["sources"].endswith(".sources.parquet") and not shard["sources"].endswith(".arrow")
        for r in range(cols["input_ids"].shape[0]):
            at = sources["row"] == r
            here = [(paths[i], int(n)) for i, n in zip(sources["source_input"][at], sources["source_line"][at])]
            ids = cols["input_ids"][r][cols["attention_mask"][r] == 1]
            rows.append((tok.decode(ids.tolist(), skip_special_tokens=False), r, here))
    return rows


@pytest.mark.parametrize("layout", [("--seed", "3"), ("--pack", "--max-length", "256", "--seed", "3")])
def test_every_row_maps_back_to_the_record_it_came_from(inputs, tmp_path, layout):
    files, expected = inputs
    out = tmp_path / "out"
    res = padprep_cli("build", *map(str, files), "--tokenizer", str(TOK), "-o", str(out), "--max-reject-rate", "0.2", *layout)
    assert res.returncode == 0, res.stderr
    seen = []
    for text, _, sources in _rows(out):
        assert sources, "a row without its source"
        assert TAG.findall(text) == [expected[s] for s in sources]  # each sequence's tag, in order, and no other
        seen += sources
    assert sorted(seen) == sorted(expected)  # every record written once, and only those
    assert padprep_cli("inspect", str(out), "--verify").returncode == 0


def test_inspect_shows_the_source_and_finds_the_row_of_a_record(inputs, tmp_path):
    files, expected = inputs
    out = tmp_path / "out"
    res = padprep_cli("build", *map(str, files), "--tokenizer", str(TOK), "-o", str(out), "--max-reject-rate", "0.2")
    assert res.returncode == 0, res.stderr
    shown = padprep_cli("inspect", str(out), "--show", "3")
    assert shown.returncode == 0 and shown.stdout.count("from ") >= 3, shown.stdout
    for (path, n), tag in [next(iter(expected.items())), *list(expected.items())[-2:]]:
        res = padprep_cli("inspect", str(out), "--source", f"{path}:{n}")
        assert res.returncode == 0, res.stderr
        assert f"{{tag {tag}}}" in res.stdout and len(TAG.findall(res.stdout)) == 1, res.stdout
    # the bad record (line 12 of a.jsonl): no row, and the reason it has none
    res = padprep_cli("inspect", str(out), "--source", f"{files[0]}:12")
    errors = [line for line in res.stderr.splitlines() if line.startswith("padprep: error:")]
    assert res.returncode != 0 and len(errors) == 1 and "invalid_json" in errors[0], res.stderr
    res = padprep_cli("inspect", str(out), "--source", "elsewhere.jsonl:3")
    assert res.returncode == 2 and "not an input of this build" in res.stderr


def test_a_damaged_sidecar_is_a_verify_breach(inputs, tmp_path):
    files, _ = inputs
    out = tmp_path / "out"
    assert padprep_cli("build", str(files[1]), "--tokenizer", str(TOK), "-o", str(out)).returncode == 0
    sidecar = next(out.glob("*.sources.parquet"))
    sidecar.write_bytes(sidecar.read_bytes()[:-10])
    res = padprep_cli("inspect", str(out), "--verify")
    assert res.returncode == 1 and f"{sidecar.name}: sha256 differs" in res.stdout


def test_every_pair_maps_back_to_its_record(tmp_path):
    q = "{tag p%d} Which city is the capital of France, asked %d times?"
    pairs = [
        {
            "prompt": [{"role": "user", "content": q % (i, i)}],
            "chosen": [{"role": "assistant", "content": "Paris." * (1 + i % 5)}],
            "rejected": [{"role": "assistant", "content": "Lyon."}],
        }
        for i in range(40)
    ]
    src = write_jsonl(tmp_path / "pairs.jsonl", pairs)
    out = tmp_path / "out"
    assert padprep_cli("build", str(src), "--tokenizer", str(TOK), "-o", str(out), "--seed", "1").returncode == 0
    manifest = json.loads((out / "manifest.json").read_text())
    tok = Tokenizer.from_file(str(TOK / "tokenizer.json"))
    seen = []
    for shard in manifest["shards"]:
        table = pa.ipc.open_stream(pa.memory_map(str(out / shard["file"]))).read_all()
        assert table.column_names == ["prompt_ids", "chosen_ids", "rejected_ids"]  # the sources are not in the shard
        sources = read_sources(out / shard["sources"])
        for r, line in zip(sources["row"], sources["source_line"]):
            prompt = tok.decode(table.column("prompt_ids")[int(r)].as_py(), skip_special_tokens=False)
            assert TAG.findall(prompt) == [f"p{line - 1}"]
            seen.append(int(line))
    assert sorted(seen) == list(range(1, 41))
    shown = padprep_cli("inspect", str(out), "--show", "2")
    assert f"from {src}:" in shown.stdout, shown.stdout


def test_show_takes_selectors_and_json_honours_them(tmp_path):
    out = tmp_path / "out"
    chat = SAMPLE / "chat.jsonl"
    assert padprep_cli("build", str(chat), "--tokenizer", str(TOK), "-o", str(out), "--seed", "2").returncode == 0
    manifest = json.loads((out / "manifest.json").read_text())
    shards = manifest["shards"]

    def rows(*args: str) -> list[dict]:
        res = padprep_cli("inspect", str(out), "--json", *args)
        assert res.returncode == 0, res.stderr
        return json.loads(res.stdout)["rows"]

    big = shards[-1]["seq_len"]
    assert {r["bucket"] for r in rows("--show", "50", "--bucket", str(big))} == {big}
    every = rows("--show", "100")
    assert len(every) == 48 and [(r["shard"], r["row"]) for r in every] == [
        (s["file"], i) for s in shards for i in range(s["rows"])
    ]
    assert rows("--show", "3") == every[:3]
    assert rows("--row", "7") == [every[7]]
    assert rows("--row", f"{every[7]['shard']}:{every[7]['row']}") == [every[7]]
    drawn = rows("--show", "4", "--sample", "11")
    assert drawn == rows("--show", "4", "--sample", "11") and drawn != every[:4] and len(drawn) == 4  # seeded, not the first
    assert all(r in every for r in drawn) and drawn == sorted(drawn, key=every.index)  # shown in the output's order
    matched = rows("--show", "100", "--grep", r"\bgit\b")
    assert matched and all(re.search(r"\bgit\b", r["text"]) for r in matched)
    assert len(matched) == sum(bool(re.search(r"\bgit\b", r["text"])) for r in every)
    assert all(r["trained"] and all(t in r["text"] for t in r["trained"]) for r in every)
    # the terminal view picks the same rows
    shown = padprep_cli("inspect", str(out), "--show", "4", "--sample", "11")
    assert [f"{r['shard']} row {r['row']}" for r in drawn] == re.findall(r"(bucket-\S+ row \d+)", shown.stdout)
    res = padprep_cli("inspect", str(out), "--grep", "no such text anywhere")
    assert res.returncode == 1 and "matches the selectors" in res.stderr
    res = padprep_cli("inspect", str(out), "--row", "999")
    assert res.returncode == 2 and "the output has 48 rows" in res.stderr
