"""Input formats: detection, conversion to the common conversation, and the rows and labels they give.

Chat formats are checked against transformers' ``apply_chat_template`` on the conversation each record
should become (ids exact, trained text = every reply through its end-of-turn token); raw-text
formats against the tokenizer itself (``tokenizer(text + eos)``, as TRL builds them).
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from padprep.config import InputFormat
from padprep.input.conversation import Conversation, Reject, to_conversation
from padprep.input.formats import FieldNames, FormatOptions, convert, detect_format
from padprep.input.read import read_records
from padprep.input.records import RawRecord
from tests.conftest import (
    SAMPLE,
    alpaca_to_messages,
    padprep_cli,
    run_build,
    shared_file,
    sharegpt_to_messages,
    unpadded_rows,
    write_jsonl,
)

transformers = pytest.importorskip("transformers")

FORMATS_DIR = SAMPLE / "formats"
TOK = SAMPLE / "tokenizer"
TOK_BOS = SAMPLE / "tokenizer-bos"


@pytest.fixture(scope="module")
def hf_tok():
    return transformers.AutoTokenizer.from_pretrained(str(TOK))


@pytest.fixture(scope="module")
def hf_tok_bos():
    return transformers.AutoTokenizer.from_pretrained(str(TOK_BOS))


def conversations_of(path: Path, options: FormatOptions = FormatOptions()) -> list[Conversation]:
    """What normalize makes of each record of a file, with the file's detected format."""
    from padprep.input.formats import with_formats

    out = []
    for rec in with_formats(str(path), read_records(str(path)), options, {}):
        conv = to_conversation(rec, options=options)
        assert isinstance(conv, Conversation), conv
        out.append(conv)
    return out


def plain(messages) -> list[dict]:
    return [dict(m) for m in messages]


def chat_reference(tok, messages: list[dict], tools=None) -> tuple[tuple[int, ...], str]:
    """(input_ids, text every assistant reply should train) from transformers, for the ChatML sample template."""
    ids = tok.apply_chat_template(messages, tools=tools, tokenize=True, return_dict=False)
    ids = tuple(ids["input_ids"] if hasattr(ids, "keys") else ids)
    text = tok.apply_chat_template(messages, tools=tools, tokenize=False)
    trained = "".join(part.split("<|im_end|>")[0] + "<|im_end|>" for part in text.split("<|im_start|>assistant\n")[1:])
    return ids, trained


def rows_by_ids(output: Path) -> dict[tuple[int, ...], np.ndarray]:
    return {tuple(ids.tolist()): labels for ids, labels in unpadded_rows(output)}


def trained_text(tok, labels: np.ndarray) -> str:
    return tok.decode([int(t) for t in labels if t != -100], skip_special_tokens=False)


def assert_chat_rows(tok, output: Path, expected: list[tuple[list[dict], list | None]]) -> None:
    rows = rows_by_ids(output)
    assert len(rows) == len(expected)
    for messages, tools in expected:
        ids, trained = chat_reference(tok, messages, tools)
        assert ids in rows, "a row differs from apply_chat_template on the converted conversation"
        assert trained_text(tok, rows[ids]) == trained


# -- each format, on the project's samples ------------------------------------------------------------


def test_messages_sample(tmp_path, hf_tok):
    src = FORMATS_DIR / "messages.jsonl"
    raw = [json.loads(line) for line in src.read_text().splitlines()]
    convs = conversations_of(src)
    assert [c.format for c in convs] == ["messages"] * len(raw)
    # content parts become their text; tool calls, tool results and reasoning are kept as given
    assert convs[1].messages[1]["content"] == "Name a primary colour."
    assert convs[2].messages[1]["tool_calls"] == raw[2]["messages"][1]["tool_calls"]
    assert convs[2].messages[2]["role"] == "tool" and convs[2].tools == raw[2]["tools"]
    assert convs[3].messages[1]["reasoning_content"] == "12 x 12 = 144."
    assert convs[3].messages[3]["reasoning_content"] == "13 x 13 = 169."
    manifest = run_build([src], TOK, tmp_path / "o")
    assert manifest["inputs"][0]["format"] == "messages"
    assert_chat_rows(hf_tok, tmp_path / "o", [(plain(c.messages), c.tools) for c in convs])


