#!/usr/bin/env python3
"""Write the small per-format samples in this directory (deterministic: two runs give identical bytes).

    python sample_data/formats/make_samples.py

* ``messages.jsonl``          OpenAI / TRL conversational: content parts, tool calls, reasoning_content
* ``sharegpt.json``           ShareGPT (a JSON array): human/gpt, a system field, function_call/observation
* ``alpaca.json``             Alpaca (a JSON array): instruction, input, system, history
* ``prompt_completion.jsonl`` TRL prompt-completion: plain strings and lists of messages
* ``text.jsonl``              plain text for continued pre-training
* ``broken.jsonl``            deliberately broken: one record per kind of bad input padprep reports
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_current_weather",
        "description": "Get the current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
            "required": ["city"],
        },
    },
}

MESSAGES = [
    {"messages": [
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": "The capital of France is Paris."},
    ]},
    {"messages": [
        {"role": "system", "content": "You answer in one short sentence."},
        {"role": "user", "content": [{"type": "text", "text": "Name a primary colour."}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Red is a primary colour."}]},
    ]},
    {"messages": [
        {"role": "user", "content": "Is it warm in Lisbon right now?"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"type": "function", "function": {"name": "get_current_weather", "arguments": {"city": "Lisbon", "unit": "celsius"}}}
        ]},
        {"role": "tool", "content": "{\"city\": \"Lisbon\", \"temperature\": 24, \"unit\": \"celsius\"}"},
        {"role": "assistant", "content": "Yes: it is 24 degrees Celsius in Lisbon."},
    ], "tools": [WEATHER_TOOL]},
    {"messages": [
        {"role": "user", "content": "What is 12 times 12?"},
        {"role": "assistant", "reasoning_content": "12 x 12 = 144.", "content": "12 times 12 is 144."},
        {"role": "user", "content": "And 13 times 13?"},
        {"role": "assistant", "reasoning_content": "13 x 13 = 169.", "content": "13 times 13 is 169."},
    ]},
]

SHAREGPT = [
    {"conversations": [
        {"from": "human", "value": "How many legs does a spider have?"},
        {"from": "gpt", "value": "A spider has eight legs."},
    ]},
    {"system": "You are a patient maths tutor.", "conversations": [
        {"from": "human", "value": "What is a prime number?"},
        {"from": "gpt", "value": "A whole number above 1 whose only divisors are 1 and itself, like 2, 3, 5 and 7."},
        {"from": "human", "value": "Is 9 prime?"},
        {"from": "gpt", "value": "No: 9 is 3 times 3."},
    ]},
    {"conversations": [
        {"from": "human", "value": "What's the weather in Oslo?"},
        {"from": "function_call", "value": "{\"name\": \"get_current_weather\", \"arguments\": {\"city\": \"Oslo\"}}"},
        {"from": "observation", "value": "{\"city\": \"Oslo\", \"temperature\": 3, \"condition\": \"snow\"}"},
        {"from": "gpt", "value": "It is 3 degrees and snowing in Oslo."},
    ], "tools": json.dumps([WEATHER_TOOL["function"]])},
]

ALPACA = [
    {"instruction": "Give a synonym for the word.", "input": "happy", "output": "Cheerful."},
    {"instruction": "Write a haiku about the sea.", "input": "",
     "output": "Grey waves fold and break,\nsalt wind carries gull voices,\nthe tide keeps its time."},
    {"instruction": "Translate to French.", "input": "Good morning", "output": "Bonjour.",
     "system": "You are a translator."},
    {"instruction": "And good night?", "input": "", "output": "Bonne nuit.",
     "history": [["Translate to French: thank you", "Merci."]]},
]

PROMPT_COMPLETION = [
    {"prompt": "The three states of matter are", "completion": " solid, liquid and gas."},
    {"prompt": "Water boils at sea level at", "completion": " 100 degrees Celsius."},
    {"prompt": [{"role": "user", "content": "What colour is the sky on a clear day?"}],
     "completion": [{"role": "assistant", "content": "Blue."}]},
    {"prompt": [{"role": "system", "content": "Answer with one word."}, {"role": "user", "content": "Opposite of cold?"}],
     "completion": [{"role": "assistant", "content": "Hot."}]},
]

TEXT = [
    {"text": "Bees communicate the direction of flowers with a waggle dance. The angle of the dance to the "
             "vertical matches the angle of the food source to the sun."},
    {"text": "The Rhine rises in the Swiss Alps and flows into the North Sea near Rotterdam."},
    {"text": "A haiku has three lines of five, seven and five syllables."},
]


def line(obj) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode("utf-8")


def broken() -> bytes:
    """One bad record of each kind padprep reports, between good ones, with harmless quirks around them."""
    good = {"messages": [{"role": "user", "content": "Say hi."}, {"role": "assistant", "content": "Hi!"}]}
    long_reply = " ".join(["This reply is longer than the length limit of the example build."] * 12)
    rows = [
        b"\xef\xbb\xbf" + line(good) + b"\r",  # byte-order mark and CRLF: accepted silently
        line({"messages": [{"role": "user", "content": "Count to three."}, {"role": "assistant", "content": "1, 2, 3."}]}) + b"   \r",
        b"\r",  # blank line: not a record
        b'{"messages": [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hi"}',  # cut off
        '{"messages": [{"role": "user", "content": "Café?"}, {"role": "assistant", "content": "Oui."}]}'.encode("latin-1"),
        b"\x00" * 48,  # a block of NUL bytes, as a crash leaves in a file
        line({"mesages": [{"role": "user", "content": "Typo?"}, {"role": "assistant", "content": "Yes."}]}),
        line({"messages": [{"role": "user", "content": "Who are you?"}, {"role": "bot", "content": "A bot."}]}),
        line({"messages": [{"role": "user", "content": "Anything?"}, {"role": "assistant", "content": ""}]}),
        line({"messages": [{"role": "assistant", "content": "How can I help?"}, {"role": "user", "content": "Bye."}]}),
        b'{"messages": [{"role": "user", "content": "Smile \\ud83d"}, {"role": "assistant", "content": "Half an emoji."}]}',
        line({"messages": [{"role": "user", "content": "Weather?"},
                           {"role": "assistant", "content": "", "tool_calls": [{"function": {"arguments": {"city": "Rome"}}}]}]}),
        line({"instruction": "An alpaca record", "output": "in a messages file."}),
        line({"messages": [{"role": "user", "content": "Tell me a long story."}, {"role": "assistant", "content": long_reply}]}),
        line({"messages": [{"role": "user", "content": "Last one?"}, {"role": "assistant", "content": "Yes, the last one."}]}) + b"\t",
    ]
    return b"\n".join(rows) + b"\n"


def main() -> None:
    (HERE / "messages.jsonl").write_bytes(b"".join(line(r) + b"\n" for r in MESSAGES))
    (HERE / "sharegpt.json").write_text(json.dumps(SHAREGPT, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    (HERE / "alpaca.json").write_text(json.dumps(ALPACA, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    (HERE / "prompt_completion.jsonl").write_bytes(b"".join(line(r) + b"\n" for r in PROMPT_COMPLETION))
    (HERE / "text.jsonl").write_bytes(b"".join(line(r) + b"\n" for r in TEXT))
    (HERE / "broken.jsonl").write_bytes(broken())


if __name__ == "__main__":
    main()
