"""Acceptance: real templates of five more families build every record their template renders, exactly.

For DeepSeek-R1, DeepSeek-V3, Qwen3.5, GLM-4-0414 and MiniMax-M3 (see ``tests/families.py``), on the
shared data (alpaca + glaive tool calls as messages), the synthesized agentic conversations
(structured tool calls, results, ``reasoning_content``) and the same with reasoning inline in
``content``: ``input_ids`` equal ``apply_chat_template(tokenize=True)``, labels equal an independent
reference, and the only records rejected are those the template itself raises on (rejected with
its message) or that have nothing to train.
"""

from __future__ import annotations

import json

import pytest

from tests.conftest import alpaca_to_messages, run_build, shared_file, sharegpt_to_messages, unpadded_rows, write_jsonl
from tests.support.agentic import agentic_records
from tests.support.families import FAMILIES, REPORT, Family, family_dir, reasoning_inline, reference, with_arguments

transformers = pytest.importorskip("transformers")


def _shared() -> list[dict]:
    glaive = json.loads(shared_file("glaive_toolcall_en_demo.json").read_text())
    alpaca = json.loads(shared_file("alpaca_en_demo.json").read_text())
    return [sharegpt_to_messages(r) for r in glaive] + [alpaca_to_messages(r) for r in alpaca[:300]]


DATA = {
    "shared": _shared,
    "agentic": lambda: agentic_records(160, seed=5),
    "inline": lambda: [reasoning_inline(r) for r in agentic_records(160, seed=5)],
    "native": None,
}


@pytest.fixture(scope="module", params=FAMILIES, ids=lambda f: f.name)
def family(request) -> tuple[Family, object]:
    fam = request.param
    return fam, transformers.AutoTokenizer.from_pretrained(str(family_dir(fam.name)))


@pytest.mark.parametrize("data", list(DATA))
def test_family_builds_exactly_what_its_template_renders(tmp_path, family, data):
    fam, tok = family
    if data == "native":  # the glaive file as LLaMA-Factory writes it, read by padprep itself
        src = shared_file("glaive_toolcall_en_demo.json")
        records = [sharegpt_to_messages(r) for r in json.loads(src.read_text())]
    else:
        records = [with_arguments(r, fam.string_arguments) for r in DATA[data]()]
        src = write_jsonl(tmp_path / "in.jsonl", records)
    ref = reference(tok, fam.name, fam.reference, records, fam.stop_tokens)
    manifest = run_build([src], family_dir(fam.name), tmp_path / "out", max_reject_rate=1.0)
    written = unpadded_rows(tmp_path / "out")
    rows = {tuple(ids.tolist()): labels.tolist() for ids, labels in written}
    rejects = {
        r["line"] if "line" in r else r["index"] + 1: r
        for r in map(json.loads, (tmp_path / "out" / "rejects.jsonl").read_text().splitlines())
    }

    raises = {n + 1: r for n, r in enumerate(ref) if isinstance(r, str)}
    untrained = {n + 1 for n, r in enumerate(ref) if not isinstance(r, str) and all(x == -100 for x in r[1])}
    REPORT.append(
        f"{fam.name:15s} {data:8s} {len(records):4d} records, {len(rejects):3d} rejected ({len(rejects) / len(records):5.1%}): "
        f"{len(raises)} the template raises on, {len(untrained)} with nothing to train"
    )
    assert len(written) + len(rejects) == len(records) == manifest["totals"]["records_read"]
    assert set(rejects) == set(raises) | untrained, {n: rejects[n]["reason"] for n in set(rejects) - set(raises) - untrained}
    for n, message in raises.items():  # rejected with the template's own message
        assert rejects[n]["code"] in ("template_error", "template_limit") and message in rejects[n]["reason"]
    for n in untrained:
        assert rejects[n]["code"] == "no_trained_token"
    for n, r in enumerate(ref, 1):
        if n in rejects:
            continue
        ids, labels = r
        assert tuple(ids) in rows, f"record {n}: input_ids differ from apply_chat_template"
        assert rows[tuple(ids)] == labels, f"record {n}: labels differ from the {fam.reference} reference"
    if data != "native":  # DeepSeek's templates cannot render glaive's object arguments: most of it is theirs to reject
        assert len(written) >= 0.5 * len(records), "the set must exercise what the template renders"
