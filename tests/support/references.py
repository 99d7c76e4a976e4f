"""Independent label references: hand-tagged ``{% generation %}`` copies of templates, and the rows transformers gives."""

from __future__ import annotations

import json
from pathlib import Path

from padprep.chat.templates import BUILTIN_TEMPLATES
from tests.conftest import alpaca_to_messages, shared_file, sharegpt_to_messages, unpadded_rows


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
