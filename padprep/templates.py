"""Chat templates: built-in named templates, and a sandboxed Jinja environment that renders like transformers.

Rendering must match ``tokenizer.apply_chat_template`` character for character, so the environment
mirrors transformers': sandboxed, ``trim_blocks``/``lstrip_blocks``, a ``tojson`` that does not
HTML-escape, ``raise_exception``, ``strftime_now``, loop controls, and the special tokens as variables.
"""

from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache
from types import BuiltinMethodType
from pathlib import Path

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

BUILTIN_TEMPLATES: dict[str, str] = {
    # The ChatML template (as in many ChatML models' tokenizer_config.json).
    "chatml": (
        "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
        "'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
    ),
    # Meta-Llama-3-8B-Instruct's template, extended with tools the way Llama 3.1+'s template writes them:
    # a chat without tools renders exactly as Llama 3's; with ``tools`` the system turn says
    # "Environment: ipython" and the schemas go in the first user turn; a tool call is written as JSON
    # {"name", "parameters"} (one per turn, as Meta's raises otherwise); results go in ``ipython`` turns.
    "llama3": (
        "{% set loop_messages = messages %}"
        "{% if tools %}"
        "{% if messages[0]['role'] == 'system' %}{% set system_message = messages[0]['content'] | trim %}"
        "{% set loop_messages = messages[1:] %}{% else %}{% set system_message = '' %}{% endif %}"
        "{{ bos_token + '<|start_header_id|>system<|end_header_id|>\\n\\nEnvironment: ipython\\n\\n' + system_message + '<|eot_id|>' }}"
        "{% if not loop_messages or loop_messages[0]['role'] != 'user' %}"
        "{{ raise_exception('Cannot put tools in the first user message when there is no first user message') }}{% endif %}"
        "{{ '<|start_header_id|>user<|end_header_id|>\\n\\n' }}"
        "{{ 'Given the following functions, please respond with a JSON for a function call with its proper arguments that best answers the given prompt.\\n\\n' }}"
        "{{ 'Respond in the format {\"name\": function name, \"parameters\": dictionary of argument name and its value}.Do not use variables.\\n\\n' }}"
        "{% for t in tools %}{{ t | tojson(indent=4) }}{{ '\\n\\n' }}{% endfor %}"
        "{{ loop_messages[0]['content'] | trim + '<|eot_id|>' }}"
        "{% set loop_messages = loop_messages[1:] %}"
        "{% endif %}"
        "{% for message in loop_messages %}"
        "{% if message['role'] == 'tool' or message['role'] == 'ipython' %}"
        "{{ '<|start_header_id|>ipython<|end_header_id|>\\n\\n' }}"
        "{% if message.content is mapping or message.content is iterable %}{{ message.content | tojson }}"
        "{% else %}{{ message.content }}{% endif %}{{ '<|eot_id|>' }}"
        "{% elif message.tool_calls %}"
        "{% if message.tool_calls | length != 1 %}{{ raise_exception('This model only supports single tool-calls at once!') }}{% endif %}"
        "{% set tool_call = message.tool_calls[0].function if message.tool_calls[0].function is defined else message.tool_calls[0] %}"
        "{% if loop.index0 == 0 and not tools %}{{ bos_token }}{% endif %}"
        "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n{\"name\": \"' + tool_call.name + '\", \"parameters\": ' }}"
        "{% if tool_call.arguments is string %}{{ tool_call.arguments }}{% else %}{{ tool_call.arguments | tojson }}{% endif %}"
        "{{ '}<|eot_id|>' }}"
        "{% else %}"
        "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + "
        "'<|eot_id|>' %}{% if loop.index0 == 0 and not tools %}{% set content = bos_token + content %}{% endif %}{{ content }}"
        "{% endif %}"
        "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
    ),
}


class TemplateError(Exception):
    """No usable chat template, or the template failed to compile."""


