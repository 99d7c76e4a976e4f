"""``padprep build --recipe``: counts per source, eval and train disjoint by conversation on data with
duplicates, the same bytes on rebuild, flags over the file, and bad recipes in one line before any work."""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import SAMPLE, padprep_cli, shared_file, tree_bytes, unpadded_rows, write_jsonl

TOK = SAMPLE / "tokenizer"


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """Chats where every fourth conversation appears three times (public sets repeat records too), alpaca
    records under renamed keys, and the shared glaive tool-call file (ShareGPT) read natively."""
    root = tmp_path_factory.mktemp("mix")
    chats = [json.loads(line) for line in (SAMPLE / "chat.jsonl").read_text().splitlines()]
    with_dups = []
    for i, c in enumerate(chats):
        with_dups += [c] * (3 if i % 4 == 0 else 1)
    write_jsonl(root / "chat.jsonl", with_dups)
    alpaca = json.loads((SAMPLE / "formats" / "alpaca.json").read_text())
    write_jsonl(
        root / "renamed.jsonl", [{"ask": r["instruction"], "input": r.get("input", ""), "answer": r["output"]} for r in alpaca]
    )
    (root / "glaive.json").write_bytes(shared_file("glaive_toolcall_en_demo.json").read_bytes())
    return root


def _recipe(root: Path, text: str, name: str = "recipe.yaml") -> Path:
    path = root / name
    path.write_text(text.replace("DATA", str(root)).replace("TOK", str(TOK)))
    return path


RECIPE = """tokenizer: TOK
seed: 3
sources:
  - path: DATA/chat.jsonl
    weight: 2
  - path: DATA/renamed.jsonl
    format: alpaca
    fields: {instruction: ask, output: answer}
  - path: DATA/glaive.json
    count: 120
eval:
  fraction: 0.1
"""


