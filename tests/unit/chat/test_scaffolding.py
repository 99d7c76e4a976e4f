"""No scaffolding trained: the template's generation header (and the opening of the turn after a reply) is
never inside a trained span, whatever placed the span; a template that writes the separator between turns
only when another turn follows is labelled after its header, not from where the two renders part."""

from __future__ import annotations

import pytest

from padprep.chat.render import Renderer, SpanError
from padprep.input.conversation import Conversation

# The separator "\n\n" comes only between turns: the prompt ``…Q### Response:\n`` is not a prefix of the
# full render ``…Q\n\n### Response:\nA``.
SEPARATED = (
    "{% for m in messages %}{% if m.role == 'user' %}{{ '### Instruction:\\n' + m.content }}"
    "{% elif m.role == 'assistant' %}{{ '### Response:\\n' + m.content }}{% endif %}"
    "{% if not loop.last %}{{ '\\n\\n' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '### Response:\\n' }}{% endif %}"
)


def _conv(*texts: str) -> Conversation:
    roles = ["user", "assistant"] * len(texts)
    return Conversation(tuple({"role": r, "content": t} for r, t in zip(roles, texts)), None, "x", 1)


def test_reply_starts_after_a_header_the_full_render_writes_after_a_separator():
    r = Renderer(SEPARATED, {"eos_token": "</s>"})
    out = r.render(_conv("Q", "A", "Q2", "A2 ### Response: quoted"))
    assert out.text == "### Instruction:\nQ\n\n### Response:\nA\n\n### Instruction:\nQ2\n\n### Response:\nA2 ### Response: quoted"
    assert [out.text[s:e] for s, e in out.spans] == ["A", "A2 ### Response: quoted"]
    assert r.scaffolding == ("### Response:", "### Instruction:")


def test_a_span_holding_the_generation_header_is_rejected(monkeypatch):
    """Placed where the renders part (before the separator and the header), the span holds the header:
    the check rejects the conversation instead of training it."""
    r = Renderer(SEPARATED, {"eos_token": "</s>"})
    monkeypatch.setattr(Renderer, "_after_header", lambda self, full, at, header: at)
    with pytest.raises(SpanError, match="holds `### Response:`"):
        r.render(_conv("Q", "A"))


def test_the_check_asks_every_span_and_allows_the_markers_inside_the_replys_own_text():
    r = Renderer(SEPARATED, {"eos_token": "</s>"})
    conv = _conv("Q", "A", "Q2", "see ### Instruction: above")
    full = r.render_text(conv.messages, None, generation=False)
    turns = conv.assistant_indices
    a1, a2 = full.index("\nA\n") + 1, full.index("see")
    r.check_spans(conv, full, turns, [(a1, a1 + 1), (a2, len(full))])  # the reply quotes a marker: fine
    with pytest.raises(SpanError, match="reply 1 of 2 .*holds `### Instruction:`"):  # runs into the next turn
        r.check_spans(conv, full, turns, [(a1, full.index("Q2")), (a2, len(full))])
    with pytest.raises(SpanError, match="reply 2 of 2 .*holds `### Response:`"):
        r.check_spans(conv, full, turns, [(a1, a1 + 1), (a2 - len("### Response:\n"), len(full))])


def test_chatml_scaffolding_is_probed_not_named():
    from padprep.chat.templates import BUILTIN_TEMPLATES

    assert Renderer(BUILTIN_TEMPLATES["chatml"], {}).scaffolding == ("<|im_start|>assistant", "<|im_start|>user")
