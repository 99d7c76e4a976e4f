"""padprep's encoding shortcuts (``encode.Encoder``) against the tokenizer used as it is.

Token offsets computed from the tokens' bytes (``encode.ByteOffsets``), and the normalizer skipped
on text it leaves unchanged (``Encoder.twin``), must give the tokenizer's own ids and offsets.

The fast encode path (``encode_batch_fast``, no offsets) is only as good as the offsets padprep
computes in their place: every test here compares them with ``Encoding.offsets`` token by token, or
the masks and rows they give with the masks and rows of the tokenizer's own offsets.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers

from padprep.chat.encode import ByteOffsets, Encoder, tokenize_batch
from padprep.chat.mask import labels_by_offsets, labels_from_spans
from padprep.chat.process import ProcessOptions, Processor
from padprep.chat.templates import resolve_template
from padprep.chat.tokenizer import load_tokenizer
from padprep.input.formats import FormatOptions, with_formats
from padprep.input.read import read_records
from padprep.input.records import RawRecord
from tests.conftest import SAMPLE

TEXTS = [
    "<|im_start|>assistant\n\nHello, world!<|im_end|>\n",
    "naïve café 😀😀 日本語のテキスト \u200d👩\u200d👩\u200d👧 résumé\n\n\n  tabs\tand   spaces ",
    "Å (precomposed) ½ Ⅻ 🇫🇷 \r\n windows line, ẞtraße",
    "    leading spaces, trailing spaces    ",
    "x" * 300 + " " + "😀" * 40,
    "",
    "<|im_start|><|im_end|><|im_start|>  \n",
]
NOT_NFC = ["e\u0301 (combining)", "\u212b (angstrom sign)", "\u212b"]  # NFC rewrites these: offsets must come from the tokenizer


def _tokenizer(which: str, request) -> Tokenizer:
    where = SAMPLE / "tokenizer" if which == "sample" else request.getfixturevalue("qwen_dir")
    return Tokenizer.from_file(str(where / "tokenizer.json"))


@pytest.mark.parametrize("which", ["sample", "qwen3"])
def test_offsets_from_bytes_equal_the_tokenizers_own(which, request):
    tokenizer = _tokenizer(which, request)
    table = ByteOffsets.probe(tokenizer)
    assert table is not None  # byte-level BPE with an NFC normalizer: the fast path applies
    texts = TEXTS + NOT_NFC
    given = tokenize_batch(tokenizer, texts)
    computed = tokenize_batch(tokenizer, texts, byte_offsets=table)
    for text, a, b in zip(texts, given, computed):
        assert a.ids.tolist() == b.ids.tolist(), text
        assert a.offsets.tolist() == b.offsets.tolist(), text
        assert (b.encoding is not None) == (text in NOT_NFC), text  # only the texts NFC rewrites fall back
    rng = np.random.default_rng(1)
    for text, a, b in zip(texts, given, computed):  # and the masks they give: the definition's, with straddling counts
        for _ in range(200):
            cuts = sorted(rng.integers(0, len(text) + 1, size=2 * int(rng.integers(1, 4))).tolist())
            spans = list(zip(cuts[::2], cuts[1::2]))
            mask, definition = labels_from_spans(b, spans), labels_by_offsets(b.ids, a.offsets, spans)
            assert mask.labels.tolist() == definition.labels.tolist(), (text, spans)
            assert (mask.straddling, mask.empty_spans) == (definition.straddling, definition.empty_spans)


def _byte_level(normalizer=None) -> Tokenizer:
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {c: i for i, c in enumerate(sorted(alphabet))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    if normalizer is not None:
        tok.normalizer = normalizer
    return tok


@pytest.mark.parametrize("byte_offsets", [True, False])
@pytest.mark.parametrize("which", ["sample", "qwen3"])
def test_text_the_normalizer_leaves_unchanged_is_encoded_without_it_to_the_same_ids_and_offsets(which, byte_offsets, request):
    tokenizer = _tokenizer(which, request)
    encoder = Encoder.probe(tokenizer, byte_offsets=byte_offsets)
    assert type(tokenizer.normalizer).__name__ == "NFC" and encoder.twin is not None and encoder.twin.normalizer is None
    texts = TEXTS + NOT_NFC + ["<|endoftext|>e\u0301<|im_end|>"]
    for special in (False, True):
        given = tokenize_batch(tokenizer, texts, add_special_tokens=special)
        for batch in (texts, NOT_NFC, TEXTS[:3]):  # mixed, only text NFC rewrites, only text it leaves
            computed = encoder.encode(batch, add_special_tokens=special)
            for text, b in zip(batch, computed):
                a = given[texts.index(text)]
                assert a.ids.tolist() == b.ids.tolist(), text
                assert a.offsets.tolist() == b.offsets.tolist(), text
    # the twin really gives other ids where NFC rewrites the text: it must never see such text
    assert encoder.twin.encode("\u212b").ids != tokenizer.encode("\u212b").ids


def test_no_twin_where_the_normalizer_is_more_than_a_normal_form_or_absent():
    assert Encoder.probe(_byte_level()).twin is None  # nothing to skip
    assert Encoder.probe(_byte_level(normalizers.Lowercase())).twin is None
    assert Encoder.probe(_byte_level(normalizers.Sequence([normalizers.NFC(), normalizers.Lowercase()]))).twin is None
    nfkc = _byte_level(normalizers.NFKC())
    encoder = Encoder.probe(nfkc, skip_normalizer=True)
    assert encoder.twin is not None
    texts = ["ﬁne ½ Ⅻ", "plain ascii", "café"]  # NFKC rewrites the first: it keeps the normalizer
    for a, b in zip(tokenize_batch(nfkc, texts), encoder.encode(texts)):
        assert a.ids.tolist() == b.ids.tolist() and a.offsets.tolist() == b.offsets.tolist()
    assert Encoder.probe(nfkc, skip_normalizer=False).twin is None


def test_the_probe_refuses_tokenizers_whose_bytes_do_not_give_offsets():
    assert ByteOffsets.probe(_byte_level()) is not None  # bare byte-level BPE, no normalizer
    assert ByteOffsets.probe(_byte_level(normalizers.Lowercase())) is None  # a normalizer that rewrites text
    metaspace = Tokenizer(models.BPE(vocab={"▁a": 0, "a": 1, "▁": 2, "b": 3}, merges=[("▁", "a")]))
    metaspace.pre_tokenizer = pre_tokenizers.Metaspace()
    assert ByteOffsets.probe(metaspace) is None  # SentencePiece-style pieces are not GPT-2's byte alphabet
    wordpiece = Tokenizer(models.WordPiece(vocab={"[UNK]": 0, "he": 1, "##llo": 2}, unk_token="[UNK]"))
    wordpiece.pre_tokenizer = pre_tokenizers.Whitespace()
    assert ByteOffsets.probe(wordpiece) is None


def test_an_added_token_that_strips_spaces_falls_back_to_the_tokenizers_offsets():
    from tokenizers import AddedToken

    tok = _byte_level()
    tok.add_special_tokens([AddedToken("<eot>", lstrip=True, rstrip=True)])
    table = ByteOffsets.probe(tok)
    texts = ["hello  <eot>  world", "plain text"]
    assert table is not None
    given, computed = tokenize_batch(tok, texts), tokenize_batch(tok, texts, byte_offsets=table)
    # the stripped spaces are in no token's bytes: they do not add up, so that text takes the tokenizer's offsets
    assert computed[0].encoding is not None and computed[1].encoding is None
    assert [t.offsets.tolist() for t in computed] == [t.offsets.tolist() for t in given]
    assert [t.ids.tolist() for t in computed] == [t.ids.tolist() for t in given]


@pytest.mark.slow  # over a second: out of make test-fast (under a minute)
def test_rows_are_the_same_with_offsets_from_bytes_or_from_the_tokenizer(qwen_dir):
    bundle = load_tokenizer(str(qwen_dir))
    template, _ = resolve_template(None, bundle.chat_template)
    records = list(with_formats(str(SAMPLE / "chat.jsonl"), read_records(str(SAMPLE / "chat.jsonl")), FormatOptions(), {}))
    extra = {
        "messages": [
            {"role": "user", "content": "Quelle est la capitale ? e\u0301"},  # not NFC: falls back
            {"role": "assistant", "content": "Paris 😀, naïve café"},
        ]
    }
    fast = Processor(bundle, ProcessOptions(template, max_length=512))
    slow = Processor(bundle, ProcessOptions(template, max_length=512, byte_offsets=False))
    assert fast.encoder.byte_offsets is not None and slow.encoder.byte_offsets is None
    records.append(RawRecord("extra.jsonl", 1, json.dumps(extra, ensure_ascii=False), format="messages"))
    a, b = fast.process(records), slow.process(records)
    assert [r.reason for r in a.rejects] == [r.reason for r in b.rejects]
    assert len(a.rows) == len(b.rows) == len(records) - len(a.rejects) and a.rows[-1].source == "extra.jsonl"
    for x, y in zip(a.rows, b.rows):
        assert x.ids.tolist() == y.ids.tolist() and x.labels.tolist() == y.labels.tolist()


def test_preflight_falls_back_to_the_tokenizers_offsets_when_the_bytes_disagree_on_the_sample(tmp_path, monkeypatch):
    """A tokenizer the probe passes but whose byte offsets would be wrong on real renders: preflight
    compares both ways on the sample and the whole run (workers' head start included) takes the tokenizer's."""
    import padprep.run.pipeline
    from tests.conftest import run_build, shard_bytes

    monkeypatch.setattr(padprep.run.pipeline, "SMALL_INPUT_BYTES", 0)  # offsets from bytes, as for a large input
    tok, chat = SAMPLE / "tokenizer", SAMPLE / "chat.jsonl"
    run_build([chat], tok, tmp_path / "good", workers=2, chunk_size=4, preflight_records=8)
    real = ByteOffsets.char_offsets

    def off_in_renders(self, text, ids):  # right on the probe texts, one token off on every chat render
        offsets = real(self, text, ids)
        if offsets is not None and "<|im_start|>user" in text:
            offsets = offsets.copy()
            offsets[1:, 0] += 1
        return offsets

    monkeypatch.setattr(ByteOffsets, "char_offsets", off_in_renders)
    m = run_build([chat], tok, tmp_path / "guarded", workers=2, chunk_size=4, preflight_records=8)
    assert any(h["code"] == "fast_encoding_disagree" for h in m["hazards"])
    assert shard_bytes(tmp_path / "guarded") == shard_bytes(tmp_path / "good")


def test_preflight_encodes_with_the_normalizer_when_its_twin_disagrees_on_the_sample(tmp_path, monkeypatch):
    """A twin the probe would pass but that is wrong on real renders (here: one that lowercases):
    preflight compares it with the tokenizer on the sample, and the whole run keeps the normalizer."""
    import padprep.chat.encode
    from tests.conftest import run_build, shard_bytes

    tok, chat = SAMPLE / "tokenizer", SAMPLE / "chat.jsonl"
    run_build([chat], tok, tmp_path / "good", workers=2, chunk_size=4, preflight_records=8)
    real = padprep.chat.encode._twin_without_normalizer

    def lowercasing_twin(tokenizer, unchanged):
        twin = real(tokenizer, unchanged)
        twin.normalizer = normalizers.Lowercase()
        return twin

    monkeypatch.setattr(padprep.chat.encode, "_twin_without_normalizer", lowercasing_twin)
    m = run_build([chat], tok, tmp_path / "guarded", workers=2, chunk_size=4, preflight_records=8)
    assert any(h["code"] == "fast_encoding_disagree" for h in m["hazards"])
    assert shard_bytes(tmp_path / "guarded") == shard_bytes(tmp_path / "good")
