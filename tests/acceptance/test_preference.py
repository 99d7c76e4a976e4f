"""Acceptance: preference pairs are exact on real data and real templates.

``../shared/data/dpo_zh_demo.json`` (LLaMA-Factory's pairwise ShareGPT, read natively) is built with
the tokenizer and chat template of each family (Qwen3 and the five of ``tests/support/families.py``)
and checked against an independent reference: each side as a whole conversation through
``apply_chat_template``, its final reply located by the family's hand-tagged template
(``return_assistant_tokens_mask``) or by prefix renders; the prompt is what lies before the reply,
the completion the reply through its end-of-turn token. The same pairs in TRL's shapes (explicit
prompt, implicit prompt, LLaMA-Factory v1) build the same shard bytes.

The reference tokenizer is the model's ``tokenizer.json`` as written (``PreTrainedTokenizerFast``), as
padprep and inference servers read it: transformers 5's ``AutoTokenizer`` rebuilds Qwen3.5's
pre-tokenizer from its ``Qwen2Tokenizer`` class, dropping the ``\\p{M}`` (combining marks) its
``tokenizer.json`` has, and tokenizes 2 of these 300 pairs (Gujarati and Lao text) otherwise; see
docs/limits.md.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pytest

from tests.conftest import run_build, shard_bytes, shared_file, write_jsonl
from tests.support.families import FAMILIES, REPORT, Family, family_dir, reference

transformers = pytest.importorskip("transformers")
ROLES = {"human": "user", "gpt": "assistant", "system": "system"}


def _native() -> list[dict]:
    return json.loads(shared_file("dpo_zh_demo.json").read_text(encoding="utf-8"))


def _as_messages(record: dict) -> tuple[list[dict], dict, dict]:
    prompt = [{"role": ROLES[t["from"]], "content": t["value"]} for t in record["conversations"]]
    return prompt, *({"role": "assistant", "content": record[k]["value"]} for k in ("chosen", "rejected"))


def _pairs(out: Path) -> Counter:
    got = Counter()
    for shard in json.loads((out / "manifest.json").read_text())["shards"]:
        with pa.memory_map(str(out / shard["file"])) as source:
            for row in pa.ipc.open_stream(source).read_all().to_pylist():
                got[(tuple(row["prompt_ids"]), tuple(row["chosen_ids"]), tuple(row["rejected_ids"]))] += 1
    return got


def _split(ids: list[int], labels: list[int]) -> tuple[tuple, tuple]:
    trained = [i for i, t in enumerate(labels) if t != -100]
    assert trained == list(range(trained[0], trained[-1] + 1)), "the reference's reply is not one run"
    return tuple(ids[: trained[0]]), tuple(ids[trained[0] : trained[-1] + 1])


def _expected(tok, fam: Family, records: list[dict]) -> tuple[Counter, int]:
    """The reference's pairs, and how many records it cannot make a pair of (the template raises)."""
    sides = []
    for rec in records:
        prompt, chosen, rejected = _as_messages(rec)
        sides += [{"messages": prompt + [chosen]}, {"messages": prompt + [rejected]}]
    refs = reference(tok, fam.name, fam.reference, sides, fam.stop_tokens)  # the stop signal rule, as for SFT rows
    pairs, failed = Counter(), 0
    for c, r in zip(refs[::2], refs[1::2]):
        if isinstance(c, str) or isinstance(r, str):
            failed += 1
            continue
        (p, chosen), (q, rejected) = _split(*c), _split(*r)
        assert p == q, "the reference's two sides render different prompts"
        pairs[(p, chosen, rejected)] += 1
    return pairs, failed


@pytest.mark.parametrize("fam", FAMILIES, ids=lambda f: f.name)
def test_pairs_are_exact_against_the_reference(tmp_path, fam):
    records = _native()
    path = family_dir(fam.name)
    tok = transformers.PreTrainedTokenizerFast.from_pretrained(str(path))  # tokenizer.json as written
    expected, failed = _expected(tok, fam, records)
    manifest = run_build([shared_file("dpo_zh_demo.json")], path, tmp_path / "out", max_reject_rate=1.0)
    t = manifest["totals"]
    REPORT.append(f"{fam.name + ' (pairs)':<24} {'dpo_zh':<8} {t['records_read']:>5} records, {t['rejected']:>3} rejected")
    assert manifest["format"] == "padprep-preference-pairs/1" and manifest["task"] == "preference"
    assert t["records_read"] == len(records) == t["rows_written"] + t["rejected"] + t["dropped"]
    assert t["rejected"] == failed and t["dropped"] == 0
    assert _pairs(tmp_path / "out") == expected


def _trl_explicit(rec: dict) -> dict:
    prompt, chosen, rejected = _as_messages(rec)
    return {"prompt": prompt, "chosen": [chosen], "rejected": [rejected]}


def _trl_implicit(rec: dict) -> dict:
    prompt, chosen, rejected = _as_messages(rec)
    return {"chosen": prompt + [chosen], "rejected": prompt + [rejected]}


def _v1(rec: dict) -> dict:
    prompt, chosen, rejected = _as_messages(rec)

    def parts(messages):
        return [{"role": m["role"], "content": [{"type": "text", "value": m["content"]}]} for m in messages]

    return {"chosen_messages": parts(prompt + [chosen]), "rejected_messages": parts(prompt + [rejected])}


@pytest.mark.parametrize("shape", [_trl_explicit, _trl_implicit, _v1], ids=["trl-explicit", "trl-implicit", "llamafactory-v1"])
def test_every_pair_shape_builds_the_same_bytes(tmp_path, shape, qwen_dir):
    native = run_build([shared_file("dpo_zh_demo.json")], qwen_dir, tmp_path / "native")
    src = write_jsonl(tmp_path / "pairs.jsonl", [shape(r) for r in _native()])
    copy = run_build([src], qwen_dir, tmp_path / "copy")
    assert copy["inputs"][0]["format"] == "preference"
    assert shard_bytes(tmp_path / "copy") == shard_bytes(tmp_path / "native")
    assert copy["totals"]["rows_written"] == native["totals"]["rows_written"] == 300
