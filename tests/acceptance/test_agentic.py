"""Exact labels on agentic data: multi-step tool use, with and without reasoning, in templates that rewrite history.

The reference is independent of padprep: transformers' ``return_assistant_tokens_mask`` over a copy
of the template whose replies are wrapped in ``{% generation %}`` (checked to render the same text).
Two templates: Qwen3's own, which drops ``<think>`` blocks from replies before the last user
message, and a variant whose generation prompt opens the think block (``<|im_start|>assistant\\n<think>\\n``),
as newer reasoning templates' do.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from padprep.chat.render import Renderer, RenderError
from padprep.chat.templates import BUILTIN_TEMPLATES
from padprep.config import SpanMethod
from padprep.input.conversation import Conversation
from tests.conftest import SAMPLE, padprep_cli, run_build, unpadded_rows, write_jsonl
from tests.support.agentic import TOOLS, agentic_records, think_prompt_generation_template, think_prompt_variant
from tests.support.references import qwen3_generation_template

transformers = pytest.importorskip("transformers")


def reference(tok, records: list[dict], template: str, tagged: str) -> dict[int, tuple[list, list] | None]:
    """Per record: (ids, labels) from transformers, or None where the template itself raises."""
    out = {}
    for n, rec in enumerate(records):
        try:
            text = tok.apply_chat_template(rec["messages"], tools=rec["tools"], chat_template=template, tokenize=False)
        except Exception:  # the template cannot render this record (null content in Qwen3)
            out[n] = None
            continue
        assert tok.apply_chat_template(rec["messages"], tools=rec["tools"], chat_template=tagged, tokenize=False) == text
        enc = tok.apply_chat_template(
            rec["messages"],
            tools=rec["tools"],
            chat_template=tagged,
            tokenize=True,
            return_dict=True,
            return_assistant_tokens_mask=True,
        )
        ids = list(enc["input_ids"])
        out[n] = (ids, [t if m else -100 for t, m in zip(ids, enc["assistant_masks"])])
    return out


def assert_exact(output: Path, records: list[dict], ref: dict, manifest: dict) -> None:
    rows = {tuple(ids.tolist()): labels.tolist() for ids, labels in unpadded_rows(output)}
    expected = [r for r in ref.values() if r is not None]
    assert len(expected) >= 200, "the set must exercise the renderable shapes"
    assert manifest["totals"]["rows_written"] == len(expected)
    for ids, labels in expected:
        assert tuple(ids) in rows, "a conversation's input_ids differ from apply_chat_template"
        assert rows[tuple(ids)] == labels
    # what the template cannot render is rejected at the render stage, never written
    failing = sum(1 for r in ref.values() if r is None)
    assert manifest["totals"]["rejected"] == failing
    rejects = [json.loads(line) for line in (output / "rejects.jsonl").read_text().splitlines()]
    assert all(r["stage"] == "render" for r in rejects)


@pytest.fixture(scope="module")
def qwen_tok(qwen_dir):
    return transformers.AutoTokenizer.from_pretrained(str(qwen_dir))


@pytest.fixture(scope="module")
def records() -> list[dict]:
    recs = agentic_records()
    shapes = {
        "tool->assistant": 0,
        "tool->tool->assistant": 0,
        "rounds before next user": 0,
        "final with reasoning": 0,
        "final without reasoning": 0,
        "null content": 0,
        "empty content": 0,
    }
    for rec in recs:
        m = rec["messages"]
        roles = [x["role"] for x in m]
        for i in range(1, len(m)):
            if roles[i] == "assistant" and roles[i - 1] == "tool":
                shapes["tool->assistant"] += 1
                if i >= 2 and roles[i - 2] == "tool":
                    shapes["tool->tool->assistant"] += 1
        shapes["rounds before next user"] += "".join(r[0] for r in roles).count("atat") > 0
        shapes["final with reasoning"] += "reasoning_content" in m[-1]
        shapes["final without reasoning"] += "reasoning_content" not in m[-1]
        shapes["null content"] += any(x["role"] == "assistant" and x.get("content", 0) is None for x in m)
        shapes["empty content"] += any(x["role"] == "assistant" and x.get("content") == "" for x in m)
    assert all(v >= 10 for v in shapes.values()), shapes
    return recs


@pytest.mark.parametrize("span_method", ["auto", "template"])
def test_qwen3_agentic_conversations_match_the_reference(tmp_path, qwen_dir, qwen_tok, records, span_method):
    template = qwen_tok.chat_template
    ref = reference(qwen_tok, records, template, qwen3_generation_template(template))
    src = write_jsonl(tmp_path / "agentic.jsonl", records)
    manifest = run_build([src], qwen_dir, tmp_path / "out", span_method=SpanMethod(span_method), max_reject_rate=1.0)
    assert_exact(tmp_path / "out", records, ref, manifest)


@pytest.mark.parametrize("span_method", ["auto", "template"])
def test_think_opening_generation_prompt_matches_its_reference(tmp_path, qwen_dir, qwen_tok, records, span_method):
    template = think_prompt_variant(qwen_tok.chat_template)
    (tmp_path / "t.jinja").write_text(template)
    ref = reference(qwen_tok, records, template, think_prompt_generation_template(qwen_tok.chat_template))
    # the same shapes without reasoning anywhere: the think-opening prompt alone used to break them
    src = write_jsonl(tmp_path / "agentic.jsonl", records)
    manifest = run_build(
        [src],
        qwen_dir,
        tmp_path / "out",
        chat_template=str(tmp_path / "t.jinja"),
        span_method=SpanMethod(span_method),
        max_reject_rate=1.0,
    )
    assert_exact(tmp_path / "out", records, ref, manifest)
    plain = [
        {**r, "messages": [{k: v for k, v in m.items() if k != "reasoning_content"} for m in r["messages"]]} for r in records
    ]
    ref = reference(qwen_tok, plain, template, think_prompt_generation_template(qwen_tok.chat_template))
    src = write_jsonl(tmp_path / "plain.jsonl", plain)
    manifest = run_build(
        [src],
        qwen_dir,
        tmp_path / "out2",
        chat_template=str(tmp_path / "t.jinja"),
        span_method=SpanMethod(span_method),
        max_reject_rate=1.0,
    )
    assert_exact(tmp_path / "out2", plain, ref, manifest)


def test_reply_after_a_tool_result_is_trained(tmp_path, qwen_dir):
    """The issue's smallest case: ANSWER-ONE follows a tool result, and a later user turn drops the first think block."""
    rec = {
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "content": "",
                "reasoning_content": "I need the tool.",
                "tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}],
            },
            {"role": "tool", "content": "20C"},
            {"role": "assistant", "content": "ANSWER-ONE"},
            {"role": "user", "content": "Thanks!"},
            {"role": "assistant", "content": "You are welcome."},
        ],
        "tools": TOOLS,
    }
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(qwen_dir / "tokenizer.json"))
    for method in ("auto", "template"):
        out = tmp_path / method
        run_build([write_jsonl(tmp_path / "a.jsonl", [rec])], qwen_dir, out, span_method=SpanMethod(method))
        ((ids, labels),) = unpadded_rows(out)
        trained = tok.decode([int(t) for t in labels if t != -100], skip_special_tokens=False)
        assert "ANSWER-ONE<|im_end|>" in trained
        assert trained.count("get_weather") == 1 and "20C" not in trained and "Thanks!" not in trained


