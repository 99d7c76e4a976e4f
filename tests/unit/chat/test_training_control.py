"""Native formats as users have them (LLaMA-Factory v1, one-object .json) and control over what is trained:
per-message ``loss_weight`` / ``train`` / ``training`` flags and ``--reasoning train|mask-empty|mask``."""

from __future__ import annotations

import json

import numpy as np
import pytest

from padprep.config import Reasoning
from padprep.layout.shards import read_shard
from tests.conftest import SAMPLE, padprep_cli, run_build, unpadded_rows, write_jsonl

transformers = pytest.importorskip("transformers")

TOK = SAMPLE / "tokenizer"
WEATHER = {
    "name": "get_weather",
    "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


def v1_record() -> dict:
    """A record as LLaMA-Factory v1 writes it: content parts keyed ``value``, tools as a JSON string."""
    call = json.dumps({"name": "get_weather", "arguments": {"city": "Paris"}})
    return {
        "messages": [
            {
                "role": "system",
                "content": [{"type": "text", "value": "You are "}, {"type": "text", "value": "helpful."}],
                "loss_weight": 0.0,
            },
            {"role": "user", "content": [{"type": "text", "value": "Weather in Paris?"}], "loss_weight": 0.0},
            {
                "role": "assistant",
                "content": [{"type": "reasoning", "value": "I need the tool."}, {"type": "tool_call", "value": call}],
                "loss_weight": 1.0,
            },
            {"role": "tool", "content": [{"type": "text", "value": "20C and sunny"}], "loss_weight": 0.0},
            {"role": "assistant", "content": [{"type": "text", "value": "It is 20C and sunny."}], "loss_weight": 1.0},
        ],
        "tools": json.dumps([WEATHER]),
    }


def v1_as_openai() -> tuple[list, list]:
    """What the v1 record means, in the OpenAI shape apply_chat_template takes."""
    messages = [
        {"role": "system", "content": "You are helpful."},
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": "",
            "reasoning_content": "I need the tool.",
            "tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}],
        },
        {"role": "tool", "content": "20C and sunny"},
        {"role": "assistant", "content": "It is 20C and sunny."},
    ]
    return messages, [{"type": "function", "function": WEATHER}]


@pytest.fixture(scope="module")
def qwen_tok(qwen_dir):
    return transformers.AutoTokenizer.from_pretrained(str(qwen_dir))


def trained_text(tok, labels) -> str:
    return tok.decode([int(t) for t in labels if t != -100], skip_special_tokens=False)


def test_llamafactory_v1_records_build_like_their_openai_meaning(tmp_path, qwen_dir, qwen_tok):
    src = write_jsonl(tmp_path / "v1.jsonl", [v1_record()])
    m = run_build([src], qwen_dir, tmp_path / "out")
    assert m["totals"]["rows_written"] == 1
    ((ids, labels),) = unpadded_rows(tmp_path / "out")
    messages, tools = v1_as_openai()
    ref = qwen_tok.apply_chat_template(messages, tools=tools, tokenize=True, return_dict=False)
    assert ids.tolist() == list(ref["input_ids"] if hasattr(ref, "keys") else ref)
    trained = trained_text(qwen_tok, labels)
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call><|im_end|>' in trained
    assert trained.endswith("It is 20C and sunny.<|im_end|>")
    assert "Weather in Paris?" not in trained and "20C and sunny\n" not in trained


@pytest.mark.parametrize(
    "part, reason",
    [
        ({"type": "image", "value": "x.png"}, "unsupported content part type `image`"),
        ({"type": "tool_call", "value": "{not json"}, "tool_call part is not valid JSON"),
        ({"type": "tool_call", "value": json.dumps({"arguments": {}})}, "tool_call part must be"),
        ({"type": "text"}, "a `text` part needs a string under `text` or `value`"),
    ],
)
def test_bad_content_parts_are_rejected_naming_type_and_field(tmp_path, part, reason):
    rec = {
        "messages": [
            {"role": "user", "content": [{"type": "text", "value": "hi"}, part]},
            {"role": "assistant", "content": [{"type": "text", "value": "yo"}]},
        ]
    }
    src = write_jsonl(
        tmp_path / "bad.jsonl", [rec, {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}]
    )
    m = run_build([src], TOK, tmp_path / "out", max_reject_rate=1.0)
    assert m["totals"]["rejected"] == 1
    reject = json.loads((tmp_path / "out" / "rejects.jsonl").read_text())
    assert reject["reason"].startswith(reason) and reject["field"].startswith("messages[0].content[1]")


def test_text_parts_keyed_text_or_value_both_work(tmp_path):
    recs = [
        {
            "messages": [
                {"role": "user", "content": [{"type": "text", key: "Hello"}]},
                {"role": "assistant", "content": [{"type": "text", key: "Hi!"}]},
            ]
        }
        for key in ("text", "value")
    ]
    run_build([write_jsonl(tmp_path / "a.jsonl", recs)], TOK, tmp_path / "out")
    rows = unpadded_rows(tmp_path / "out")
    assert len(rows) == 2 and rows[0][0].tolist() == rows[1][0].tolist()


