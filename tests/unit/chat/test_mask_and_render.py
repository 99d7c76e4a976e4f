"""Masks from spans against the offsets definition, and the renderer's probes and spans."""

from __future__ import annotations

import numpy as np
import pytest

from padprep.chat.encode import tokenize_batch
from padprep.chat.mask import labels_by_offsets, labels_from_spans
from padprep.chat.render import Renderer
from padprep.chat.spans import align_tail
from padprep.chat.templates import BUILTIN_TEMPLATES
from padprep.config import TrainOn
from tests.conftest import SAMPLE

_HOSTILE_TEXTS = [
    "<|im_start|>assistant\n\nHello, world!<|im_end|>\n",
    "naïve café 😀😀 日本語のテキスト \u200d👩\u200d👩\u200d👧 résumé\n\n\n  tabs\tand   spaces ",
    "e\u0301 (combining) Å vs Å, ﬁ ligature, Ⅻ roman, 🇫🇷 flag, \r\n windows line",
    "    leading spaces, trailing spaces    ",
    "x" * 300 + " " + "😀" * 40,
]


def test_mask_trains_straddling_tokens_and_counts_them():
    ids = np.array([10, 11, 12, 13], np.int32)
    offsets = np.array([[0, 3], [3, 6], [6, 9], [9, 12]])
    m = labels_by_offsets(ids, offsets, [(4, 9)])  # starts inside token 1
    assert m.labels.tolist() == [-100, 11, 12, -100]
    assert m.straddling == 1 and m.empty_spans == 0
    assert labels_by_offsets(ids, offsets, [(12, 12)]).empty_spans == 1


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
