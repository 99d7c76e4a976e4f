"""``padprep inspect --html``: the report opened in headless Chromium, as a user would open it.

The page is checked as rendered: a screenshot that is not blank, and, from the DOM, the tokens the page
colours as trained are exactly the shard row's positions with a label other than -100 (SFT, packed), the
sequence boundaries are the row's ``seq_lens``, and a pair's chosen and rejected tokens are the shard's.
Chromium is Debian's package (``.ci/run`` installs it) driven by Playwright; without them the tests skip
saying so, and fail under CI (``PADPREP_REQUIRE_ACCEPTANCE``).
"""

from __future__ import annotations

import json
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from padprep.output.inspection import read_listed_shard
from padprep.output.pair_inspection import read_pair_shard
from padprep.schema import IGNORE_INDEX, SEQ_LENS
from tests.conftest import REQUIRE_ACCEPTANCE, SAMPLE, padprep_cli, write_jsonl

TOK = SAMPLE / "tokenizer"
CHAT = SAMPLE / "chat.jsonl"
_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _unavailable(reason: str):
    if REQUIRE_ACCEPTANCE:
        pytest.fail(f"{reason}, and PADPREP_REQUIRE_ACCEPTANCE is set (CI installs it: .ci/run)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser():
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        _unavailable("no chromium on PATH (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed (pip install -e '.[test]')")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=_FLAGS)
        yield b
        b.close()


def open_report(browser, build_args: list[str], tmp_path: Path):
    out, report = tmp_path / "out", tmp_path / "report.html"
    res = padprep_cli("build", *build_args, "--tokenizer", str(TOK), "-o", str(out))
    assert res.returncode == 0, res.stderr
    res = padprep_cli("inspect", str(out), "--html", str(report))
    assert res.returncode == 0, res.stderr
    assert f"report: {report}" in res.stdout
    text = report.read_text(encoding="utf-8")
    assert "<script" not in text and "http://" not in text.replace("http://www.w3.org/2000/svg", "")  # self-contained
    page = browser.new_page(viewport={"width": 1200, "height": 1600})
    page.goto(report.as_uri())
    shot = page.screenshot(full_page=False)
    assert _distinct_pixels(shot) > 50, "the screenshot is blank"
    return out, page


def rows_on_page(page) -> list[dict]:
    """Each row article: its shard and row, and per token span its position, label and whether it is coloured as trained."""
    return page.evaluate(
        """() => {
        const trained = getComputedStyle(document.querySelector('.legend .t.trained')).backgroundColor;
        const eot = getComputedStyle(document.querySelector('.legend .t.trained.special')).backgroundColor;
        return [...document.querySelectorAll('article.row')].map(a => ({
            file: a.dataset.file, row: +a.dataset.row,
            boundaries: a.querySelectorAll('.boundary').length,
            tokens: [...a.querySelectorAll('span.t[data-i]')].map(s => {
                const bg = getComputedStyle(s).backgroundColor;
                return [+s.dataset.i, +s.dataset.label, bg === trained || bg === eot];
            }),
        }));
    }"""
    )


def check_trained_colouring(out: Path, rows: list[dict]) -> None:
    manifest = json.loads((out / "manifest.json").read_text())
    shards = {s["file"]: s for s in manifest["shards"]}
    assert rows, "no row on the page"
    assert {r["file"] for r in rows} >= {s["file"] for s in manifest["shards"][:1]}
    buckets = {shards[r["file"]]["seq_len"] for r in rows}
    assert buckets == {s["seq_len"] for s in manifest["shards"]}  # every bucket shown
    for r in rows:
        cols = read_listed_shard(out, shards[r["file"]])
        labels, mask = cols["labels"][r["row"]], cols["attention_mask"][r["row"]]
        positions = [t[0] for t in r["tokens"]]
        assert positions == np.flatnonzero(mask).tolist()  # every real token once, in order
        assert [t[1] for t in r["tokens"]] == labels[positions].tolist()
        coloured = [t[0] for t in r["tokens"] if t[2]]
        assert coloured == np.flatnonzero((labels != IGNORE_INDEX) & (mask == 1)).tolist(), (r["file"], r["row"])
        if SEQ_LENS in cols:
            offsets = cols["seq_lens_offsets"]
            assert r["boundaries"] == offsets[r["row"] + 1] - offsets[r["row"]]


