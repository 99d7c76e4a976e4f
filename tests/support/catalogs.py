"""Agent-style data where most tokens repeat: every conversation carries one of 16 tool catalogs (6 real
tool schemas each, from the shared glaive data) in its ``tools`` field and one of 4 system prompts;
every other message is unique (prefixed with its conversation's number). Used by the reuse tests and
the agentic row of ``make bench``.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "glaive_toolcall_en_demo.json"
SYSTEMS = [
    "You are a helpful assistant with access to the functions below. Use them when they help; answer plainly otherwise.",
    "You are an operations agent. Call tools to look things up before you answer, and say which tool you used.",
    "You are a concise assistant. Prefer one tool call over guessing; never invent a tool's result.",
    "You help users plan and compute. Tools are available; call them with exactly the arguments they declare.",
]


def schemas(path: Path = SHARED) -> list[dict]:
    """The distinct tool schemas of the glaive file, in first-seen order, as OpenAI tools."""
    seen: dict[str, dict] = {}
    for record in json.loads(path.read_text(encoding="utf-8")):
        for tool in json.loads(record["tools"]) if record.get("tools") else []:
            seen.setdefault(tool["name"], tool)
    return [{"type": "function", "function": t} for t in seen.values()]


def catalog_conversations(n: int, seed: int = 0, path: Path = SHARED) -> list[dict]:
    """``n`` conversations, each with one of 16 catalogs of 6 schemas and one of 4 system prompts."""
    rng = random.Random(seed)
    tools = schemas(path)
    catalogs = [rng.sample(tools, 6) for _ in range(16)]
    out = []
    for i in range(n):
        catalog = catalogs[i % 16]
        fn = catalog[i % 6]["function"]
        args = {k: f"value {i}" for k in list(fn.get("parameters", {}).get("properties", {}))[:2]}
        call = {"type": "function", "function": {"name": fn["name"], "arguments": args}}
        messages = [
            {"role": "system", "content": SYSTEMS[i % 4]},
            {"role": "user", "content": f"[#{i}] Please use {fn['name']} for case {i} and tell me what you find."},
            {"role": "assistant", "content": "", "tool_calls": [call]},
            {"role": "tool", "content": json.dumps({"case": i, "result": f"result {i * 7 % 101}", "ok": True})},
            {"role": "assistant", "content": f"[#{i}] {fn['name']} says result {i * 7 % 101} for case {i}."},
        ]
        out.append({"messages": messages, "tools": catalog})
    return out
