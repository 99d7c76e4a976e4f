"""Exact reuse of repeated JSON values (input/repeats.py): the values and errors of ``json.loads``, every time;
the template's ``tojson`` of a kept value is its own text; a build's bytes are the same with and without."""

from __future__ import annotations

import json

import pytest

from padprep.chat import templates
from padprep.input import repeats
from padprep.input.repeats import Repeats
from tests.conftest import run_build, shard_bytes, shared_file, write_jsonl
from tests.support.catalogs import catalog_conversations

LONG = "é" * 300 + "x" * 400  # a value this long is worth keeping


def same(a, b) -> bool:
    """Equal as JSON texts (so 1, 1.0 and True differ) with the same key order."""
    return json.dumps(a, sort_keys=False) == json.dumps(b, sort_keys=False) and type(a) is type(b)


VALID = [
    json.dumps({"messages": [{"role": "user", "content": LONG}], "tools": [{"name": "f", "d": LONG, "n": 1, "x": 1.0}]}),
    # whitespace everywhere JSON allows it, escapes, a duplicate key (the last value wins, the first place)
    ' {\n\t"a" : [ {"k": "' + LONG + '", "t": true, "n": null, "big": 123456789012345678901234567890} ] ,'
    ' "b" :1, "a" : [ "\\u00e9\\ud83d\\ude00", "' + LONG + '" ] , "z": {"nested": {"deep": [' + "1," * 300 + "1]}}\r\n}",
    '{"nan": NaN, "inf": -Infinity, "v": [' + ",".join(['"' + "y" * 60 + '"'] * 20) + "]}",
    '{"lone": "\\ud800", "v": ["' + LONG + '"]}',  # a lone surrogate escape: json.loads takes it, so must this
    "{}",
    "[" + json.dumps(LONG) + "]" * 1,  # not an object: json.loads as it is
]

INVALID = [
    '{"a": [' + json.dumps(LONG) + "] } extra",  # extra data after the object
    '{"a": [' + json.dumps(LONG) + "], }",  # a trailing comma
    '{"a": [' + json.dumps(LONG) + "]",  # unterminated
    '{"a" [' + json.dumps(LONG) + "]}",  # no colon
    "{'a': [" + json.dumps(LONG) + "]}",  # single quotes
    '{"a": "tab\there", "b": [' + json.dumps(LONG) + "]}",  # a control character in a string (strict)
    '{"a": [' + json.dumps(LONG) + "], " + '"n": 1' + "0" * 5000 + "}",  # more digits than Python converts
]


@pytest.mark.parametrize("text", VALID)
def test_loads_gives_json_loads_value_every_time(text):
    memo = Repeats()
    expected = json.loads(text.strip())
    for _ in range(4):  # first sight, second sight (kept), then taken from the memo
        assert same(memo.loads(text.strip()), expected)


@pytest.mark.parametrize("text", INVALID)
def test_loads_raises_what_json_loads_raises(text):
    memo = Repeats()
    with pytest.raises(ValueError) as expected:
        json.loads(text)
    for _ in range(3):
        with pytest.raises(type(expected.value)) as got:
            memo.loads(text)
        assert str(got.value) == str(expected.value)


def test_a_kept_value_is_one_shared_object_and_a_different_tail_is_another():
    memo = Repeats()
    head = [{"name": "shared_head", "description": "z" * 200}]
    a = json.dumps({"messages": [], "tools": head + [{"name": "a", "description": LONG}]})
    b = json.dumps({"messages": [], "tools": head + [{"name": "b", "description": LONG}]})
    for _ in range(2):
        memo.loads(a), memo.loads(b)
    assert memo.hits == 0  # two sights each: kept, not yet taken
    ta, tb = memo.loads(a)["tools"], memo.loads(b)["tools"]
    assert memo.hits == 2 and ta is memo.loads(a)["tools"] and tb is not ta
    assert [t["name"] for t in ta] == ["shared_head", "a"] and [t["name"] for t in tb] == ["shared_head", "b"]
    assert id(ta) in memo.kept_ids and id(ta[1]) in memo.kept_ids
    # a record whose other fields differ still shares the value
    c = json.dumps({"tools": head + [{"name": "a", "description": LONG}], "messages": [{"role": "user", "content": "hi"}]})
    assert memo.loads(c)["tools"] is ta


def test_a_json_string_field_is_parsed_once():
    memo = Repeats()
    text = json.dumps([{"name": "f", "description": LONG}])
    first, second, third = (memo.loads_string(text) for _ in range(3))
    assert first == second == third and third is memo.loads_string(text) and first is not third
    with pytest.raises(json.JSONDecodeError):
        memo.loads_string(text[:-1])


def test_budget_bounds_what_is_kept(monkeypatch):
    monkeypatch.setattr(repeats, "BUDGET_CHARS", 2000)
    memo = Repeats()
    texts = [json.dumps({"v": [str(i) * 1100]}) for i in range(3)]
    for _ in range(4):  # seen, kept, then taken twice
        for t in texts:
            assert memo.loads(t) == json.loads(t)
    assert memo.hits == 2  # only the first value fits the budget