@pytest.mark.slow  # over a second: out of make test-fast (under a minute)
def test_messages_reasoning_with_qwen3_matches_transformers(tmp_path, qwen_dir):
    """Qwen3 renders the last reply's reasoning_content as a <think> block: ids as transformers gives them."""
    tok = transformers.AutoTokenizer.from_pretrained(str(qwen_dir))
    src = FORMATS_DIR / "messages.jsonl"
    convs = conversations_of(src)
    run_build([src], qwen_dir, tmp_path / "o")
    rows = rows_by_ids(tmp_path / "o")
    for conv in convs:
        ids = tok.apply_chat_template(plain(conv.messages), tools=conv.tools, tokenize=True, return_dict=False)
        ids = tuple(ids["input_ids"] if hasattr(ids, "keys") else ids)
        assert ids in rows
        if conv.messages[-1].get("reasoning_content"):
            assert "<think>\n13 x 13 = 169.\n</think>" in tok.decode(list(ids))
            assert "13 x 13 = 169." in tok.decode([int(t) for t in rows[ids] if t != -100])  # reasoning is trained


def test_sharegpt_sample(tmp_path, hf_tok):
    src = FORMATS_DIR / "sharegpt.json"
    records = json.loads(src.read_text())
    convs = conversations_of(src)
    assert [list(c.messages) for c in convs] == [sharegpt_to_messages(r)["messages"] for r in records]
    assert convs[1].messages[0] == {"role": "system", "content": "You are a patient maths tutor."}
    call = convs[2].messages[1]
    assert call == {
        "role": "assistant",
        "content": "",
        "tool_calls": [{"type": "function", "function": {"name": "get_current_weather", "arguments": {"city": "Oslo"}}}],
    }
    assert convs[2].messages[2]["role"] == "tool"
    assert convs[2].tools == json.loads(records[2]["tools"])  # the JSON string is parsed
    manifest = run_build([src], TOK, tmp_path / "o")
    assert (manifest["inputs"][0]["format"], manifest["inputs"][0]["format_origin"]) == ("sharegpt", "detected from element 0")
    assert_chat_rows(hf_tok, tmp_path / "o", [(plain(c.messages), c.tools) for c in convs])
    # the tool call is trained: the model must learn to emit it
    rows = rows_by_ids(tmp_path / "o")
    assert any("<tool_call>" in trained_text(hf_tok, labels) for labels in rows.values())


def test_alpaca_sample(tmp_path, hf_tok):
    src = FORMATS_DIR / "alpaca.json"
    convs = conversations_of(src)
    assert [plain(c.messages) for c in convs] == [
        [{"role": "user", "content": "Give a synonym for the word.\nhappy"}, {"role": "assistant", "content": "Cheerful."}],
        [
            {"role": "user", "content": "Write a haiku about the sea."},
            {
                "role": "assistant",
                "content": "Grey waves fold and break,\nsalt wind carries gull voices,\nthe tide keeps its time.",
            },
        ],
        [
            {"role": "system", "content": "You are a translator."},
            {"role": "user", "content": "Translate to French.\nGood morning"},
            {"role": "assistant", "content": "Bonjour."},
        ],
        [
            {"role": "user", "content": "Translate to French: thank you"},
            {"role": "assistant", "content": "Merci."},
            {"role": "user", "content": "And good night?"},
            {"role": "assistant", "content": "Bonne nuit."},
        ],
    ]
    run_build([src], TOK, tmp_path / "o")
    assert_chat_rows(hf_tok, tmp_path / "o", [(plain(c.messages), None) for c in convs])


def test_prompt_completion_sample(tmp_path, hf_tok):
    src = FORMATS_DIR / "prompt_completion.jsonl"
    records = [json.loads(line) for line in src.read_text().splitlines()]
    manifest = run_build([src], TOK, tmp_path / "o")
    assert manifest["inputs"][0]["format"] == "prompt-completion"
    rows = rows_by_ids(tmp_path / "o")
    assert len(rows) == 4
    eos = hf_tok.eos_token
    for rec in records:
        if isinstance(rec["prompt"], str):  # raw text, no template; the prompt is masked, completion + eos trained
            ids = tuple(hf_tok(rec["prompt"] + rec["completion"] + eos)["input_ids"])
            assert ids in rows
            assert trained_text(hf_tok, rows[ids]) == rec["completion"] + eos
            n_prompt = len(hf_tok(rec["prompt"])["input_ids"])
            assert (rows[ids][:n_prompt] == -100).all()
        else:  # conversational: the template, only the completion's assistant turns trained
            ids, trained = chat_reference(hf_tok, rec["prompt"] + rec["completion"])
            assert ids in rows and trained_text(hf_tok, rows[ids]) == trained