def test_self_check_rejects_a_span_it_cannot_place(tmp_path):
    """Spans that overlap, or miss the reply's own text, are a render error (the record is rejected, never written)."""
    template = (
        "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    r = Renderer(template, {})
    conv = Conversation(
        (
            {"role": "user", "content": "a"},
            {"role": "assistant", "content": "B1"},
            {"role": "user", "content": "c"},
            {"role": "assistant", "content": "B2"},
        ),
        None,
        "x",
        1,
    )
    full = r.render_text(conv.messages, None, generation=False)
    r.check_spans(conv, full, [1, 3], ((full.index("B1"), full.index("B1") + 12), (full.index("B2"), full.index("B2") + 12)))
    with pytest.raises(RenderError, match="could not locate reply 1 of 2.*overlaps"):
        r.check_spans(conv, full, [1, 3], ((full.index("B1"), full.index("B1") + 12), (full.index("B1"), full.index("B1") + 12)))
    with pytest.raises(RenderError, match="could not locate reply 1 of 2.*content"):
        r.check_spans(conv, full, [1, 3], ((0, 5), (full.index("B2"), full.index("B2") + 12)))


def test_null_content_reaches_the_template_as_transformers_passes_it(tmp_path, qwen_tok):
    """``content: null`` is not turned into "": a template that tests for it renders the tool call (DeepSeek-V3 style)."""
    template = (
        "{% for m in messages %}<|im_start|>{{ m.role }}\n"
        "{% if m.content is defined and m.content is not none %}{{ m.content }}{% else %}"
        "{% for c in m.tool_calls %}CALL {{ c.function.name }} {{ c.function.arguments | tojson }}{% endfor %}{% endif %}"
        "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    rec = {
        "messages": [
            {"role": "user", "content": "go"},
            {
                "role": "assistant",
                "content": None,
                "x_custom": 1,
                "tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}],
            },
            {"role": "tool", "content": "cold"},
            {"role": "assistant", "content": "Cold."},
        ]
    }
    (tmp_path / "t.jinja").write_text(template)
    run_build(
        [write_jsonl(tmp_path / "a.jsonl", [rec])],
        SAMPLE / "tokenizer",
        tmp_path / "out",
        chat_template=str(tmp_path / "t.jinja"),
    )
    ((ids, labels),) = unpadded_rows(tmp_path / "out")
    tok = transformers.AutoTokenizer.from_pretrained(str(SAMPLE / "tokenizer"))
    ref = tok.apply_chat_template(rec["messages"], chat_template=template, tokenize=True, return_dict=False)
    assert ids.tolist() == list(ref["input_ids"] if hasattr(ref, "keys") else ref)
    trained = tok.decode([int(t) for t in labels if t != -100])
    assert 'CALL get_weather {"city": "Oslo"}<|im_end|>' in trained and "Cold.<|im_end|>" in trained


def test_llama3_builtin_renders_tools_and_tool_calls(tmp_path):
    """The built-in llama3 template writes tools, tool calls (JSON) and results (ipython), as Llama 3.1+ does."""
    rec = {
        "messages": [
            {"role": "user", "content": "Weather in Rome?"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Rome"}}}],
            },
            {"role": "tool", "content": '{"temp": 25}'},
            {"role": "assistant", "content": "25 degrees."},
        ],
        "tools": TOOLS,
    }
    src = write_jsonl(tmp_path / "a.jsonl", [rec])
    m = run_build([src], SAMPLE / "tokenizer-bos", tmp_path / "out", chat_template="llama3")
    assert "unrendered_field" not in {h["code"] for h in m["hazards"]}
    tok = transformers.AutoTokenizer.from_pretrained(str(SAMPLE / "tokenizer-bos"))
    text = tok.apply_chat_template(rec["messages"], tools=TOOLS, chat_template=BUILTIN_TEMPLATES["llama3"], tokenize=False)
    assert '{"name": "get_weather", "parameters": {"city": "Rome"}}<|eot_id|>' in text
    assert "<|start_header_id|>ipython<|end_header_id|>" in text and '"name": "search_docs"' in text
    ((ids, labels),) = unpadded_rows(tmp_path / "out")
    trained = tok.decode([int(t) for t in labels if t != -100])
    assert trained == '{"name": "get_weather", "parameters": {"city": "Rome"}}<|eot_id|>25 degrees.<|eot_id|>'
    # a plain chat renders exactly as Meta-Llama-3-Instruct's template did
    plain = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    assert tok.apply_chat_template(plain, chat_template=BUILTIN_TEMPLATES["llama3"], tokenize=False) == (
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nhello<|eot_id|>"
    )


def test_dropped_fields_are_a_hazard_and_strict_fails(tmp_path):
    """A template that never writes tool calls or reasoning: the data's fields are reported, --strict exits 3."""
    template = tmp_path / "chatml.jinja"
    template.write_text(BUILTIN_TEMPLATES["chatml"])
    rec = {
        "messages": [
            {"role": "user", "content": "Weather?"},
            {
                "role": "assistant",
                "content": "Checking.",
                "reasoning_content": "Use the tool.",
                "tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Rome"}}}],
            },
            {"role": "tool", "content": "25"},
            {"role": "assistant", "content": "25 degrees."},
        ],
        "tools": TOOLS,
    }
    src = write_jsonl(tmp_path / "a.jsonl", [rec, rec])
    m = run_build([src], SAMPLE / "tokenizer", tmp_path / "out", chat_template=str(template))
    hazards = {h["code"]: h for h in m["hazards"]}
    assert "unrendered_field" in hazards
    message = hazards["unrendered_field"]["message"]
    assert "tool_calls" in message and "reasoning_content" in message and "tools" in message
    assert hazards["unrendered_field"]["count"] == 2
    res = padprep_cli(
        "build",
        str(src),
        "-t",
        str(SAMPLE / "tokenizer"),
        "-o",
        str(tmp_path / "strict"),
        "--chat-template",
        str(template),
        "--strict",
    )
    assert res.returncode == 3 and "unrendered_field" in res.stderr
    # the sample tokenizer's own template renders tool calls and tools: no hazard for those
    m = run_build([src], SAMPLE / "tokenizer", tmp_path / "own")
    own = {h["code"]: h for h in m["hazards"]}
    assert "unrendered_field" not in own or "tool_calls" not in own["unrendered_field"]["message"]