def resolve_template(option: str | None, tokenizer_template: str | None) -> tuple[str, str]:
    """The template text and where it came from: ``--chat-template NAME|FILE`` wins over the tokenizer's own."""
    if option:
        if option in BUILTIN_TEMPLATES:
            return BUILTIN_TEMPLATES[option], f"built-in `{option}`"
        path = Path(option)
        if path.is_file():
            return path.read_text(encoding="utf-8"), str(path)
        names = ", ".join(sorted(BUILTIN_TEMPLATES))
        raise TemplateError(f"--chat-template {option}: not a built-in template ({names}) nor a file")
    if tokenizer_template:
        return tokenizer_template, "tokenizer"
    names = "|".join(sorted(BUILTIN_TEMPLATES))
    raise TemplateError(f"the tokenizer has no chat template; pass --chat-template {names}|FILE")


def _raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def _tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(fmt):
    return datetime.now().strftime(fmt)


class _GenerationBlocks(jinja2.ext.Extension):
    """Accept ``{% generation %}...{% endgeneration %}`` (transformers' assistant-mask marker) as a no-op block."""

    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_passthrough"), [], [], body).set_lineno(lineno)

    def _passthrough(self, caller):
        return caller()


class _Namespace(jinja2.utils.Namespace):
    """``namespace()`` that refuses dunder attributes, as transformers' does."""

    def __init__(*args, **kwargs):
        self, args = args[0], args[1:]
        for name in dict(*args, **kwargs):
            _Namespace._check(name)
        jinja2.utils.Namespace.__init__(self, *args, **kwargs)

    def __setitem__(self, name, value):
        _Namespace._check(name)
        jinja2.utils.Namespace.__setitem__(self, name, value)

    @staticmethod
    def _check(name):
        if isinstance(name, str) and name.startswith("_"):
            raise jinja2.exceptions.SecurityError(f"templates cannot set underscore attributes ({name!r})")


class _CachedSandbox(ImmutableSandboxedEnvironment):
    """``ImmutableSandboxedEnvironment``, with the same verdicts reached faster.

    The sandbox judges ``obj.attr`` from ``type(obj)`` and the attribute name alone, yet judges again
    on every access: on a chat template that was a third of the render time. Verdicts are cached per
    (type, name). A plain ``dict`` (every message) is read by key when ``dict`` has no attribute of
    that name, which is where the sandbox's own lookup ends up after a failed ``getattr``.
    """

    _DICT_ATTRIBUTES = frozenset(dir(dict))

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._verdicts: dict[tuple[type, str], bool] = {}

    def is_safe_attribute(self, obj, attr, value) -> bool:
        key = (type(obj), attr)
        verdict = self._verdicts.get(key)
        if verdict is None:
            verdict = self._verdicts[key] = super().is_safe_attribute(obj, attr, value)
        return verdict

    def getattr(self, obj, attribute):
        if type(obj) is dict and attribute not in self._DICT_ATTRIBUTES:
            try:
                return obj[attribute]
            except (TypeError, LookupError):
                return self.undefined(obj=obj, name=attribute)
        return super().getattr(obj, attribute)

    def call(__self, __context, __obj, *args, **kwargs):  # noqa: N805 - jinja's own signature
        # A bound built-in method (``content.split``...) carries no attributes, so it is never marked
        # unsafe nor asks for the context: jinja's checks would all pass; call it as they would.
        # (Mutating ones, ``list.append``..., were already refused when the template looked them up.)
        if type(__obj) is BuiltinMethodType:
            kwargs.pop("_block_vars", None)
            kwargs.pop("_loop_vars", None)
            try:
                return __obj(*args, **kwargs)
            except StopIteration:
                return __context.environment.undefined("value was undefined because a callable raised a StopIteration exception")
        return super().call(__context, __obj, *args, **kwargs)


@lru_cache(maxsize=8)
def compile_template(source: str) -> jinja2.Template:
    """Compile once per process; templates are untrusted code, so the environment is sandboxed."""
    env = _CachedSandbox(
        trim_blocks=True, lstrip_blocks=True, extensions=[_GenerationBlocks, jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    env.globals["namespace"] = _Namespace
    try:
        return env.from_string(source)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(f"chat template does not compile: {exc.message} (template line {exc.lineno})") from None