def test_prompt_completion_trains_only_the_completion_turns(tmp_path, hf_tok):
    """An assistant turn inside the prompt (few-shot) is context, not target."""
    rec = {
        "prompt": [
            {"role": "user", "content": "2+2?"},
            {"role": "assistant", "content": "4"},
            {"role": "user", "content": "3+3?"},
        ],
        "completion": [{"role": "assistant", "content": "6"}],
    }
    conv = to_conversation(RawRecord("x", 1, json.dumps(rec)))
    assert conv.train_from == 3 and conv.assistant_indices == [3]
    run_build([write_jsonl(tmp_path / "pc.jsonl", [rec])], TOK, tmp_path / "o")
    ((ids, labels),) = unpadded_rows(tmp_path / "o")
    assert trained_text(hf_tok, labels) == "6<|im_end|>"


def test_text_sample_without_bos(tmp_path, hf_tok):
    src = FORMATS_DIR / "text.jsonl"
    texts = [json.loads(line)["text"] for line in src.read_text().splitlines()]
    manifest = run_build([src], TOK, tmp_path / "o")
    assert manifest["inputs"][0]["format"] == "text"
    rows = rows_by_ids(tmp_path / "o")
    for text in texts:
        ids = tuple(hf_tok(text + hf_tok.eos_token)["input_ids"])  # what TRL's SFT builds for {"text"}
        assert ids in rows and rows[ids].tolist() == list(ids)  # every token trained, eos included
    assert manifest["totals"]["trained_tokens"] == manifest["totals"]["real_tokens"]


def test_text_no_append_eos(tmp_path, hf_tok):
    src = FORMATS_DIR / "text.jsonl"
    run_build([src], TOK, tmp_path / "o", append_eos=False)
    text = json.loads(src.read_text().splitlines()[0])["text"]
    assert tuple(hf_tok(text)["input_ids"]) in rows_by_ids(tmp_path / "o")


# -- real data -----------------------------------------------------------------------------------------


def test_glaive_sharegpt_converts_like_the_reference_helper(tmp_path, qwen_dir):
    """glaive_toolcall (ShareGPT with function calls) read directly == the converted messages file
    that test_reference checks against transformers, to the token."""
    src = shared_file("glaive_toolcall_en_demo.json")
    records = json.loads(src.read_text())
    convs = conversations_of(src)
    for rec, conv in zip(records, convs, strict=True):
        ref = sharegpt_to_messages(rec)
        assert list(conv.messages) == ref["messages"]
        assert conv.tools == (ref.get("tools") or None)  # an empty tool list is no tools
    direct = run_build([src], qwen_dir, tmp_path / "direct")
    assert direct["inputs"][0]["format"] == "sharegpt" and direct["totals"]["rows_written"] == len(records)
    converted = write_jsonl(tmp_path / "converted.jsonl", [sharegpt_to_messages(r) for r in records])
    run_build([converted], qwen_dir, tmp_path / "converted")
    a, b = unpadded_rows(tmp_path / "direct"), unpadded_rows(tmp_path / "converted")
    assert sorted((x.tolist(), y.tolist()) for x, y in a) == sorted((x.tolist(), y.tolist()) for x, y in b)


def test_alpaca_demo_converts_like_the_reference_helper(tmp_path, hf_tok):
    src = shared_file("alpaca_en_demo.json")
    records = json.loads(src.read_text())
    convs = conversations_of(src)
    assert [list(c.messages) for c in convs] == [alpaca_to_messages(r)["messages"] for r in records]
    manifest = run_build([src], TOK, tmp_path / "o")
    assert manifest["totals"]["rows_written"] == len(records) and manifest["inputs"][0]["format"] == "alpaca"
    some = records[:40] + [r for r in records if r["input"]][:40]
    rows = rows_by_ids(tmp_path / "o")
    for rec in some:
        ids, trained = chat_reference(hf_tok, alpaca_to_messages(rec)["messages"])
        assert ids in rows and trained_text(hf_tok, rows[ids]) == trained


