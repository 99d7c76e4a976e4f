"""Acceptance: padprep's rows equal transformers' to the token, on real data and real tokenizers.

input_ids are compared with ``apply_chat_template(..., tokenize=True)``. Labels are compared with a
reference computed independently: transformers' ``return_assistant_tokens_mask`` over a copy of
the template whose assistant output is wrapped in ``{% generation %}`` blocks (the copy is checked
to render exactly the same text as the original).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from padprep.chat.templates import BUILTIN_TEMPLATES
from padprep.config import SpanMethod
from tests.conftest import (
    SAMPLE,
    alpaca_to_messages,
    run_build,
    shared_file,
    sharegpt_to_messages,
    unpadded_rows,
    write_jsonl,
)

transformers = pytest.importorskip("transformers")


def qwen3_generation_template(template: str) -> str:
    """Qwen3's template with every piece of assistant output inside a generation block."""
    think = (
        "{{- '<|im_start|>' + message.role + '\\n<think>\\n' + reasoning_content.strip('\\n') + '\\n</think>\\n\\n' "
        "+ content.lstrip('\\n') }}"
    )
    plain = "{{- '<|im_start|>' + message.role + '\\n' + content }}"
    header = "{{- '<|im_start|>' + message.role + '\\n' }}"
    tool_calls_start = "        {%- if message.tool_calls %}\n            {%- for tool_call in message.tool_calls %}"
    end = "        {{- '<|im_end|>\\n' }}\n    {%- elif message.role == \"tool\" %}"
    for piece in (think, plain, tool_calls_start, end):
        assert piece in template, piece
    out = template.replace(
        think,
        header + "{% generation %}{{- '<think>\\n' + reasoning_content.strip('\\n') + '\\n</think>\\n\\n' "
        "+ content.lstrip('\\n') }}{% endgeneration %}",
    )
    out = out.replace(plain, header + "{%- if content %}{% generation %}{{- content }}{% endgeneration %}{%- endif %}")
    out = out.replace(tool_calls_start, "        {% generation %}" + tool_calls_start.strip(" "))
    out = out.replace(
        "                {{- '}\\n</tool_call>' }}\n            {%- endfor %}\n        {%- endif %}",
        "                {{- '}\\n</tool_call>' }}\n            {%- endfor %}\n        {%- endif %}{% endgeneration %}",
    )
    out = out.replace(
        end,
        "        {% generation %}{{- '<|im_end|>' }}{% endgeneration %}{{- '\\n' }}\n    {%- elif message.role == \"tool\" %}",
    )
    return out


def llama3_generation_template(template: str) -> str:
    """The built-in llama3 template with each assistant reply (text or tool call) inside a generation block."""
    call = '{{ \'<|start_header_id|>assistant<|end_header_id|>\\n\\n{"name": "\' + tool_call.name'
    call_end = "{{ '}<|eot_id|>' }}"
    plain = "{{ content }}"
    for piece in (call, call_end, plain):
        assert template.count(piece) == 1, piece
    out = template.replace(
        call, "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% generation %}{{ '{\"name\": \"' + tool_call.name"
    )
    out = out.replace(call_end, call_end + "{% endgeneration %}")
    return out.replace(
        plain,
        (
            "{% if message['role'] == 'assistant' %}{% if loop.index0 == 0 and not tools %}{{ bos_token }}{% endif %}"
            "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% generation %}{{ message['content'] | trim + '<|eot_id|>' }}"
            "{% endgeneration %}{% else %}{{ content }}{% endif %}"
        ),
    )


LLAMA3_GENERATION = llama3_generation_template(BUILTIN_TEMPLATES["llama3"])


def reference_rows(tokenizer, records: list[dict], template: str, generation_template: str) -> list[tuple[list, list]]:
    """(input_ids, labels) per record from transformers."""
    out = []
    for rec in records:
        msgs, tools = rec["messages"], rec.get("tools")
        ids = tokenizer.apply_chat_template(msgs, tools=tools, chat_template=template, tokenize=True, return_dict=False)
        ids = list(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids)
        text = tokenizer.apply_chat_template(msgs, tools=tools, chat_template=template, tokenize=False)
        wrapped = tokenizer.apply_chat_template(msgs, tools=tools, chat_template=generation_template, tokenize=False)
        assert wrapped == text, "the generation-wrapped reference template must render the same text"
        enc = tokenizer.apply_chat_template(
            msgs,
            tools=tools,
            chat_template=generation_template,
            tokenize=True,
            return_dict=True,
            return_assistant_tokens_mask=True,
        )
        assert list(enc["input_ids"]) == ids
        mask = enc["assistant_masks"]
        out.append((ids, [t if m else -100 for t, m in zip(ids, mask)]))
    return out


def assert_rows_match(output: Path, reference: list[tuple[list, list]]) -> None:
    rows = {tuple(ids.tolist()): labels.tolist() for ids, labels in unpadded_rows(output)}
    assert len(rows) == len({tuple(ids) for ids, _ in reference})
    for ids, labels in reference:
        assert tuple(ids) in rows, "a conversation's input_ids differ from apply_chat_template"
        assert rows[tuple(ids)] == labels


def shared_records() -> list[dict]:
    glaive = json.loads(shared_file("glaive_toolcall_en_demo.json").read_text())
    alpaca = json.loads(shared_file("alpaca_en_demo.json").read_text())
    return [sharegpt_to_messages(r) for r in glaive] + [alpaca_to_messages(r) for r in alpaca]


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