def test_an_sft_report_colours_exactly_the_trained_tokens(browser, tmp_path):
    out, page = open_report(browser, [str(CHAT)], tmp_path)
    check_trained_colouring(out, rows_on_page(page))
    assert page.locator("svg").count() >= 3  # lengths, buckets, trained share


def test_a_packed_report_marks_every_sequence(browser, tmp_path):
    out, page = open_report(browser, [str(CHAT), "--pack", "--max-length", "700"], tmp_path)
    rows = rows_on_page(page)
    check_trained_colouring(out, rows)
    assert max(r["boundaries"] for r in rows) >= 2


def test_a_pair_report_shows_prompt_chosen_and_rejected(browser, tmp_path):
    q = [{"role": "user", "content": "What is the capital of France?"}]
    pairs = [
        {"prompt": q, "chosen": [{"role": "assistant", "content": c}], "rejected": [{"role": "assistant", "content": r}]}
        for c, r in (("Paris.", "Lyon."), ("It is Paris, on the Seine.", "Marseille, I think."))
    ]
    out, page = open_report(browser, [str(write_jsonl(tmp_path / "pairs.jsonl", pairs))], tmp_path)
    manifest = json.loads((out / "manifest.json").read_text())
    shown = page.evaluate(
        """() => [...document.querySelectorAll('article.pair')].map(a => ({file: a.dataset.file,
            sides: Object.fromEntries([...a.querySelectorAll('.side')].map(d => [d.dataset.side,
                [...d.querySelectorAll('span.t')].map(s => +s.dataset.id)]))}))"""
    )
    assert [p["file"] for p in shown] == [s["file"] for s in manifest["shards"]]
    for p in shown:
        cols = read_pair_shard(out, next(s for s in manifest["shards"] if s["file"] == p["file"]))
        for side in ("prompt", "chosen", "rejected"):
            assert p["sides"][side] == cols[f"{side}_ids"][0].tolist()


def test_the_report_is_bounded_and_never_written_into_the_output(tmp_path):
    out = tmp_path / "out"
    assert padprep_cli("build", str(CHAT), "--tokenizer", str(TOK), "-o", str(out)).returncode == 0
    from padprep.output.figures import InspectError
    from padprep.output.report import write_report

    shown = write_report(out, tmp_path / "small.html", max_rows=3, max_tokens=200)
    page = (tmp_path / "small.html").read_text()
    assert shown["capped"] and shown["rows"] <= 3 and shown["tokens"] <= 200
    assert "the page's cap" in page
    with pytest.raises(InspectError, match="inside the output"):
        write_report(out, out / "report.html")
    assert not (out / "report.html").exists()


def _distinct_pixels(png: bytes) -> int:
    """How many distinct byte values the decompressed image data holds (a blank page: a handful)."""
    pos, data = 8, b""
    while pos < len(png):
        length, kind = struct.unpack(">I4s", png[pos : pos + 8])
        if kind == b"IDAT":
            data += png[pos + 8 : pos + 8 + length]
        pos += 12 + length
    raw = zlib.decompress(data)
    return len(set(raw[::7]))


def test_the_report_has_lengths_per_bucket_and_per_recipe_source(tmp_path):
    lines = CHAT.read_text().splitlines(keepends=True)
    (tmp_path / "a.jsonl").write_text("".join(lines[:30]))
    (tmp_path / "b.jsonl").write_text("".join(lines[30:]))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"tokenizer: {TOK}\nsources:\n  - path: {tmp_path / 'a.jsonl'}\n  - path: {tmp_path / 'b.jsonl'}\n")
    assert padprep_cli("build", "--recipe", str(recipe), "-o", str(tmp_path / "out")).returncode == 0
    from padprep.output.report import write_report

    write_report(tmp_path / "out" / "train", tmp_path / "r.html")
    page = (tmp_path / "r.html").read_text()
    assert "lengths per bucket" in page and "lengths per recipe source" in page
    assert "sources[0]: 30," in page and "sources[1]: 18," in page  # each source's rows, counted from the sidecars