def test_c4_text_with_bos_adding_tokenizer(tmp_path, hf_tok_bos):
    """Pre-training text: the post-processor's BOS once, the eos appended, every token trained; no chat
    template is needed (this tokenizer has none)."""
    src = shared_file("c4_demo.jsonl")
    texts = [json.loads(line)["text"] for line in src.read_text().splitlines()]
    manifest = run_build([src], TOK_BOS, tmp_path / "o")
    assert manifest["inputs"][0]["format"] == "text" and manifest["totals"]["rows_written"] == len(texts)
    assert manifest["chat_template"]["sha256"] is None
    rows = rows_by_ids(tmp_path / "o")
    bos, eos = hf_tok_bos.bos_token_id, hf_tok_bos.eos_token_id
    for text in texts[:100]:
        ids = tuple(hf_tok_bos(text + hf_tok_bos.eos_token)["input_ids"])
        assert ids in rows and rows[ids].tolist() == list(ids)
        assert ids[0] == bos != ids[1] and ids[-1] == eos


def test_text_that_writes_its_own_bos_gets_one(tmp_path, hf_tok_bos):
    rec = {"text": hf_tok_bos.bos_token + "Hello world."}
    run_build([write_jsonl(tmp_path / "t.jsonl", [rec])], TOK_BOS, tmp_path / "o")
    ((ids, _),) = unpadded_rows(tmp_path / "o")
    assert ids[0] == hf_tok_bos.bos_token_id != ids[1]


# -- files, detection, options ---------------------------------------------------------------------


