"""Stage by stage: bucket bounds, padding by position, masks from spans, truncation, --train-on."""

from __future__ import annotations

import itertools
import json
from collections import Counter

import numpy as np
import pytest
import torch

from padprep.chat.encode import tokenize_batch
from padprep.chat.mask import labels_by_offsets, labels_from_spans
from padprep.chat.render import Renderer, align_tail
from padprep.chat.templates import BUILTIN_TEMPLATES
from padprep.config import PaddingSide, TrainOn, Truncation
from padprep.layout.bucket import assign, optimal_bounds, padding_of
from padprep.layout.pad import pad_shard
from tests.conftest import SAMPLE, run_build, unpadded_rows, write_jsonl


def brute_force_padding(hist: Counter, k: int) -> int:
    lengths = sorted(hist)
    best = None
    for cut in itertools.combinations(lengths[:-1], k - 1):
        cost = padding_of(hist, sorted(set(cut) | {lengths[-1]}))
        best = cost if best is None else min(best, cost)
    return best


@pytest.mark.parametrize("seed", range(5))
def test_optimal_bounds_match_brute_force(seed):
    rng = np.random.default_rng(seed)
    hist = Counter(rng.integers(1, 60, size=200).tolist())
    for k in (1, 2, 3, 4):
        bounds = optimal_bounds(hist, target_waste=0.0, max_buckets=k)
        assert len(bounds) <= k and bounds[-1] == max(hist)
        assert padding_of(hist, bounds) == brute_force_padding(hist, k)


def test_default_bounds_reach_target_and_respect_multiple():
    rng = np.random.default_rng(0)
    hist = Counter(np.clip(rng.lognormal(5, 0.8, 5000).astype(int), 1, 2048).tolist())
    bounds = optimal_bounds(hist)
    real = sum(n * c for n, c in hist.items())
    assert padding_of(hist, bounds) / (real + padding_of(hist, bounds)) <= 0.025
    pow2 = [2**i for i in range(12)]
    assert padding_of(hist, bounds) < padding_of(hist, pow2) / 5
    b8 = optimal_bounds(hist, multiple_of=8)
    assert all(b % 8 == 0 for b in b8) and b8[-1] >= max(hist)
    assert list(assign(np.array([1, bounds[0], bounds[0] + 1]), bounds)) == [0, 0, 1]


@pytest.mark.parametrize("side", [PaddingSide.right, PaddingSide.left])
def test_padding_by_position_keeps_real_eos_when_pad_is_eos(side):
    eos = 2
    rows = [np.array([5, 6, eos], np.int32), np.array([7, eos], np.int32), np.array([8, 9, 10, eos], np.int32)]
    labels = [np.array([-100, 6, eos], np.int32), np.array([-100, eos], np.int32), np.array([-100, -100, 10, eos], np.int32)]
    lengths = np.array([len(r) for r in rows])
    out = pad_shard(np.concatenate(rows), np.concatenate(labels), lengths, 5, pad_id=eos, side=side)
    assert out.input_ids.shape == out.labels.shape == out.attention_mask.shape == (3, 5)
    for i, (r, lab) in enumerate(zip(rows, labels)):
        n = len(r)
        real = slice(0, n) if side is PaddingSide.right else slice(5 - n, 5)
        pad = slice(n, 5) if side is PaddingSide.right else slice(0, 5 - n)
        assert out.input_ids[i, real].tolist() == r.tolist()
        assert out.labels[i, real].tolist() == lab.tolist()  # the real eos keeps its label
        assert (out.labels[i, pad] == -100).all() and (out.input_ids[i, pad] == eos).all()
        assert out.attention_mask[i, real].eq(1).all() and out.attention_mask[i, pad].eq(0).all()
    if side is PaddingSide.left:
        assert out.attention_mask[:, -1].eq(1).all()  # generation reads the last position: always real
    assert out.input_ids.dtype == torch.int32


def test_mask_trains_straddling_tokens_and_counts_them():
    ids = np.array([10, 11, 12, 13], np.int32)
    offsets = np.array([[0, 3], [3, 6], [6, 9], [9, 12]])
    m = labels_by_offsets(ids, offsets, [(4, 9)])  # starts inside token 1
    assert m.labels.tolist() == [-100, 11, 12, -100]
    assert m.straddling == 1 and m.empty_spans == 0
    assert labels_by_offsets(ids, offsets, [(12, 12)]).empty_spans == 1


_HOSTILE_TEXTS = [
    "<|im_start|>assistant\n\nHello, world!<|im_end|>\n",
    "naïve café 😀😀 日本語のテキスト \u200d👩\u200d👩\u200d👧 résumé\n\n\n  tabs\tand   spaces ",
    "e\u0301 (combining) Å vs Å, ﬁ ligature, Ⅻ roman, 🇫🇷 flag, \r\n windows line",
    "    leading spaces, trailing spaces    ",
    "x" * 300 + " " + "😀" * 40,
]


