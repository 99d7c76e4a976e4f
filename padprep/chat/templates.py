"""Chat templates: built-in named templates, and a sandboxed Jinja environment that renders like transformers.

Rendering must match ``tokenizer.apply_chat_template`` character for character, so the environment
mirrors transformers': sandboxed, ``trim_blocks``/``lstrip_blocks``, a ``tojson`` that does not
HTML-escape, ``raise_exception``, ``strftime_now``, loop controls, and the special tokens as variables.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from types import BuiltinMethodType

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

from padprep.errors import EXIT_USAGE, PadprepError
from padprep.input.repeats import REPEATS

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
        '{{ \'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.Do not use variables.\\n\\n\' }}'
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
        '{{ \'<|start_header_id|>assistant<|end_header_id|>\\n\\n{"name": "\' + tool_call.name + \'", "parameters": \' }}'
        "{% if tool_call.arguments is string %}{{ tool_call.arguments }}{% else %}{{ tool_call.arguments | tojson }}{% endif %}"
        "{{ '}<|eot_id|>' }}"
        "{% else %}"
        "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + "
        "'<|eot_id|>' %}{% if loop.index0 == 0 and not tools %}{% set content = bos_token + content %}{% endif %}{{ content }}"
        "{% endif %}"
        "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
    ),
}


class TemplateError(PadprepError):
    """No usable chat template, or the template failed to compile (exit 2)."""

    exit_code = EXIT_USAGE


# -- bounds on what one render may build ----------------------------------------------------------
# A hub template is someone else's code: ``{{ 'x' * 1000000000 }}`` would build a 1 GB string on every
# render. The sandbox checks every operator and call that can grow a value, and the output itself,
# against the budget of the render in progress (renders in a process are sequential).
DEFAULT_MAX_CHARS = 16 << 20  # characters of one value or one render's output, when --max-length gives no bound
RENDER_SECONDS = 10.0  # wall time of one render
_MAX_POWER_BITS = 1 << 16  # ``a ** b`` with a result wider than this


class TemplateLimitError(jinja2.exceptions.SecurityError):
    """A render went past a limit: a value or the output too large, or too long a time."""

    def __init__(self, what: str, limit: str):
        super().__init__(f"{what} is over the limit of {limit}")
        self.what, self.limit = what, limit


@dataclass
class Budget:
    """The limits of the render in progress."""

    max_chars: int = DEFAULT_MAX_CHARS
    deadline: float = float("inf")
    seconds: float = RENDER_SECONDS

    def start(self, max_chars: int) -> None:
        self.max_chars = max_chars
        self.deadline = time.monotonic() + self.seconds

    def size(self, n: int, what: str) -> None:
        if n > self.max_chars:
            raise TemplateLimitError(f"a template {what} of {n:,} characters or items", f"{self.max_chars:,}")

    def value(self, value, what: str) -> None:
        if isinstance(value, (str, list, tuple, dict)):
            self.size(len(value), what)

    def clock(self) -> None:
        if time.monotonic() > self.deadline:
            raise TemplateLimitError("a render taking this long", f"{self.seconds:g} s")


BUDGET = Budget()


def _sized(x) -> bool:
    return isinstance(x, (str, list, tuple))


def _binop_size(operator: str, left, right) -> int:
    """How large ``left <operator> right`` would be (0 where it cannot grow)."""
    if operator == "*":
        if _sized(left) and isinstance(right, int):
            return len(left) * max(right, 0)
        if _sized(right) and isinstance(left, int):
            return len(right) * max(left, 0)
    elif operator == "+" and _sized(left) and _sized(right):
        return len(left) + len(right)
    return 0


def _grown_by_call(name: str, obj, args) -> int:
    """How large a str method's result would be, for the methods that can grow a string."""
    if not isinstance(obj, str):
        return 0
    if name in ("ljust", "rjust", "center", "zfill") and args and isinstance(args[0], int):
        return max(len(obj), args[0])
    if name == "expandtabs":
        size = args[0] if args and isinstance(args[0], int) else 8
        return len(obj) + obj.count("\t") * max(size, 0)
    if name == "replace" and len(args) >= 2 and isinstance(args[0], str) and isinstance(args[1], str):
        count = obj.count(args[0]) + (1 if not args[0] else 0)
        return len(obj) + count * max(len(args[1]) - len(args[0]), 0)
    return 0