def test_several_files_of_different_formats_and_containers(tmp_path):
    import zstandard

    msgs = (FORMATS_DIR / "messages.jsonl").read_bytes()
    (tmp_path / "m.jsonl.gz").write_bytes(gzip.compress(msgs))
    (tmp_path / "t.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress((FORMATS_DIR / "text.jsonl").read_bytes()))
    (tmp_path / "a.json.gz").write_bytes(gzip.compress((FORMATS_DIR / "alpaca.json").read_bytes()))
    inputs = [
        tmp_path / "m.jsonl.gz",
        tmp_path / "t.jsonl.zst",
        tmp_path / "a.json.gz",
        FORMATS_DIR / "sharegpt.json",
        FORMATS_DIR / "prompt_completion.jsonl",
    ]
    manifest = run_build(inputs, TOK, tmp_path / "o", workers=2, chunk_size=2)
    assert [i["format"] for i in manifest["inputs"]] == ["messages", "text", "alpaca", "sharegpt", "prompt-completion"]
    assert [i["rows_written"] for i in manifest["inputs"]] == [4, 3, 4, 3, 4]
    t = manifest["totals"]
    assert t["records_read"] == t["rows_written"] == 18 and t["rejected"] == t["dropped"] == 0
    # the same rows as building each plain file on its own
    run_build([FORMATS_DIR / "messages.jsonl"], TOK, tmp_path / "single")
    mine = {tuple(i.tolist()) for i, _ in unpadded_rows(tmp_path / "o")}
    assert {tuple(i.tolist()) for i, _ in unpadded_rows(tmp_path / "single")} <= mine


def test_json_named_file_holding_json_lines(tmp_path):
    """datasets' to_json writes JSON Lines under a .json name: read as lines."""
    src = tmp_path / "data.json"
    src.write_bytes((FORMATS_DIR / "text.jsonl").read_bytes())
    recs = list(read_records(str(src)))
    assert [r.line for r in recs] == [1, 2, 3] and all(r.unit == "line" for r in recs)


@pytest.mark.slow  # over a second: out of make test-fast (under a minute)
def test_stdin_json_array(tmp_path):
    """Standard input holding one JSON array (JSON Lines on stdin: tests/test_cli.py)."""
    res = padprep_cli(
        "build", "-", "--tokenizer", str(TOK), "--output", str(tmp_path / "b"), input=(FORMATS_DIR / "sharegpt.json").read_text()
    )
    assert res.returncode == 0, res.stderr
    assert "input -: sharegpt (detected from element 0): 3 read, 3 written, 0 rejected, 0 dropped" in res.stdout
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["inputs"][0] == {**manifest["inputs"][0], "path": "-", "format": "sharegpt", "rows_written": 3}


def test_detection_and_forced_format():
    names = FieldNames()
    assert detect_format({"messages": [{"role": "user", "content": "x"}]}) == "messages"
    assert detect_format({"conversations": [{"from": "human", "value": "x"}]}) == "sharegpt"
    assert detect_format({"messages": [{"from": "human", "value": "x"}]}) == "sharegpt"  # LLaMA-Factory style key
    assert detect_format({"conversations": [{"role": "user", "content": "x"}]}) == "messages"
    assert detect_format({"instruction": "a", "output": "b"}) == "alpaca"
    assert detect_format({"prompt": "a", "completion": "b"}) == "prompt-completion"
    assert detect_format({"text": "a"}) == "text"
    assert detect_format({"prompt": "a"}) is None and detect_format([1]) is None
    assert detect_format({"dialog": [{"role": "user"}]}, FieldNames(messages="dialog")) == "messages"
    assert names.messages == "messages"


def test_a_record_of_another_shape_in_a_file_is_rejected(tmp_path):
    good = json.loads((FORMATS_DIR / "messages.jsonl").read_text().splitlines()[0])
    src = write_jsonl(tmp_path / "mixed.jsonl", [good, {"instruction": "hi", "output": "there"}, good])
    m = run_build([src], TOK, tmp_path / "o", max_reject_rate=1.0, allow_empty=True)
    assert (m["totals"]["rows_written"], m["totals"]["rejected"]) == (2, 1)
    reject = json.loads((tmp_path / "o" / "rejects.jsonl").read_text())
    assert reject["line"] == 2
    assert reject["reason"].startswith("record has the alpaca shape but its file holds messages records")
    # --format forces one reading on every record: the same record now fails for what it lacks
    m = run_build([src], TOK, tmp_path / "f", max_reject_rate=1.0, input_format=InputFormat.messages)
    reject = json.loads((tmp_path / "f" / "rejects.jsonl").read_text())
    assert reject["reason"] == "missing field `messages`"
    assert m["inputs"][0]["format_origin"] == "--format"


def test_broken_first_line_is_judged_by_the_files_format(tmp_path):
    good = json.loads((FORMATS_DIR / "text.jsonl").read_text().splitlines()[0])
    src = tmp_path / "t.jsonl"
    src.write_text('{"txt": "typo"}\n' + json.dumps(good) + "\n")
    m = run_build([src], TOK, tmp_path / "o", max_reject_rate=1.0, allow_empty=True)
    assert m["inputs"][0]["format"] == "text" and m["inputs"][0]["format_origin"] == "detected from line 2"
    assert json.loads((tmp_path / "o" / "rejects.jsonl").read_text())["reason"] == "missing field `text`"


def test_file_of_no_known_shape(tmp_path):
    src = write_jsonl(tmp_path / "x.jsonl", [{"question": "a", "answer": "b"}] * 3)
    m = run_build([src], TOK, tmp_path / "o", max_reject_rate=1.0, allow_empty=True)
    assert m["inputs"][0]["format"] is None and m["totals"]["rejected"] == 3
    reason = json.loads((tmp_path / "o" / "rejects.jsonl").read_text().splitlines()[0])["reason"]
    assert reason.startswith("no known format: keys `question`, `answer`") and "--format" in reason


@pytest.mark.slow  # over a second: out of make test-fast (under a minute)
def test_renamed_fields_and_role_map(tmp_path, hf_tok):
    rec = {"dialog": [{"role": "human", "content": "Hi"}, {"role": "bot", "content": "Hello!"}]}
    src = write_jsonl(tmp_path / "d.jsonl", [rec])
    res = padprep_cli(
        "build",
        str(src),
        "-t",
        str(TOK),
        "-o",
        str(tmp_path / "o"),
        "--messages-field",
        "dialog",
        "--role-map",
        "human=user,bot=assistant",
    )
    assert res.returncode == 0, res.stderr
    manifest = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert manifest["options"]["field_names"] == {"messages": "dialog"}
    assert manifest["options"]["role_map"] == {"human": "user", "bot": "assistant"}
    assert_chat_rows(
        hf_tok, tmp_path / "o", [([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}], None)]
    )
    # ShareGPT with other speaker names, and a text file with another key
    share = {"conversations": [{"from": "prompter", "value": "Hi"}, {"from": "model", "value": "Hello!"}]}
    opts = FormatOptions(role_map=(("prompter", "user"), ("model", "assistant")))
    out = convert(share, "sharegpt", opts)
    assert [m["role"] for m in out.messages] == ["user", "assistant"]
    assert convert({"content": "abc"}, "text", FormatOptions(fields=FieldNames(text="content"))).text == "abc"
    import typer

    from padprep.cli import _pairs
    from padprep.config import BuildConfig

    with pytest.raises(typer.BadParameter, match="FROM=TO"):
        _pairs("bot", "--role-map")
    with pytest.raises(ValueError, match="function_call"):
        BuildConfig(inputs=(src,), tokenizer=str(TOK), output=tmp_path / "x", role_map=(("bot", "robot"),))
    with pytest.raises(ValueError, match="renamable fields"):
        BuildConfig(inputs=(src,), tokenizer=str(TOK), output=tmp_path / "x", field_names=(("dialogue", "x"),))


