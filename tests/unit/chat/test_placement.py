"""Reply placement rules found on the Hub's templates (issue 33), each on a small template of that shape:
a reply that starts with the character that follows the reply head in the generation prompt, a reply that
continues the model's turn after a tool result, a tool call written as its id rather than its bare name."""

from __future__ import annotations

from padprep.chat.render import Renderer
from padprep.input.conversation import Conversation

# DeepSeek-R1's shape: the prompt ends `<A><think>\n`, the full render writes `<A>` + content
R1_LIKE = (
    "{% for m in messages %}{% if m.role == 'user' %}{{ '<U>' + m.content }}{% else %}{{ '<A>' + m.content + '<E>' }}"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<A><think>\\n' }}{% endif %}"
)

# Gemma 4's shape: a tool's result is written inside the model's turn, which closes after the next reply
TURN_CONTINUES = (
    "{% for m in messages %}{% if m.role == 'user' %}{{ '<|turn>user\\n' + m.content + '<turn|>\\n' }}"
    "{% elif m.role == 'assistant' %}{% if not (loop.index0 > 0 and messages[loop.index0 - 1].role == 'tool') %}"
    "{{ '<|turn>model\\n' }}{% endif %}{% for c in m.tool_calls or [] %}{{ '<|tool_call>' + c.function.name + '<tool_call|>' }}"
    "{% endfor %}{{ m.content or '' }}{% if not m.tool_calls %}{{ '<turn|>\\n' }}{% endif %}"
    "{% elif m.role == 'tool' %}{{ '<|tool_response>' + m.content + '<tool_response|>' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|turn>model\\n' }}{% endif %}"
)

# Kimi's shape: a call is written as its id (`functions.NAME:INDEX` where the record gives one), never its name
CALL_IDS = (
    "{% for m in messages %}{% if m.role == 'user' %}{{ '<u>' + m.content + '<e>' }}{% elif m.role == 'assistant' %}"
    "{{ '<a>' + (m.content or '') }}{% for c in m.tool_calls or [] %}{{ '<call>' + (c.id or '') + '<args>' + "
    "(c.function.arguments | tojson) + '</call>' }}{% endfor %}{{ '<e>' }}{% elif m.role == 'tool' %}"
    "{{ '<t>' + m.content + '<e>' }}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<a>' }}{% endif %}"
)


def _spans(template: str, messages: list[dict], tools=None) -> list[str]:
    r = Renderer(template, {"eos_token": "</s>"})
    out = r.render(Conversation(tuple(messages), tools, "x", 1))
    return [out.text[s:e] for s, e in out.spans]


def test_a_reply_starting_with_the_first_character_of_the_prompts_tail():
    messages = [
        {"role": "user", "content": "html?"},
        {"role": "assistant", "content": "<div>hi</div>"},
        {"role": "user", "content": "more"},
        {"role": "assistant", "content": "<think>\nkept as the template writes it"},
    ]
    assert _spans(R1_LIKE, messages) == ["<div>hi</div><E>", "kept as the template writes it<E>"]


def test_a_reply_that_continues_the_models_turn_after_a_tool_result():
    call = {"type": "function", "function": {"name": "lookup", "arguments": {"q": "x"}}}
    messages = [
        {"role": "user", "content": "Q"},
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "content": "RESULT"},
        {"role": "assistant", "content": "ANSWER"},
    ]
    assert _spans(TURN_CONTINUES, messages) == ["<|tool_call>lookup<tool_call|>", "ANSWER<turn|>"]


def test_a_tool_call_written_as_its_id():
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    call = {"type": "function", "function": {"name": "lookup", "arguments": {"q": "x"}}}
    messages = [
        {"role": "user", "content": "Q"},
        {"role": "assistant", "content": "", "tool_calls": [call]},  # no id: the template writes no name at all
        {"role": "tool", "content": "RESULT"},
        {"role": "assistant", "content": "ANSWER"},
    ]
    assert _spans(CALL_IDS, messages, tools) == ['<call><args>{"q": "x"}</call><e>', "ANSWER<e>"]
    messages[1] = {**messages[1], "tool_calls": [{**call, "id": "functions.lookup:0"}]}
    assert _spans(CALL_IDS, messages, tools) == ['<call>functions.lookup:0<args>{"q": "x"}</call><e>', "ANSWER<e>"]


def test_arguments_the_template_escapes_twice_are_found_in_their_span():
    """A Hermes-style template writes a JSON-string `arguments` through tojson: a Windows path's backslashes
    are escaped twice in the render, and the check finds them so."""
    from padprep.chat.spans import tool_call_pieces

    hermes = CALL_IDS.replace("(c.id or '')", "c.function.name")
    call = {"type": "function", "function": {"name": "read", "arguments": '{"path": "C:\\\\Users\\\\me"}'}}
    messages = [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "", "tool_calls": [call]}]
    ((_, pieces),) = tool_call_pieces(messages[1])
    assert "C:\\\\\\\\Users\\\\\\\\me" in pieces[1]  # escaped twice: four backslashes per one
    assert _spans(hermes, messages) == ['<call>read<args>"{\\"path\\": \\"C:\\\\\\\\Users\\\\\\\\me\\"}"</call><e>']