@pytest.fixture(scope="module")
def built(data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("built") / "out"
    done = padprep_cli("build", "--recipe", str(_recipe(data, RECIPE)), "-o", str(out))
    assert done.returncode == 0, done.stderr
    return out


def _manifest(side: Path) -> dict:
    return json.loads((side / "manifest.json").read_text())


def _rows(side: Path) -> list[tuple]:
    return [tuple(ids.tolist()) for ids, _ in unpadded_rows(side)]


def test_counts_per_source_add_up(built, data):
    train, held = _manifest(built / "train"), _manifest(built / "eval")
    chat, renamed, glaive = train["mixture"]["sources"]
    chats = len((data / "chat.jsonl").read_text().splitlines())
    assert (chat["records"], chat["sampled"]) == (chats, chats)
    # weight 2 on train only; every copy of a held-out conversation (1 or 3 of them) leaves train
    assert chat["train"] % 2 == 0 and chat["eval"] <= chats - chat["train"] // 2 <= 3 * chat["eval"]
    assert renamed["records"] == renamed["sampled"] and renamed["rows_written"] > 0  # its own format and fields
    assert glaive["records"] == len(json.loads((data / "glaive.json").read_text())) and glaive["sampled"] == 120
    assert glaive["eval"] == round(0.1 * 120) and glaive["train"] <= 120 - glaive["eval"]  # the file repeats records too
    for side, manifest in (("train", train), ("eval", held)):
        sources = manifest["mixture"]["sources"]
        t = manifest["totals"]
        assert manifest["mixture"]["side"] == side
        assert t["records_read"] == sum(s[side] for s in sources)
        assert t["records_read"] == t["rows_written"] + t["rejected"] + t["dropped"]
        assert sum(s["rows_written"] for s in sources) == t["rows_written"]
        assert sum(s["real_tokens"] for s in sources) == t["real_tokens"]
    assert [s["eval"] for s in held["mixture"]["sources"]] == [s["eval"] for s in train["mixture"]["sources"]]


def test_eval_never_holds_a_conversation_train_holds(built):
    train, held = _rows(built / "train"), _rows(built / "eval")
    assert held and not set(train) & set(held)
    assert len(held) == len(set(held))  # each held-out conversation once, though the data repeats it
    assert max(train.count(r) for r in set(train)) >= 2  # the weight-2 source is in train twice


def test_same_recipe_same_bytes_and_up_to_date(built, data, tmp_path):
    recipe = _recipe(data, RECIPE)
    again = padprep_cli("build", "--recipe", str(recipe), "-o", str(tmp_path / "out"))
    assert again.returncode == 0, again.stderr
    assert tree_bytes(tmp_path / "out") == tree_bytes(built)
    same = padprep_cli("build", "--recipe", str(recipe), "-o", str(tmp_path / "out"))
    assert same.returncode == 0 and same.stdout.count("is up to date") == 2, same.stdout


def test_another_seed_changes_the_draw_not_the_counts(built, data, tmp_path):
    recipe = _recipe(data, RECIPE.replace("seed: 3", "seed: 4"), "seed4.yaml")
    done = padprep_cli("build", "--recipe", str(recipe), "-o", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    counts = ("records", "sampled", "eval")  # train may differ: a held-out conversation takes all its copies
    for side in ("train", "eval"):
        a, b = (_manifest(root / side)["mixture"]["sources"] for root in (built, tmp_path / "out"))
        assert [[s[k] for k in counts] for s in a][1:] == [[s[k] for k in counts] for s in b][1:]
    assert set(_rows(tmp_path / "out" / "eval")) != set(_rows(built / "eval"))


def test_flags_on_the_command_line_override_the_recipe(data, tmp_path):
    recipe = _recipe(data, RECIPE.replace("seed: 3", "seed: 3\nmax_length: 100000"), "long.yaml")
    done = padprep_cli("build", "--recipe", str(recipe), "-o", str(tmp_path / "out"), "--max-length", "300")
    assert done.returncode == 0, done.stderr
    manifest = _manifest(tmp_path / "out" / "train")
    assert manifest["options"]["max_length"] == 300 and manifest["totals"]["dropped"] > 0


def test_inspect_shows_the_mixture(built):
    done = padprep_cli("inspect", str(built / "train"), "--json")
    assert done.returncode == 0, done.stderr
    mixture = json.loads(done.stdout)["mixture"]
    assert mixture["side"] == "train" and abs(sum(s["token_share"] for s in mixture["sources"]) - 1) < 1e-9
    table = padprep_cli("inspect", str(built / "train"))
    assert "mixture (train side of a recipe)" in table.stdout and "tokens %" in table.stdout


@pytest.mark.parametrize(
    "change, said",
    [
        (("count: 120", "count: 100000"), "sources[2].count: 100,000 is more than the source holds (300 records in"),
        (("count: 120", "count: 120\n    weight: 2"), "sources[2]: `count` and `weight` exclude each other"),
        (("fraction: 0.1", "count: 100000"), "eval: 100,000 held-out conversations is not less than the"),
        (("glaive.json", "missing.json"), "missing.json: no such file"),
        (("seed: 3", "seed: 3\nmax_lenght: 5"), "max_lenght: unknown key"),
    ],
)
def test_bad_recipes_fail_in_one_line_before_any_work(data, tmp_path, change, said):
    recipe = _recipe(data, RECIPE.replace(*change), "bad.yaml")
    done = padprep_cli("build", "--recipe", str(recipe), "-o", str(tmp_path / "out"))
    errors = [line for line in done.stderr.splitlines() if line.startswith("padprep: error:")]
    assert done.returncode == 2 and len(errors) == 1 and said in errors[0], done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "out").exists()


def test_a_recipe_takes_no_inputs_beside_it(data, tmp_path):
    done = padprep_cli("build", str(data / "chat.jsonl"), "--recipe", str(_recipe(data, RECIPE)), "-o", str(tmp_path / "o"))
    assert done.returncode == 2 and "a recipe names its inputs under `sources`" in done.stderr


SMALL = """tokenizer: TOK
seed: 3
sources: [DATA/chat.jsonl]
eval:
  fraction: 0.2
"""


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess, float]:
    """The sample chats as a recipe with an eval split: its output, the CLI's run, and the run's wall time."""
    root = tmp_path_factory.mktemp("small")
    write_jsonl(root / "chat.jsonl", [json.loads(line) for line in (SAMPLE / "chat.jsonl").read_text().splitlines()])
    started = time.monotonic()
    done = padprep_cli("build", "--recipe", str(_recipe(root, SMALL)), "-o", str(root / "out"))
    assert done.returncode == 0, done.stderr
    return root / "out", done, time.monotonic() - started


@pytest.mark.slow  # over a second: out of make test-fast (under a minute)
def test_each_side_reports_its_own_time(small):
    _, done, wall = small
    times = [float(t) for t in re.findall(r"│ time +│ +([0-9.]+)s", done.stdout)]
    assert len(times) == 2, done.stdout
    assert sum(times) <= wall, (times, wall)  # not the whole build's time, twice


def test_the_eval_side_counts_from_zero():
    from padprep.run.progress import Throughput

    now = [0.0]
    progress = Throughput(clock=lambda: now[0])
    progress.start(1000)
    progress.advance(records=800, tokens=1_000_000)  # the train side
    now[0] = 10.0
    progress.start(100)  # the eval side's pass 1
    now[0] = 10.5
    progress.advance(records=80, tokens=1_000)
    snap = progress.snapshot()
    assert (snap.records, snap.tokens, snap.tokens_per_second) == (80, 1_000, 2_000.0)


def test_inspect_on_the_recipe_output_points_to_its_sides(small):
    out, _, _ = small
    done = padprep_cli("inspect", str(out))
    errors = [line for line in done.stderr.splitlines() if line.startswith("padprep: error:")]
    assert done.returncode == 2 and len(errors) == 1, done.stderr
    assert f"inspect {out / 'eval'} or {out / 'train'}" in errors[0], errors[0]