def _bounded_filter(name: str, filter_fn):
    """A Jinja filter that may grow a string (``center``, ``indent``, ``replace``...), with its result checked first."""

    passed = 1 if hasattr(filter_fn, "jinja_pass_arg") else 0  # a context / environment comes first

    def bounded(*args, **kwargs):
        value = args[passed] if len(args) > passed else None
        rest = args[passed + 1 :]
        if isinstance(value, str):
            if name == "center" and rest and isinstance(rest[0], int):
                BUDGET.size(max(len(value), rest[0]), "string")
            elif name == "indent":
                width = rest[0] if rest else kwargs.get("width", 4)
                width = len(width) if isinstance(width, str) else width if isinstance(width, int) else 0
                BUDGET.size(len(value) + (value.count("\n") + 1) * max(width, 0), "string")
            elif name == "replace" and len(rest) >= 2:
                BUDGET.size(_grown_by_call("replace", value, [str(rest[0]), str(rest[1])]), "string")
        out = filter_fn(*args, **kwargs)
        BUDGET.value(out, "value")
        return out

    for attr in ("jinja_pass_arg",):
        if hasattr(filter_fn, attr):
            setattr(bounded, attr, getattr(filter_fn, attr))
    return bounded


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
    key = _json_key(x, ensure_ascii, indent, separators, sort_keys)
    text = _JSON_TEXTS.get(key) if key is not None else None
    if text is None:
        text = json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)
        if key is not None:
            if len(_JSON_TEXTS) >= _JSON_TEXTS_LIMIT:
                _JSON_TEXTS.clear()
            _JSON_TEXTS[key] = text
    return text


def _json_key(x, *options) -> object | None:
    """Where ``tojson(x, *options)`` is kept: only for a value the record parser keeps (the same tool catalog
    in every record, input/repeats.py); None otherwise, or for an option that cannot be a key. The options'
    types are in the key: indent=4.0 is not 4 (json.dumps refuses it, each time)."""
    if id(x) not in REPEATS.kept_ids:
        return None
    if options == (False, None, None, False):
        return id(x)  # the options almost every template gives
    key = (id(x), *((type(o), tuple(o) if type(o) is list else o) for o in options))
    try:
        hash(key)
    except TypeError:
        return None
    return key


# ``tojson`` of the values input/repeats.py keeps, by (id, options): an id there always names that
# object (the memo keeps it alive and nobody changes it).
_JSON_TEXTS: dict[object, str] = {}
_JSON_TEXTS_LIMIT = 1 << 16


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
        BUDGET.value(value, "namespace value")
        jinja2.utils.Namespace.__setitem__(self, name, value)

    @staticmethod
    def _check(name):
        if isinstance(name, str) and name.startswith("_"):
            raise jinja2.exceptions.SecurityError(f"templates cannot set underscore attributes ({name!r})")


_FORMAT_METHODS = frozenset({"format", "format_map"})


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
        kind = type(obj)
        if kind is dict and attribute not in self._DICT_ATTRIBUTES:
            try:
                return obj[attribute]
            except (TypeError, LookupError):
                return self.undefined(obj=obj, name=attribute)
        # An attribute already judged safe on this type (``content.strip``, ``loop.last``...): the sandbox
        # would reach the same verdict; ``format`` / ``format_map`` always take its own path (it wraps them).
        if self._verdicts.get((kind, attribute)) and attribute not in _FORMAT_METHODS:
            try:
                return getattr(obj, attribute)
            except AttributeError:
                pass
        return super().getattr(obj, attribute)

    intercepted_binops = frozenset(["*", "+", "**"])

    def call_binop(self, context, operator, left, right):
        if operator == "+" and type(left) is str and type(right) is str:  # most of a chat template's binops
            if len(left) + len(right) > BUDGET.max_chars:
                BUDGET.size(len(left) + len(right), "value")
            return left + right
        BUDGET.size(_binop_size(operator, left, right), "value")
        if operator == "**" and isinstance(left, int) and isinstance(right, int) and right > 0:
            if abs(left) > 1 and right * abs(left).bit_length() > _MAX_POWER_BITS:
                raise TemplateLimitError(
                    f"an integer power of about {right * abs(left).bit_length():,} bits", f"{_MAX_POWER_BITS:,} bits"
                )
        return self.binop_table[operator](left, right)

    def call(__self, __context, __obj, *args, **kwargs):  # noqa: N805 - jinja's own signature
        BUDGET.clock()
        for arg in args:  # a macro that calls itself with a doubled string, and the like
            BUDGET.value(arg, "call argument")
        # A bound built-in method (``content.split``...) carries no attributes, so it is never marked
        # unsafe nor asks for the context: jinja's checks would all pass; call it as they would.
        # (Mutating ones, ``list.append``..., were already refused when the template looked them up.)
        if type(__obj) is BuiltinMethodType:
            BUDGET.size(_grown_by_call(__obj.__name__, __obj.__self__, args), "string")
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
    env = _CachedSandbox(trim_blocks=True, lstrip_blocks=True, extensions=[_GenerationBlocks, jinja2.ext.loopcontrols])
    for name in ("center", "indent", "replace", "format", "wordwrap", "join"):
        env.filters[name] = _bounded_filter(name, env.filters[name])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    env.globals["namespace"] = _Namespace
    try:
        template = env.from_string(source)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(f"chat template does not compile: {exc.message} (template line {exc.lineno})") from None
    # jinja keeps a template's globals as a ChainMap over the environment's, which it iterates in Python
    # to start every render (a tenth of the render time); the same names in one dict.
    template.globals = dict(template.globals)
    return template
