"""Preference builds end to end on the sample tokenizer: every record accounted for, bad pairs rejected with
their reason, pairs that carry no preference dropped, the length policy on the pair, and one-line failures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import padprep
from tests.conftest import SAMPLE, padprep_cli, run_build, write_jsonl

TOK = SAMPLE / "tokenizer"
Q = [{"role": "user", "content": "What is the capital of France?"}]


def _pair(chosen: str, rejected: str, prompt=Q) -> dict:
    return {
        "prompt": prompt,
        "chosen": [{"role": "assistant", "content": chosen}],
        "rejected": [{"role": "assistant", "content": rejected}],
    }


def _rejects(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]


def test_bad_and_empty_pairs_are_accounted_for(tmp_path):
    records = [_pair("Paris.", "Lyon.")] * 3 + [
        {"prompt": Q, "chosen": [{"role": "assistant", "content": "Paris."}]},  # no rejected side
        _pair("Paris.", ""),  # an empty side
        _pair("Paris.", "Paris."),  # no preference
        {"prompt": Q, "chosen": [{"role": "assistant", "content": "a"}, {"role": "user", "content": "b"}], "rejected": []},
    ]
    src = write_jsonl(tmp_path / "pairs.jsonl", records)
    manifest = run_build([src], TOK, tmp_path / "out", max_reject_rate=1.0)
    t = manifest["totals"]
    assert (t["records_read"], t["rows_written"], t["rejected"], t["dropped"]) == (7, 3, 3, 1)
    by_line = {r["line"]: r for r in _rejects(tmp_path / "out")}
    assert by_line[4]["code"] == "missing_field" and "`rejected`" in by_line[4]["reason"]
    assert by_line[5]["code"] == "empty_reply" and by_line[5]["field"] == "rejected[0].content"
    assert by_line[6]["code"] == "no_preference" and by_line[6]["stage"] == "policy"
    assert by_line[7]["code"] == "pair_shape" and "`chosen` must be one assistant reply" in by_line[7]["reason"]
    assert all(by_line[k]["record"] == json.dumps(records[k - 1]) for k in by_line)  # the record as read


def test_the_completion_ends_with_the_end_of_turn_token(tmp_path):
    run_build([write_jsonl(tmp_path / "p.jsonl", [_pair("Paris.", "Lyon.")])], TOK, tmp_path / "out")
    pair = padprep.load(tmp_path / "out")[0]
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(TOK / "tokenizer.json"))
    assert tok.decode(pair["prompt_ids"], skip_special_tokens=False).endswith("<|im_start|>assistant\n")
    assert tok.decode(pair["chosen_ids"], skip_special_tokens=False) == "Paris.<|im_end|>"  # not the "\n" after it
    assert tok.decode(pair["rejected_ids"], skip_special_tokens=False) == "Lyon.<|im_end|>"


def test_plain_text_pairs_get_eos_as_trl_gives_it(tmp_path):
    src = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "The sky is", "chosen": " blue.", "rejected": " green."}])
    run_build([src], TOK, tmp_path / "out")
    pair = padprep.load(tmp_path / "out")[0]
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(TOK / "tokenizer.json"))
    assert tok.decode(pair["prompt_ids"]) == "The sky is"
    assert tok.decode(pair["chosen_ids"], skip_special_tokens=False) == " blue.<|im_end|>"


def test_max_length_drops_or_cuts_the_prompt_from_the_left(tmp_path):
    long_prompt = [{"role": "user", "content": "word " * 200}]
    records = [_pair("Yes.", "No.", long_prompt), _pair("Paris.", "Lyon.")]
    src = write_jsonl(tmp_path / "p.jsonl", records)
    dropped = run_build([src], TOK, tmp_path / "drop", max_length=64)
    assert (dropped["totals"]["rows_written"], dropped["totals"]["dropped"]) == (1, 1)
    assert _rejects(tmp_path / "drop")[0]["code"] == "too_long"
    kept = run_build([src], TOK, tmp_path / "cut", max_length=64, truncation="left")
    assert (kept["totals"]["rows_written"], kept["totals"]["truncated"]) == (2, 1)
    pairs = padprep.load(tmp_path / "cut")
    longest = max((pairs[i] for i in range(len(pairs))), key=lambda p: len(p["prompt_ids"]))
    assert len(longest["prompt_ids"]) + max(len(longest["chosen_ids"]), len(longest["rejected_ids"])) == 64
    full = run_build([src], TOK, tmp_path / "full")
    whole = max((padprep.load(tmp_path / "full")[i] for i in range(2)), key=lambda p: len(p["prompt_ids"]))
    assert longest["prompt_ids"] == whole["prompt_ids"][-len(longest["prompt_ids"]) :]  # its end, kept
    assert longest["chosen_ids"] == whole["chosen_ids"] and full["totals"]["truncated"] == 0


def test_sides_that_render_different_prompts_are_rejected(tmp_path):
    """A template whose system line depends on the final reply writes a different prompt for each side."""
    template = (
        "{% for m in messages %}{% if loop.first %}<|im_start|>system\\nlen {{ messages[-1]['content']|length }}<|im_end|>\\n{% endif %}"
        "<|im_start|>{{ m['role'] }}\\n{{ m['content'] }}<|im_end|>\\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\\n{% endif %}"
    )
    (tmp_path / "t.jinja").write_text(template.replace("\\n", "\n"))
    src = write_jsonl(tmp_path / "p.jsonl", [_pair("Paris.", "Lyon, France.")])
    manifest = run_build(
        [src], TOK, tmp_path / "out", chat_template=str(tmp_path / "t.jinja"), max_reject_rate=1.0, allow_empty=True
    )
    assert manifest["totals"]["rejected"] == 1
    reject = _rejects(tmp_path / "out")[0]
    assert reject["code"] == "prompt_mismatch" and "render different prompts" in reject["reason"]


def test_task_and_format_errors_are_one_line(tmp_path):
    pairs = write_jsonl(tmp_path / "pairs.jsonl", [_pair("Paris.", "Lyon.")] * 4)
    chats = SAMPLE / "chat.jsonl"
    mixed = padprep_cli("build", str(pairs), str(chats), "-t", str(TOK), "-o", str(tmp_path / "m"))
    assert mixed.returncode == 2 and "holds preference pairs but" in mixed.stderr and "build them separately" in mixed.stderr
    sft = padprep_cli("build", str(pairs), "-t", str(TOK), "-o", str(tmp_path / "s"), "--task", "sft")
    assert sft.returncode == 1 and "build it with --task preference" in sft.stderr
    pack = padprep_cli(
        "build", str(pairs), "-t", str(TOK), "-o", str(tmp_path / "p"), "--task", "preference", "--pack", "--max-length", "64"
    )
    assert pack.returncode == 2 and "--pack applies to SFT rows" in pack.stderr


def test_pack_on_detected_pairs_is_refused(tmp_path):
    """Pairs found by --task auto: --pack is refused in one line, not ignored while the manifest says pack: true."""
    from tests.e2e.test_first_run import assert_one_line_failure

    pairs = write_jsonl(tmp_path / "pairs.jsonl", [_pair("Paris.", "Lyon.")] * 4)
    pack = padprep_cli("build", str(pairs), "-t", str(TOK), "-o", str(tmp_path / "p"), "--pack", "--max-length", "64")
    assert_one_line_failure(pack, 2, "--pack does not apply to preference pairs", "drop --pack")
    assert not (tmp_path / "p").exists()


def test_inspect_shows_a_pair_and_verifies(tmp_path):
    run_build([write_jsonl(tmp_path / "p.jsonl", [_pair("Paris.", "Lyon.")] * 2)], TOK, tmp_path / "out")
    shown = padprep_cli("inspect", str(tmp_path / "out"), "--show", "1", "--verify")
    assert shown.returncode == 0, shown.stderr
    assert "[[Paris.<|im_end|>]]" in shown.stdout and "{{Lyon.<|im_end|>}}" in shown.stdout
    assert shown.stdout.count("What is the capital of France?") == 1 and "verify: ok" in shown.stdout
    shard = next((tmp_path / "out").glob("bucket-*.arrow"))
    data = bytearray(shard.read_bytes())
    data[-20] ^= 0xFF
    shard.write_bytes(bytes(data))
    broken = padprep_cli("inspect", str(tmp_path / "out"), "--verify")
    assert broken.returncode == 1 and "sha256 differs from the manifest" in broken.stdout


@pytest.mark.parametrize("seed", [None, 5])
def test_rebuild_is_byte_identical(tmp_path, seed):
    src = write_jsonl(tmp_path / "p.jsonl", [_pair(f"Paris {i}.", f"Lyon {i}.") for i in range(40)])
    a = run_build([src], TOK, tmp_path / "a", seed=seed)
    b = run_build([src], TOK, tmp_path / "b", seed=seed)
    assert [s["sha256"] for s in a["shards"]] == [s["sha256"] for s in b["shards"]]
    assert np.sum([s["rows"] for s in a["shards"]]) == 40


def test_padded_pairs_hold_the_same_pairs_padded_by_position(tmp_path):
    src = write_jsonl(tmp_path / "p.jsonl", [_pair(f"Paris {i}.", f"Lyon, {i}.") for i in range(12)])
    run_build([src], TOK, tmp_path / "lists", buckets=(40, 80))
    manifest = run_build([src], TOK, tmp_path / "padded", buckets=(40, 80), padded_pairs=True)
    lists = padprep.load(tmp_path / "lists")
    expected = {
        (tuple(p["prompt_ids"]), tuple(p["chosen_ids"]), tuple(p["rejected_ids"])) for p in (lists[i] for i in range(len(lists)))
    }
    padded = padprep.load(tmp_path / "padded")
    batch = padded[list(range(len(padded)))]
    got = set()
    eos = json.loads((tmp_path / "padded" / "manifest.json").read_text())["tokenizer"]["pad_id"]
    for r in range(len(padded)):
        sides = []
        for side in ("chosen", "rejected"):
            ids, mask, labels = (batch[f"{side}_{c}"][r].numpy() for c in ("input_ids", "attention_mask", "labels"))
            n = int(mask.sum())
            assert mask[:n].all() and not mask[n:].any() and (ids[n:] == eos).all()  # right padding, by position
            assert (labels[n:] == -100).all() and (labels[:n][labels[:n] != -100] == ids[:n][labels[:n] != -100]).all()
            start = int(np.flatnonzero(labels != -100)[0])
            sides.append((tuple(ids[:start]), tuple(ids[start:n])))
        assert sides[0][0] == sides[1][0]
        got.add((sides[0][0], sides[0][1], sides[1][1]))
    assert got == expected and manifest["totals"]["pad_tokens"] > 0
    done = padprep_cli("inspect", str(tmp_path / "padded"), "--verify")
    assert done.returncode == 0 and "verify: ok" in done.stdout, done.stdout + done.stderr
    sft = padprep_cli("build", str(SAMPLE / "chat.jsonl"), "-t", str(TOK), "-o", str(tmp_path / "s"), "--padded-pairs")
    assert sft.returncode == 2 and "--padded-pairs applies to preference pairs" in sft.stderr