@pytest.mark.slow
def test_a_json_file_holding_one_object_is_one_record(tmp_path):
    rec = {"messages": [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello!"}]}
    src = tmp_path / "one.json"
    src.write_text(json.dumps(rec, indent=2))  # pretty-printed, as axolotl's fixtures are
    res = padprep_cli("build", str(src), "-t", str(TOK), "-o", str(tmp_path / "out"))
    assert res.returncode == 0, res.stderr
    assert "read as one JSON object" in res.stderr
    m = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert (m["totals"]["records_read"], m["totals"]["rows_written"], m["totals"]["rejected"]) == (1, 1, 0)
    # several pretty-printed objects in a row: not one object, so read as lines (and the damage reported per line)
    lines = tmp_path / "lines.json"
    lines.write_text(json.dumps(rec) + "\n" + json.dumps(rec) + "\n")
    res = padprep_cli("build", str(lines), "-t", str(TOK), "-o", str(tmp_path / "out2"))
    assert res.returncode == 0 and "read as JSON Lines" in res.stderr
    assert json.loads((tmp_path / "out2" / "manifest.json").read_text())["totals"]["rows_written"] == 2


def _two_replies(first: dict, second: dict | None = None, user: dict | None = None) -> dict:
    return {
        "messages": [
            {"role": "user", "content": "First question?", **(user or {})},
            {"role": "assistant", "content": "FIRST-ANSWER", **first},
            {"role": "user", "content": "Second question?"},
            {"role": "assistant", "content": "SECOND-ANSWER", **(second or {})},
        ]
    }


def test_training_flags_decide_what_is_trained(tmp_path):
    tok = transformers.AutoTokenizer.from_pretrained(str(TOK))
    recs = [
        _two_replies({"loss_weight": 0.0}),
        _two_replies({"train": False}),
        _two_replies({"training": False}, {"training": True}),
        _two_replies({"loss_weight": 1}),
        _two_replies({}, None, {"train": True}),  # a user turn the user asks to train
    ]
    m = run_build([write_jsonl(tmp_path / "a.jsonl", recs)], TOK, tmp_path / "out")
    rows = unpadded_rows(tmp_path / "out")
    texts = [trained_text(tok, labels) for _, labels in rows]
    assert sum("FIRST-ANSWER" not in t and "SECOND-ANSWER<|im_end|>" in t for t in texts) == 3
    assert any("FIRST-ANSWER<|im_end|>" in t and "SECOND-ANSWER<|im_end|>" in t and "First question?" not in t for t in texts)
    assert any("First question?<|im_end|>" in t and "FIRST-ANSWER" in t for t in texts)
    assert m["totals"]["replies_masked_by_flag"] == 3 and m["totals"]["messages_trained_by_flag"] == 1
    assert "loss_weights" not in read_shard(tmp_path / "out" / m["shards"][0]["file"])  # no fractional weight: no column


def test_a_conversation_whose_flags_mask_everything_is_dropped(tmp_path):
    recs = [_two_replies({"loss_weight": 0}, {"train": False}), _two_replies({})]
    m = run_build([write_jsonl(tmp_path / "a.jsonl", recs)], TOK, tmp_path / "out")
    assert (m["totals"]["rows_written"], m["totals"]["dropped"]) == (1, 1)
    reject = json.loads((tmp_path / "out" / "rejects.jsonl").read_text())
    assert reject["stage"] == "policy" and "loss_weight" in reject["reason"]


@pytest.mark.parametrize(
    "flags, reason",
    [
        ({"loss_weight": -1}, "`loss_weight` must be a number >= 0"),
        ({"loss_weight": "1"}, "`loss_weight` must be a number >= 0"),
        ({"train": 1}, "`train` must be true or false"),
        ({"loss_weight": 0, "train": True}, "disagree"),
    ],
)
def test_bad_training_flags_are_rejected(tmp_path, flags, reason):
    recs = [_two_replies(flags), _two_replies({})]
    run_build([write_jsonl(tmp_path / "a.jsonl", recs)], TOK, tmp_path / "out", max_reject_rate=1.0)
    reject = json.loads((tmp_path / "out" / "rejects.jsonl").read_text())
    assert reason in reject["reason"]


def test_fractional_weights_become_a_loss_weights_column(tmp_path):
    tok = transformers.AutoTokenizer.from_pretrained(str(TOK))
    recs = [_two_replies({"loss_weight": 0.5}), _two_replies({})]
    m = run_build([write_jsonl(tmp_path / "a.jsonl", recs)], TOK, tmp_path / "out")
    assert m["totals"]["rows_with_fractional_weights"] == 1
    seen = []
    for shard in m["shards"]:
        cols = read_shard(tmp_path / "out" / shard["file"])
        assert cols["loss_weights"].dtype == np.float32
        for ids, labels, w in zip(cols["input_ids"], cols["labels"], cols["loss_weights"]):
            assert np.all(w[labels == -100] == 0) and np.all(w[labels != -100] > 0)
            first = labels != -100
            half = w == 0.5
            if half.any():  # exactly the first reply's tokens carry its weight
                assert trained_text(tok, np.where(half, labels, -100)) == "FIRST-ANSWER<|im_end|>"
            seen.append(sorted(set(w[first].tolist())))
    assert sorted(seen) == [[0.5, 1.0], [1.0]]
    res = padprep_cli("inspect", str(tmp_path / "out"), "--verify")
    assert res.returncode == 0, res.stdout + res.stderr
    from padprep.train.loader import load

    batch = load(tmp_path / "out")[0:2]
    assert "loss_weights" in batch and batch["loss_weights"].dtype.is_floating_point


REASONING_RECS = [
    {
        "messages": [
            {"role": "user", "content": "Q1"},
            {"role": "assistant", "content": "A1", "reasoning_content": "R1 thinking."},
            {"role": "user", "content": "Q2"},
            {"role": "assistant", "content": "A2", "reasoning_content": "R2 thinking."},
        ]
    },
    {
        "messages": [{"role": "user", "content": "Q3"}, {"role": "assistant", "content": "A3"}]
    },  # Qwen3 writes an empty think block
]


@pytest.mark.slow  # over a second: out of make test-fast (under a minute)
def test_reasoning_option_masks_think_blocks_and_never_changes_ids(tmp_path, qwen_dir, qwen_tok):
    src = write_jsonl(tmp_path / "r.jsonl", REASONING_RECS)
    out = {}
    for mode in Reasoning:
        m = run_build([src], qwen_dir, tmp_path / mode.value, reasoning=mode)
        out[mode] = (
            m,
            {tuple(ids.tolist()): trained_text(qwen_tok, labels) for ids, labels in unpadded_rows(tmp_path / mode.value)},
        )
    ids_sets = {frozenset(rows) for _, rows in out.values()}
    assert len(ids_sets) == 1  # input_ids identical in every mode
    by = {mode: sorted(rows.values()) for mode, (_, rows) in out.items()}
    train, empty, mask = by[Reasoning.train], by[Reasoning.mask_empty], by[Reasoning.mask]
    assert any("<think>\nR2 thinking.\n</think>\n\nA2<|im_end|>" in t for t in train)
    assert any("<think>\n\n</think>\n\nA3<|im_end|>" in t for t in train)
    assert any(t == "A3<|im_end|>" for t in empty) and any("<think>\nR2 thinking.\n</think>" in t for t in empty)
    assert any(t == "A3<|im_end|>" for t in mask) and any(t == "A1<|im_end|>A2<|im_end|>" for t in mask)
    assert all("<think>" not in t for t in mask)
    assert out[Reasoning.mask][0]["totals"]["think_blocks_masked"] == 2
    assert out[Reasoning.mask_empty][0]["totals"]["think_blocks_masked"] == 1
    assert out[Reasoning.mask][0]["options"]["reasoning"] == "mask"


@pytest.mark.slow  # over a second: out of make test-fast (under a minute)
def test_reasoning_option_without_think_blocks_is_reported_no_op(tmp_path):
    src = write_jsonl(tmp_path / "r.jsonl", REASONING_RECS)
    res = padprep_cli("build", str(src), "-t", str(TOK), "-o", str(tmp_path / "out"), "--reasoning", "mask")
    assert res.returncode == 0, res.stderr
    assert "writes no think block" in res.stderr


def test_fractional_weights_in_a_packed_build(tmp_path):
    recs = [_two_replies({"loss_weight": 0.25}), _two_replies({}), _two_replies({}, {"loss_weight": 2.0})]
    m = run_build([write_jsonl(tmp_path / "a.jsonl", recs)], TOK, tmp_path / "out", pack=True, max_length=256)
    cols = read_shard(tmp_path / "out" / m["shards"][0]["file"])
    weights, labels = cols["loss_weights"], cols["labels"]
    assert np.all(weights[labels == -100] == 0) and set(np.unique(weights[labels != -100]).tolist()) == {0.25, 1.0, 2.0}
    assert cols["input_ids"].shape[0] == 1  # one packed row: sequence starts are flat positions
    starts = np.cumsum(cols["seq_lens"]) - cols["seq_lens"]
    assert np.all(weights.reshape(-1)[starts] == 0)  # no weight where a sequence's first label is -100
    res = padprep_cli("inspect", str(tmp_path / "out"), "--verify")
    assert res.returncode == 0, res.stdout + res.stderr