@pytest.mark.parametrize(
    "record, fmt, reason",
    [
        (
            {"conversations": [{"from": "human", "value": "hi"}, {"from": "bot", "value": "x"}]},
            "sharegpt",
            "unknown role `bot` (did you mean `--role-map bot=assistant`?)",
        ),
        (
            {"conversations": [{"from": "human", "value": "hi"}, {"from": "function_call", "value": "{oops"}]},
            "sharegpt",
            "function_call value is not valid JSON",
        ),
        ({"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt"}]}, "sharegpt", "missing field `value`"),
        (
            {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "x"}], "tools": "[oops"},
            "sharegpt",
            "`tools` is a string but not valid JSON",
        ),
        ({"instruction": "a"}, "alpaca", "missing field `output`"),
        ({"instruction": "a", "output": ["b", "c"]}, "alpaca", "`output` must be a string, got an array"),
        ({"instruction": "", "input": "", "output": "b"}, "alpaca", "`instruction` and `input` are both empty"),
        ({"instruction": "a", "output": "b", "history": [["q"]]}, "alpaca", "history entry must be a [prompt, reply] pair"),
        ({"instruction": "a", "output": " "}, "alpaca", "empty assistant reply"),
        ({"prompt": "a", "completion": ""}, "prompt-completion", "empty `completion` (nothing to train)"),
        (
            {"prompt": [{"role": "user", "content": "a"}], "completion": [{"role": "user", "content": "b"}]},
            "prompt-completion",
            "`completion` holds no assistant message",
        ),
        ({"prompt": 3, "completion": "b"}, "prompt-completion", "`prompt` must be a string or a list of messages"),
        ({"text": ""}, "text", "empty `text`"),
        ({"text": 5}, "text", "`text` must be a string, got a number"),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "image", "url": "/etc/passwd"}]},
                    {"role": "assistant", "content": "x"},
                ]
            },
            "messages",
            "unsupported content part type `image`",
        ),
        (
            {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b", "tool_calls": "x"}]},
            "messages",
            "`tool_calls` must be a list of objects",
        ),
        ({"messages": []}, "messages", "`messages` must be a non-empty list"),
    ],
)
def test_specific_reasons(record, fmt, reason):
    out = to_conversation(RawRecord("f.jsonl", 7, json.dumps(record), format=fmt))
    assert isinstance(out, Reject)
    assert out.reason.startswith(reason), out.reason
    assert out.as_json()["record"] == json.dumps(record)


def test_sample_formats_are_regenerable(tmp_path):
    script = FORMATS_DIR / "make_samples.py"
    namespace = {"__name__": "make_samples", "__file__": str(script)}
    exec(compile(script.read_text(), str(script), "exec"), namespace)  # no bytecode left in sample_data/
    namespace["HERE"] = tmp_path
    namespace["main"]()
    written = sorted(f.name for f in tmp_path.iterdir())
    assert written == ["alpaca.json", "broken.jsonl", "messages.jsonl", "prompt_completion.jsonl", "sharegpt.json", "text.jsonl"]
    for name in written:
        assert (tmp_path / name).read_bytes() == (FORMATS_DIR / name).read_bytes(), name


def test_with_format_keeps_every_field_of_the_record():
    import dataclasses

    from padprep.input.records import RawRecord

    values = {
        "source": "f.jsonl",
        "line": 7,
        "text": None,
        "error": "bad",
        "raw": b"\xff",
        "unit": "index",
        "format": None,
        "raw_is_prefix": True,
        "error_code": "not_utf8",
        "row": {"messages": []},
    }
    assert set(values) == {f.name for f in dataclasses.fields(RawRecord)}, "a new RawRecord field: copy it in with_format"
    tagged = RawRecord(**values).with_format("alpaca")
    assert dataclasses.asdict(tagged) == {**values, "format": "alpaca"}
