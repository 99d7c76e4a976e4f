"""Recipe files: what parses, and every mistake as one line naming the file and the key."""

from __future__ import annotations

import pytest

from padprep.config import TrainOn
from padprep.input.formats import FormatOptions
from padprep.recipe.spec import RecipeError, parse_recipe


def test_a_recipe_gives_build_options_sources_and_eval():
    r = parse_recipe(
        "tokenizer: tok/\nmax_length: 4096\ntrain_on: last\nseed: 3\n"
        "sources:\n  - path: a.jsonl\n    count: 30\n  - path: [b/, c.parquet]\n    weight: 1.5\n    fields: {messages: dialog}\n"
        "  - d.jsonl\neval:\n  count: 4\n",
        "r.yaml",
    )
    assert r.options == {"tokenizer": "tok/", "max_length": 4096, "train_on": TrainOn.last, "seed": 3} and r.seed == 3
    assert [s.inputs for s in r.sources] == [("a.jsonl",), ("b/", "c.parquet"), ("d.jsonl",)]
    assert [(s.count, s.weight) for s in r.sources] == [(30, 1.0), (None, 1.5), (None, 1.0)]
    read = r.sources[1].formats_over(FormatOptions(role_map=(("bot", "assistant"),)))
    assert read.fields.messages == "dialog" and read.role_map == (("bot", "assistant"),)  # over the build's own
    assert r.eval.count == 4 and r.eval.fraction is None


@pytest.mark.parametrize(
    "text, said",
    [
        ("sources: [a.jsonl]\nmax_lenght: 5\n", "r.yaml: max_lenght: unknown key; a recipe has"),
        ("max_length: 5\n", "r.yaml: sources: a recipe needs a non-empty `sources` list"),
        ("sources:\n  - count: 3\n", "r.yaml: sources[0].path: missing"),
        (
            "sources:\n  - path: a.jsonl\n    count: 3\n    weight: 2\n",
            "r.yaml: sources[0]: `count` and `weight` exclude each other",
        ),
        ("sources:\n  - path: a.jsonl\n    train_on: last\n", "r.yaml: sources[0].train_on: applies to the whole build"),
        ("sources:\n  - path: a.jsonl\n    cuont: 3\n", "r.yaml: sources[0].cuont: unknown key; a source has path"),
        ("sources:\n  - path: a.jsonl\n    count: -3\n", "r.yaml: sources[0].count: must be positive"),
        ("sources:\n  - path: a.jsonl\n    fraction: 1.5\n", "r.yaml: sources[0].fraction: must be a fraction in (0, 1]"),
        ("sources: [a.jsonl]\neval: {count: 2, fraction: 0.1}\n", "r.yaml: eval: give exactly one of"),
        ("sources: [a.jsonl]\ntrain_on: answers\n", "r.yaml: train_on: 'answers' is not one of assistant, last, all"),
        ("sources: [a.jsonl\n", "r.yaml: not valid YAML at line"),
        ("- a.jsonl\n", "r.yaml: a recipe is a mapping with a `sources` list"),
        (
            "sources:\n  - path: a.jsonl\n    fields: {mesages: dialog}\n",
            "r.yaml: sources[0]: unexpected keyword argument 'mesages'",
        ),
    ],
)
def test_each_mistake_is_one_line_naming_the_key(text, said):
    with pytest.raises(RecipeError) as info:
        parse_recipe(text, "r.yaml")
    assert said in str(info.value) and "\n" not in str(info.value)
    assert info.value.exit_code == 2
