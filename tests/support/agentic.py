"""Synthesized agentic conversations: user turns answered after tool rounds (parallel calls), reasoning on some replies."""

from __future__ import annotations

import json
import random

from tests.support.references import qwen3_generation_template

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    },
    {
        "type": "function",
        "function": {
            "name": "search_docs",
            "description": "Search the docs",
            "parameters": {"type": "object", "properties": {"query": {"type": "string"}, "limit": {"type": "integer"}}},
        },
    },
    {
        "type": "function",
        "function": {
            "name": "calculate",
            "description": "Evaluate an expression",
            "parameters": {"type": "object", "properties": {"expression": {"type": "string"}}},
        },
    },
]


def _call(rng: random.Random, tag: str) -> dict:
    name = rng.choice(["get_weather", "search_docs", "calculate"])
    args = {
        "get_weather": {"city": f"City-{tag}"},
        "search_docs": {"query": f"how to {tag}", "limit": 3},
        "calculate": {"expression": f"{len(tag)} * 7"},
    }[name]
    arguments = json.dumps(args) if rng.random() < 0.3 else args  # OpenAI gives a JSON string, others an object
    return {"type": "function", "function": {"name": name, "arguments": arguments}}


def agentic_conversation(n: int, rng: random.Random) -> dict:
    """User turns, each answered after 0-3 tool rounds (1-2 parallel calls), reasoning on some replies."""
    messages = []
    if rng.random() < 0.4:
        messages.append({"role": "system", "content": f"You are agent {n}."})
    users = rng.choice([1, 1, 2, 2, 3])
    nulls = rng.random() < 0.15  # null content (the Qwen3 template cannot render it: both sides reject)
    for u in range(users):
        messages.append({"role": "user", "content": f"Question {n}.{u}: what now?"})
        rounds = rng.choice([0, 1, 1, 2, 3]) if u < users - 1 or rng.random() < 0.9 else 0
        for r in range(rounds):
            tag = f"{n}-{u}-{r}"
            reply: dict = {"role": "assistant", "tool_calls": [_call(rng, f"{tag}-{k}") for k in range(rng.choice([1, 1, 2]))]}
            shape = rng.random()
            if shape < 0.35:
                reply["content"] = ""
            elif shape < 0.7:
                reply["content"] = f"Let me check ({tag})."
            elif shape < 0.85 and nulls:
                reply["content"] = None
            else:
                reply["content"] = f"On it: {tag}."
            if rng.random() < 0.5:
                reply["reasoning_content"] = f"I should call a tool for {tag}."
            messages.append(reply)
            for k, _ in enumerate(reply["tool_calls"]):
                messages.append({"role": "tool", "content": f"RESULT-{tag}-{k}"})
        final: dict = {"role": "assistant", "content": f"ANSWER-{n}-{u}"}
        if rng.random() < 0.5:
            final["reasoning_content"] = f"Putting it together for {n}-{u}."
        messages.append(final)
    return {"messages": messages, "tools": TOOLS}


def agentic_records(count: int = 260, seed: int = 11) -> list[dict]:
    rng = random.Random(seed)
    return [agentic_conversation(n, rng) for n in range(count)]


def think_prompt_variant(template: str) -> str:
    """Qwen3's template with a generation prompt that opens the think block, as newer reasoning templates'."""
    old = "{{- '<|im_start|>assistant\\n' }}\n    {%- if enable_thinking is defined"
    assert old in template
    return template.replace(old, "{{- '<|im_start|>assistant\\n<think>\\n' }}\n    {%- if enable_thinking is defined")


def think_prompt_generation_template(template: str) -> str:
    """The variant's tagged copy: its prompt ends after ``<think>\\n``, so a think block's opening is prompt, not reply."""
    tagged = qwen3_generation_template(think_prompt_variant(template))
    old = "{{- '<|im_start|>' + message.role + '\\n' }}{% generation %}{{- '<think>\\n' + reasoning_content"
    assert old in tagged
    return tagged.replace(old, "{{- '<|im_start|>' + message.role + '\\n<think>\\n' }}{% generation %}{{- reasoning_content")
