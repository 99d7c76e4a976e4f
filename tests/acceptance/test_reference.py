"""Acceptance: padprep's rows equal transformers' to the token, on real data and real tokenizers.

input_ids are compared with ``apply_chat_template(..., tokenize=True)``. Labels are compared with a
reference computed independently: transformers' ``return_assistant_tokens_mask`` over a copy of
the template whose assistant output is wrapped in ``{% generation %}`` blocks (the copy is checked
to render exactly the same text as the original).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from padprep.chat.templates import BUILTIN_TEMPLATES
from padprep.config import SpanMethod
from tests.conftest import SAMPLE, run_build, unpadded_rows, write_jsonl
from tests.support.references import (
    LLAMA3_GENERATION,
    assert_rows_match,
    qwen3_generation_template,
    reference_rows,
    shared_records,
)

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def shared_messages() -> list[dict]:
    return shared_records()


@pytest.mark.parametrize("span_method,offsets", [("auto", "bytes"), ("auto", "tokenizer"), ("template", "bytes")])
def test_qwen3_on_shared_data_matches_transformers(tmp_path, qwen_dir, shared_messages, span_method, offsets, monkeypatch):
    """Exact ids and labels; token offsets from the tokens' bytes (what a build of a few MiB or more uses)
    and from the tokenizer (what a smaller one uses)."""
    import padprep.run.pipeline

    monkeypatch.setattr(padprep.run.pipeline, "SMALL_INPUT_BYTES", 0 if offsets == "bytes" else 1 << 40)
    tok = transformers.AutoTokenizer.from_pretrained(str(qwen_dir))
    template = tok.chat_template
    src = write_jsonl(tmp_path / "shared.jsonl", shared_messages)
    manifest = run_build([src], qwen_dir, tmp_path / "out", span_method=SpanMethod(span_method))
    assert manifest["totals"]["rows_written"] == len(shared_messages)
    if span_method == "template":
        # Qwen3 rewrites history in multi-turn chats: the prefix renders are not prefixes of the full one
        assert manifest["totals"]["realigned_boundaries"] >= 600
    assert_rows_match(tmp_path / "out", reference_rows(tok, shared_messages, template, qwen3_generation_template(template)))


def test_llama3_template_with_bos_adding_tokenizer_matches_transformers(tmp_path, shared_messages):
    tok_dir = SAMPLE / "tokenizer-bos"
    tok = transformers.AutoTokenizer.from_pretrained(str(tok_dir))
    assert tok.chat_template is None
    assert tok("hi")["input_ids"][0] == tok.bos_token_id  # the post-processor adds BOS
    records = shared_messages[:150] + shared_messages[-150:]
    src = write_jsonl(tmp_path / "in.jsonl", records)
    manifest = run_build([src], tok_dir, tmp_path / "out", chat_template="llama3")
    reference = reference_rows(tok, records, BUILTIN_TEMPLATES["llama3"], LLAMA3_GENERATION)
    assert all(ids[0] == tok.bos_token_id != ids[1] for ids, _ in reference)  # exactly one BOS
    assert_rows_match(tmp_path / "out", reference)
    assert "bos_doubled" not in {h["code"] for h in manifest["hazards"]}


def test_sample_data_matches_transformers(tmp_path):
    tok_dir = SAMPLE / "tokenizer"
    tok = transformers.AutoTokenizer.from_pretrained(str(tok_dir))
    records = [json.loads(line) for line in (SAMPLE / "chat.jsonl").read_text().splitlines()]
    run_build([SAMPLE / "chat.jsonl"], tok_dir, tmp_path / "out")
    template = tok.chat_template
    rows = {tuple(ids.tolist()): labels for ids, labels in unpadded_rows(tmp_path / "out")}
    for rec in records:
        ids = tok.apply_chat_template(rec["messages"], tools=rec.get("tools"), tokenize=True, return_dict=False)
        ids = tuple(ids["input_ids"] if hasattr(ids, "keys") else ids)
        assert ids in rows
        labels = rows[ids]
        # every assistant reply is trained from after its header through <|im_end|>, nothing else is
        text = tok.apply_chat_template(rec["messages"], tools=rec.get("tools"), tokenize=False)
        trained_text = tok.decode([int(t) for t in labels if t != -100])
        expected = "".join(part.split("<|im_end|>")[0] + "<|im_end|>" for part in text.split("<|im_start|>assistant\n")[1:])
        assert trained_text == expected
    assert template is not None


def test_qwen3_multi_turn_labels_by_hand(tmp_path, qwen_dir):
    """A two-turn chat: the earlier reply has no <think> block in the full render, the last one has."""
    rec = {
        "messages": [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": "Bye"},
            {"role": "assistant", "content": "Goodbye."},
        ]
    }
    run_build([write_jsonl(tmp_path / "a.jsonl", [rec])], qwen_dir, tmp_path / "out")
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(qwen_dir / "tokenizer.json"))
    ((ids, labels),) = unpadded_rows(tmp_path / "out")
    trained = tok.decode([int(t) for t in labels if t != -100], skip_special_tokens=False)
    assert trained == "Hello!<|im_end|><think>\n\n</think>\n\nGoodbye.<|im_end|>"
    text = tok.decode(ids.tolist(), skip_special_tokens=False)
    assert text.count("<think>") == 1
    assert ids[-1] == tok.token_to_id("\u010a") and labels[-1] == -100  # the template's newline after it is not
    assert labels[-2] == tok.token_to_id("<|im_end|>")  # the final end-of-turn token is trained...
    assert np.all(labels[: np.flatnonzero(labels != -100)[0]] == -100)  # ...and the prompt is not
