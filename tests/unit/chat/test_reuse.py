"""Exact reuse of repeated text: the same bytes with and without it, on agent data whose tool catalogs repeat,
with the real Qwen3 tokenizer; a tokenizer whose added tokens do not cut exactly gets none."""

from __future__ import annotations

import json

import numpy as np
import pytest
from tokenizers import AddedToken, Tokenizer

from padprep.chat import reuse
from padprep.chat.encode import Encoder, tokenize_batch
from padprep.chat.reuse import Segments
from tests.conftest import SAMPLE, run_build, shard_bytes, shared_file, write_jsonl
from tests.support.catalogs import catalog_conversations


@pytest.fixture(scope="module")
def renders(qwen_dir) -> tuple[Tokenizer, list[str]]:
    transformers = pytest.importorskip("transformers")
    shared_file("glaive_toolcall_en_demo.json")
    tok = transformers.AutoTokenizer.from_pretrained(str(qwen_dir))
    convs = catalog_conversations(64)
    texts = [tok.apply_chat_template(c["messages"], tools=c["tools"], tokenize=False) for c in convs]
    return Tokenizer.from_file(str(qwen_dir / "tokenizer.json")), texts


def test_joined_pieces_are_the_tokenizers_own_ids_and_offsets(renders):
    tok, texts = renders
    encoder = Encoder.probe(tok)
    assert encoder.segments is not None
    first, again = encoder.encode(texts), encoder.encode(texts)
    given = tokenize_batch(tok, texts)
    for a, b, c in zip(given, first, again):
        assert np.array_equal(a.ids, b.ids) and np.array_equal(a.ids, c.ids)
        assert np.array_equal(a.offsets, b.offsets) and np.array_equal(a.offsets, c.offsets)
    assert encoder.segments.hits >= len(texts)  # the second pass took every catalog from the cache
    cached = sum(len(s) for s in encoder.segments.cache)
    assert cached > 0.5 * sum(len(t) for t in texts) / len(texts)  # a catalog is most of a render


def test_build_bytes_are_the_same_with_and_without_reuse(tmp_path, qwen_dir, monkeypatch):
    shared_file("glaive_toolcall_en_demo.json")
    src = write_jsonl(tmp_path / "agent.jsonl", catalog_conversations(400))
    kept = []
    real_keep = Segments.keep
    monkeypatch.setattr(Segments, "keep", lambda self, *a: kept.append(1) or real_keep(self, *a))
    run_build([src], qwen_dir, tmp_path / "reuse", seed=2)
    assert kept, "no stretch was reused: the test shows nothing"
    monkeypatch.setattr(Segments, "probe", classmethod(lambda cls, tokenizer, texts: None))
    run_build([src], qwen_dir, tmp_path / "plain", seed=2)
    assert shard_bytes(tmp_path / "reuse") == shard_bytes(tmp_path / "plain")
    a, b = (json.loads((tmp_path / d / "manifest.json").read_text())["totals"] for d in ("reuse", "plain"))
    assert a == b


def test_added_tokens_that_eat_spaces_are_no_cut():
    tok = Tokenizer.from_file(str(SAMPLE / "tokenizer" / "tokenizer.json"))
    tok.add_special_tokens([AddedToken("<|sep|>", rstrip=True, lstrip=True, normalized=False)])
    cuts = reuse._cutting_tokens(tok)
    assert "<|sep|>" not in cuts and "<|im_end|>" in cuts
    base = Tokenizer.from_file(str(SAMPLE / "tokenizer" / "tokenizer.json"))
    stripping = Tokenizer(base.model)  # the same model, but every added token eats the spaces beside it
    stripping.pre_tokenizer = base.pre_tokenizer
    stripping.add_special_tokens(
        [AddedToken("<|a|>", rstrip=True, normalized=False), AddedToken("<|b|>", lstrip=True, normalized=False)]
    )
    assert Segments.probe(stripping, ["<|a|> x <|b|>"]) is None  # nothing cuts exactly: no reuse at all
    assert Encoder.probe(stripping).segments is None


def test_pieces_cut_only_around_long_stretches():
    segments = Segments(__import__("re").compile(r"<\|im_start\|>|<\|im_end\|>"))
    long = "x" * reuse.MIN_CHARS
    text = f"<|im_start|>system\n{long}<|im_end|>\n<|im_start|>user\nhi<|im_end|>"
    pieces = segments.pieces(text)
    assert "".join(text[s:e] for s, e in pieces) == text
    assert (text.index("system"), text.index(long) + len(long)) in pieces
    assert segments.plan(text) is None  # seen once: nothing to reuse yet
    assert segments.plan(text) is not None  # seen twice: tokenize it apart, and keep it


def test_text_that_does_not_repeat_is_no_longer_scanned(renders, monkeypatch):
    tok, texts = renders
    monkeypatch.setattr(reuse, "GIVE_UP_AFTER", 8)
    encoder = Encoder.probe(tok)
    unique = [f"{i} " + t.replace("<tool_call>", f"<tool_call>{i}") for i, t in enumerate(texts[:16])]
    got = encoder.encode([u.replace("You are", f"[{i}] You are") for i, u in enumerate(unique)])
    assert encoder.segments.gave_up and not encoder.segments.cache
    expected = tokenize_batch(tok, [u.replace("You are", f"[{i}] You are") for i, u in enumerate(unique)])
    assert all(np.array_equal(a.ids, b.ids) and np.array_equal(a.offsets, b.offsets) for a, b in zip(got, expected))
    again = Encoder.probe(tok)
    again.encode(texts[:2]), again.encode(texts[:2]), again.encode(texts)  # catalogs repeat early: kept, no giving up
    assert again.segments.cache and not again.segments.gave_up