@pytest.mark.parametrize(
    "options",
    [{}, {"indent": 4}, {"indent": 4.0}, {"separators": [",", ":"]}, {"separators": (", ", ": ")}, {"sort_keys": True}],
)
def test_tojson_of_a_kept_value_is_its_own_text(monkeypatch, options):
    memo = Repeats()
    monkeypatch.setattr(templates, "REPEATS", memo)
    text = json.dumps({"tools": [{"name": "f", "b": 1, "a": [1.0, True], "d": LONG}]})
    for _ in range(3):
        tools = memo.loads(text)["tools"]
    assert id(tools[0]) in memo.kept_ids
    for value in (tools, tools[0], tools[0]["a"]):
        try:
            expected = json.dumps(value, ensure_ascii=False, **options)
        except TypeError as exc:  # indent=4.0: json.dumps refuses it, and so must the cached path, each time
            for _ in range(2):
                with pytest.raises(TypeError, match=str(exc)):
                    templates._tojson(value, **options)
            continue
        assert templates._tojson(value, **options) == templates._tojson(value, **options) == expected


def test_build_bytes_are_the_same_with_and_without_repeats(tmp_path, qwen_dir, monkeypatch):
    shared_file("glaive_toolcall_en_demo.json")
    convs = catalog_conversations(300)
    as_list = write_jsonl(tmp_path / "list.jsonl", convs)  # tools as objects
    as_string = write_jsonl(tmp_path / "string.jsonl", [{**c, "tools": json.dumps(c["tools"])} for c in convs])
    kept: list[int] = []
    real_keep = Repeats._keep
    monkeypatch.setattr(Repeats, "_keep", lambda self, *a: kept.append(1) or real_keep(self, *a))
    for src in (as_list, as_string):
        run_build([src], qwen_dir, tmp_path / f"memo-{src.stem}", seed=3)
    assert kept, "no value was kept: the test shows nothing"
    monkeypatch.setattr(repeats, "MIN_CHARS", 1 << 30)  # nothing is long enough: plain json.loads everywhere
    for src in (as_list, as_string):
        run_build([src], qwen_dir, tmp_path / f"plain-{src.stem}", seed=3)
        assert shard_bytes(tmp_path / f"memo-{src.stem}") == shard_bytes(tmp_path / f"plain-{src.stem}")
    assert shard_bytes(tmp_path / "memo-list") == shard_bytes(tmp_path / "memo-string")


def test_data_that_does_not_repeat_goes_straight_to_json_loads(monkeypatch):
    monkeypatch.setattr(repeats, "GIVE_UP_AFTER", 10)
    memo = Repeats()
    unique = [json.dumps({"v": [f"{i} " + LONG]}) for i in range(20)]
    assert [memo.loads(t) for t in unique] == [json.loads(t) for t in unique]
    assert memo.gave_up and memo.hits == 0
    again = Repeats()
    for t in [unique[0]] * 3 + unique:  # a value seen twice early: the memo keeps looking
        assert again.loads(t) == json.loads(t)
    assert not again.gave_up and again.hits == 2


@pytest.mark.parametrize("family", ["glm-4-32b-0414", "qwen-3.5"])
def test_real_templates_render_kept_tools_as_they_render_fresh_ones(tmp_path, family, monkeypatch):
    """GLM-4 writes ``tool.function | tojson(indent=4, ensure_ascii=False)``, Qwen3.5 walks each schema's
    parameters: with the catalogs kept, every render is the one json.loads' fresh values give."""
    from padprep.chat.render import Renderer
    from padprep.chat.tokenizer import load_tokenizer
    from tests.support.families import family_dir

    shared_file("glaive_toolcall_en_demo.json")
    bundle = load_tokenizer(str(family_dir(family)))
    memo = Repeats()
    monkeypatch.setattr(templates, "REPEATS", memo)
    renderer = Renderer(bundle.chat_template, bundle.special)
    lines = [json.dumps(c) for c in catalog_conversations(64)] * 3
    kept = [memo.loads(line) for line in lines]
    fresh = [json.loads(line) for line in lines]
    assert memo.hits >= 64 and id(kept[-1]["tools"][0]["function"]) in memo.kept_ids
    for a, b in zip(kept, fresh):
        assert renderer.render_text(a["messages"], a["tools"], False) == renderer.render_text(b["messages"], b["tools"], False)


def test_the_shared_sharegpt_file_builds_the_same_with_and_without_repeats(tmp_path, qwen_dir, monkeypatch):
    """LLaMA-Factory's glaive file (ShareGPT, ``tools`` a JSON string, records that repeat): the same bytes."""
    src = shared_file("glaive_toolcall_en_demo.json")
    records = json.loads(src.read_text(encoding="utf-8"))
    lines = write_jsonl(tmp_path / "glaive.jsonl", records * 3)
    hits = repeats.REPEATS.hits
    run_build([lines], qwen_dir, tmp_path / "memo", seed=1, max_reject_rate=1.0, workers=1)
    assert repeats.REPEATS.hits > hits, "no tool catalog was reused: the test shows nothing"
    monkeypatch.setattr(repeats, "MIN_CHARS", 1 << 30)
    run_build([lines], qwen_dir, tmp_path / "plain", seed=1, max_reject_rate=1.0, workers=1)
    assert shard_bytes(tmp_path / "memo") == shard_bytes(tmp_path / "plain")