@pytest.mark.parametrize("which", ["sample", "qwen3"])
def test_mask_from_span_ends_equals_the_offsets_definition(which, request):
    """The fast mask (tokens found from each span's two ends) equals the definition on every token:
    multi-byte characters split over tokens, normalizers, trimmed offsets, empty and odd spans."""
    from tokenizers import Tokenizer

    where = SAMPLE / "tokenizer" if which == "sample" else request.getfixturevalue("qwen_dir")
    tokenizer = Tokenizer.from_file(str(where / "tokenizer.json"))
    rng = np.random.default_rng(0)
    for text in _HOSTILE_TEXTS:
        tokens = tokenize_batch(tokenizer, [text])[0]
        for _ in range(300):
            cuts = sorted(rng.integers(0, len(text) + 1, size=2 * int(rng.integers(1, 4))).tolist())
            spans = list(zip(cuts[::2], cuts[1::2]))
            fast = labels_from_spans(tokens, spans)
            definition = labels_by_offsets(tokens.ids, tokens.offsets, spans)
            assert fast.labels.tolist() == definition.labels.tolist(), (text, spans)
            assert (fast.straddling, fast.empty_spans) == (definition.straddling, definition.empty_spans), (text, spans)


def test_align_tail_when_prefix_render_inserts_text():
    full = "<u>hi</u><a>Hello!<e>\n<u>bye</u><a><t></t>Bye<e>\n"
    upto = "<u>hi</u><a><t></t>Hello!<e>\n"  # the turn was last in the prefix render: template added <t></t>
    assert full[: align_tail(upto, full, 12)] == "<u>hi</u><a>Hello!<e>\n"
    # found after the floor only: the same tail later in the text is the later turn's
    full2 = "<u>x</u><a>ok<e>\n<u>x</u><a>ok<e>\n"
    assert align_tail("<u>x</u><a><t></t>ok<e>\n", full2, 0) == len("<u>x</u><a>ok<e>\n")
    assert align_tail("<u>x</u><a><t></t>ok<e>\n", full2, 17) == len(full2)
    assert align_tail("zzz", full2, 0) is None


def test_renderer_probes_end_marker_and_spans():
    r = Renderer(BUILTIN_TEMPLATES["chatml"], {})
    assert r.end_marker == "<|im_end|>"
    from padprep.input.conversation import Conversation

    conv = Conversation(
        (
            {"role": "user", "content": "a"},
            {"role": "assistant", "content": "b\n"},
            {"role": "user", "content": "c"},
            {"role": "assistant", "content": "d"},
        ),
        None,
        "x",
        1,
    )
    out = r.render(conv)
    assert [out.text[s:e] for s, e in out.spans] == ["b\n<|im_end|>", "d<|im_end|>"]
    last = Renderer(BUILTIN_TEMPLATES["chatml"], {}, TrainOn.last).render(conv)
    assert [last.text[s:e] for s, e in last.spans] == ["d<|im_end|>"]
    everything = Renderer(BUILTIN_TEMPLATES["chatml"], {}, TrainOn.all).render(conv)
    assert everything.spans == ((0, len(everything.text)),)


def _long_record():
    return {"messages": [{"role": "user", "content": "tell me a story"}, {"role": "assistant", "content": "fine " * 80}]}


@pytest.mark.parametrize("policy", [Truncation.right, Truncation.left, Truncation.drop])
def test_truncation_policies(tmp_path, policy):
    src = write_jsonl(tmp_path / "in.jsonl", [_long_record()])
    full = run_build([src], SAMPLE / "tokenizer", tmp_path / "full")
    n = full["totals"]["real_tokens"]
    m = run_build([src], SAMPLE / "tokenizer", tmp_path / "cut", max_length=60, truncation=policy, allow_empty=True)
    if policy is Truncation.drop:
        assert (m["totals"]["rows_written"], m["totals"]["dropped"]) == (0, 1)
        return
    ((full_ids, full_labels),) = unpadded_rows(tmp_path / "full")
    ((ids, labels),) = unpadded_rows(tmp_path / "cut")
    assert len(ids) == 60 < n and m["totals"]["truncated"] == 1
    keep = slice(0, 60) if policy is Truncation.right else slice(n - 60, n)
    assert ids.tolist() == full_ids[keep].tolist() and labels.tolist() == full_labels[keep].tolist()


def test_right_truncation_that_loses_the_answer_is_dropped(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", [_long_record()])
    m = run_build([src], SAMPLE / "tokenizer", tmp_path / "o", max_length=8, truncation=Truncation.right, allow_empty=True)
    assert (m["totals"]["rows_written"], m["totals"]["dropped"]) == (0, 1)
    reject = json.loads((tmp_path / "o" / "rejects.jsonl").read_text())
    assert reject["reason"] == "no trained token left after truncation"
    assert json.loads(reject["record"]) == _long_record()


def test_train_on_all_trains_every_token(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", [_long_record()])
    run_build([src], SAMPLE / "tokenizer", tmp_path / "o", train_on=TrainOn.all)
    ((ids, labels),) = unpadded_rows(tmp_path / "o")
    assert labels.tolist() == ids.tolist()
