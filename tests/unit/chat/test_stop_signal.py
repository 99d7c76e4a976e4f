"""The stop signal rule: after every trained reply, the token the model must emit to end it is trained.

Where the template writes an end-of-turn marker, the reply's span ends with it (unchanged). Where it writes
none (GLM-4-0414: its `eos_token` is `<|user|>`), the token right after a reply is trained when it is one
the model stops on (eos, the special token that opens the next user or tool turn), and a reply that ends
the render gets eos appended (``--no-append-eos``: not). A template with no such token: a hazard."""

from __future__ import annotations

import json

import pytest

from padprep.chat.process import ProcessOptions, Processor
from padprep.chat.tokenizer import load_tokenizer
from padprep.input.records import RawRecord
from padprep.run.preflight import tokenizer_hazards
from tests.support.families import family_dir
from tests.unit.chat.test_scaffolding import SEPARATED

transformers = pytest.importorskip("transformers")

CHAT = {
    "messages": [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "Hello there."},
        {"role": "user", "content": "q2"},
        {"role": "assistant", "content": "A2."},
    ]
}


def _process(bundle, template: str, **options):
    processor = Processor(bundle, ProcessOptions(template=template, **options))
    return processor, processor.process([RawRecord("x", 1, json.dumps(CHAT))])


@pytest.mark.slow  # over a second: out of make test-fast (under a minute)
def test_the_role_token_after_a_reply_and_an_eos_after_the_last_are_trained():
    path = family_dir("glm-4-32b-0414")
    bundle = load_tokenizer(str(path))
    tok = transformers.AutoTokenizer.from_pretrained(str(path))
    processor, chunk = _process(bundle, bundle.chat_template)
    ((row,),) = [chunk.rows]
    ids = list(tok.apply_chat_template(CHAT["messages"], tokenize=True, return_dict=False))
    user, eos = tok.convert_tokens_to_ids("<|user|>"), tok.eos_token_id
    assert tok.eos_token == "<|user|>" and eos == user
    assert row.ids.tolist() == ids + [eos]  # the one token more than apply_chat_template
    first = tok.encode("\nHello there.", add_special_tokens=False)
    last = tok.encode("\nA2.", add_special_tokens=False)
    expected = [-100] * len(ids) + [eos]
    a = ids.index(tok.convert_tokens_to_ids("<|assistant|>")) + 1
    expected[a : a + len(first) + 1] = first + [user]
    b = len(ids) - len(last)
    expected[b : len(ids)] = last
    assert row.labels.tolist() == expected
    assert chunk.stats.stop_trained == 1 and chunk.stats.eos_appended == 1
    assert "'<|user|>'" in processor.stop_signal
    assert not [h for h in tokenizer_hazards(bundle, processor, chunk) if h.code == "no_stop_signal"]

    _, kept = _process(bundle, bundle.chat_template, append_eos=False)
    assert kept.rows[0].ids.tolist() == ids and kept.rows[0].labels.tolist() == expected[:-1]


def test_a_template_with_an_end_marker_keeps_its_labels(qwen_dir):
    bundle = load_tokenizer(str(qwen_dir))
    processor, chunk = _process(bundle, bundle.chat_template)
    assert processor.stop_ids == frozenset() and "'<|im_end|>'" in processor.stop_signal
    tok = bundle.tokenizer
    trained = [int(t) for t in chunk.rows[0].labels if t != -100]
    assert tok.decode(trained, skip_special_tokens=False).count("<|im_end|>") == 2
    assert chunk.stats.stop_trained == chunk.stats.eos_appended == 0


def test_no_stop_token_at_all_is_a_hazard(qwen_dir):
    """A plain-text role line is no token the model stops on: with --no-append-eos nothing stops a reply."""
    bundle = load_tokenizer(str(qwen_dir))
    processor, chunk = _process(bundle, SEPARATED, append_eos=False)
    trained = [int(t) for t in chunk.rows[0].labels if t != -100]
    # ".\n\n" is one token here: it straddles the reply's end and is trained (boundary_merge)
    assert bundle.tokenizer.decode(trained, skip_special_tokens=False) == "Hello there.\n\nA2."
    (hazard,) = [h for h in tokenizer_hazards(bundle, processor, chunk) if h.code == "no_stop_signal"]
    assert "--no-append-eos" in hazard.message
    processor, chunk = _process(bundle, SEPARATED)  # eos appended after the last reply: a stop signal
    assert chunk.rows[0].labels[-1] == bundle.tokenizer.token_to_id(bundle.special["eos_token"])
    assert not [h for h in tokenizer_hazards(bundle, processor, chunk) if h.code == "no_stop_signal"]