def test_preflight_fast_path_check_uses_the_builds_format_options(tmp_path, qwen_dir):
    """With renamed fields every sample record used to be a reject in the check, which then passed vacuously."""
    recs = [{"dialog": r["messages"], "tools": r["tools"]} for r in agentic_records(40, seed=3)]
    src = write_jsonl(tmp_path / "a.jsonl", recs)
    from padprep.chat.process import ProcessOptions, Processor
    from padprep.chat.tokenizer import load_tokenizer
    from padprep.config import BuildConfig
    from padprep.input.read import read_records
    from padprep.run.pipeline import build as run
    from padprep.run.preflight import fast_spans_agree

    cfg = BuildConfig(
        inputs=(src,), tokenizer=str(qwen_dir), output=tmp_path / "o", field_names=(("messages", "dialog"),), max_reject_rate=1.0
    )
    bundle = load_tokenizer(str(qwen_dir))
    processor = Processor(bundle, ProcessOptions(bundle.chat_template, formats=cfg.format_options()))
    from padprep.run.preflight import sample_conversations

    sample = list(read_records(str(src)))
    convs = sample_conversations(processor, sample)
    assert len(convs) == len(sample)  # normalized with the build's options: none is a reject
    checked = fast_spans_agree(processor, convs)
    assert checked.agree and checked.compared == len(sample) - checked.skipped > 0
    assert run(cfg).manifest.rows_written > 0
