"""A recipe file (``padprep build --recipe RECIPE.yaml``): sources, how many records of each, an eval split.

Parsing checks everything that can be checked without reading the data, and says what is wrong in
one line naming the file and the key (``RecipeError``, exit 2): an unknown key, a value of the wrong
type, ``count`` and ``weight`` together. What needs the data (a ``count`` larger than its source, an
eval larger than the sample) is checked by ``draw`` before any tokenizing.

Example:
    >>> recipe = parse_recipe('''
    ... tokenizer: Qwen/Qwen3-8B
    ... seed: 3
    ... sources:
    ...   - path: data/chat.jsonl
    ...     count: 300
    ...   - path: data/tools/
    ...     weight: 2
    ... eval:
    ...   fraction: 0.05
    ... ''', "mix.yaml")
    >>> [s.count for s in recipe.sources], recipe.eval.fraction, recipe.options["tokenizer"]
    ([300, None], 0.05, 'Qwen/Qwen3-8B')
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from padprep.config import BuildConfig
from padprep.errors import EXIT_USAGE, PadprepError
from padprep.input.formats import FieldNames, FormatOptions

# BuildConfig fields a recipe does not set: its sources are the inputs, and these say how a run goes.
_NOT_IN_RECIPE = frozenset(
    {"inputs", "output", "overwrite", "force", "split", "field_names", "input_format", "recipe_sha256", "recipe_side"}
)
_SOURCE_KEYS = ("path", "format", "fields", "role_map", "split", "count", "fraction", "weight")
_EVAL_KEYS = ("count", "fraction")
# Per-source keys that belong to the whole build (one tokenizer, one renderer, one layout).
_BUILD_WIDE = frozenset(f.name for f in dataclasses.fields(BuildConfig)) - {"role_map", "split"}


class RecipeError(PadprepError):
    """A recipe that cannot be built as written: exit 2, before any work."""

    def __init__(self, message: str):
        super().__init__(message, EXIT_USAGE)


@dataclass(frozen=True)
class Source:
    """One source of a recipe: its inputs, how they are read, and how many of its records go in.

    ``count`` takes exactly that many records (without replacement), ``fraction`` that share of
    them; ``weight`` repeats the training part (2: every record twice; 1.5: once, and half of them,
    drawn, once more). The eval split never repeats.
    """

    inputs: tuple[str, ...]
    where: str  # "sources[0]": how errors name it
    format: str | None = None  # None: the recipe's, else detected per file
    fields: tuple[tuple[str, str], ...] = ()  # renamed record keys, over the recipe's
    role_map: tuple[tuple[str, str], ...] = ()  # role renames, over the recipe's
    split: str = "train"  # the split of an hf://datasets/ input that names no file
    count: int | None = None
    fraction: float | None = None
    weight: float = 1.0

    @property
    def name(self) -> str:
        return self.inputs[0] if len(self.inputs) == 1 else f"{self.inputs[0]} (+{len(self.inputs) - 1})"

    def formats_over(self, base: FormatOptions) -> FormatOptions:
        """How this source's records are read: its own format, fields and roles over the build's."""
        fields = {f.name: getattr(base.fields, f.name) for f in dataclasses.fields(base.fields)} | dict(self.fields)
        return FormatOptions(
            self.format or base.format, FieldNames(**fields), tuple((dict(base.role_map) | dict(self.role_map)).items())
        )


@dataclass(frozen=True)
class EvalSplit:
    """How much of each source's sample is held out: ``count`` distinct conversations, or a ``fraction``."""

    count: int | None = None
    fraction: float | None = None


@dataclass(frozen=True)
class Recipe:
    """A parsed recipe: build options (``BuildConfig`` field names and values), sources, eval split."""

    text: str  # the file's text: part of the build key
    path: str
    options: dict[str, Any]
    sources: tuple[Source, ...]
    eval: EvalSplit | None = None

    @property
    def seed(self) -> int:
        """The draw's seed (the build's ``seed``, 0 when none is given)."""
        return int(self.options.get("seed") or 0)


def load_recipe(path: str | Path) -> Recipe:
    """Read and parse a recipe file (``RecipeError`` when it cannot be read or is not a recipe)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RecipeError(f"{path}: cannot read the recipe ({getattr(exc, 'strerror', None) or exc})") from None
    return parse_recipe(text, str(path))


def parse_recipe(text: str, path: str) -> Recipe:
    """A recipe from its YAML text; ``path`` is how errors name the file."""
    import yaml

    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise RecipeError(f"{path}: not valid YAML{where} ({getattr(exc, 'problem', None) or exc})") from None
    if not isinstance(doc, dict):
        raise RecipeError(f"{path}: a recipe is a mapping with a `sources` list (found {type(doc).__name__})")
    fail = _failer(path)
    sources = doc.get("sources")
    if not isinstance(sources, list) or not sources:
        fail("sources", "a recipe needs a non-empty `sources` list, each with a `path`")
    parsed = tuple(_source(s, i, fail) for i, s in enumerate(sources))
    evals = _eval(doc["eval"], fail) if doc.get("eval") is not None else None
    options = {}
    for key, value in doc.items():
        if key in ("sources", "eval"):
            continue
        options.update(_build_option(key, value, fail))
    return Recipe(text, path, options, parsed, evals)


def _failer(path: str):
    def fail(key: str, what: str) -> typing.NoReturn:
        raise RecipeError(f"{path}: {key}: {what}")

    return fail


def _source(obj: Any, i: int, fail) -> Source:
    where = f"sources[{i}]"
    if isinstance(obj, str):
        obj = {"path": obj}
    if not isinstance(obj, dict):
        fail(where, "a source is a mapping with a `path`, or a path")
    for key in obj:
        if key in _BUILD_WIDE or key in ("tokenizer", "train_on"):
            fail(f"{where}.{key}", "applies to the whole build, not to one source: set it at the top level of the recipe")
        if key not in _SOURCE_KEYS:
            fail(f"{where}.{key}", f"unknown key; a source has {', '.join(_SOURCE_KEYS)}")
    paths = obj.get("path")
    paths = [paths] if isinstance(paths, str) else paths
    if not isinstance(paths, list) or not paths or not all(isinstance(p, str) and p for p in paths):
        fail(f"{where}.path", "missing: every source names its input (a file, glob, directory, URL or hf:// path)")
    count = _positive(obj.get("count"), f"{where}.count", int, fail)
    fraction = _fraction(obj.get("fraction"), f"{where}.fraction", fail)
    weight = _positive(obj.get("weight", 1), f"{where}.weight", float, fail)
    if count is not None and fraction is not None:
        fail(where, "`count` and `fraction` exclude each other: give one")
    if count is not None and "weight" in obj:
        fail(where, "`count` and `weight` exclude each other: `count` is exactly that many records; give one")
    fields = tuple(_mapping(obj.get("fields"), f"{where}.fields", fail).items())
    roles = tuple(_mapping(obj.get("role_map"), f"{where}.role_map", fail).items())
    source = Source(
        tuple(paths), where, obj.get("format"), fields, roles, str(obj.get("split", "train")), count, fraction, weight
    )
    try:
        source.formats_over(FormatOptions())
    except (TypeError, ValueError) as exc:
        fail(where, str(exc).replace("FieldNames.__init__() got an ", ""))
    return source


def _eval(obj: Any, fail) -> EvalSplit:
    if not isinstance(obj, dict) or set(obj) - set(_EVAL_KEYS) or len(obj) != 1:
        fail("eval", "give exactly one of `count: N` (distinct conversations) or `fraction: F` (of each source's sample)")
    return EvalSplit(_positive(obj.get("count"), "eval.count", int, fail), _fraction(obj.get("fraction"), "eval.fraction", fail))


def _positive(value: Any, key: str, kind: type, fail):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not isinstance(value, int)):
        fail(key, f"must be a positive {'whole number' if kind is int else 'number'} (found {value!r})")
    if value <= 0:
        fail(key, f"must be positive (found {value!r})")
    return kind(value)


def _fraction(value: Any, key: str, fail) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        fail(key, f"must be a fraction in (0, 1] (found {value!r})")
    return float(value)


def _mapping(value: Any, key: str, fail) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        fail(key, "must map names to names, e.g. {messages: dialog}")
    return value


def _build_option(key: str, value: Any, fail) -> dict[str, Any]:
    """One top-level key as ``BuildConfig`` fields (``format`` and ``fields`` apply to every source)."""
    name = key.replace("-", "_")
    if name == "format":
        return {"input_format": _enum_value(name, value, BuildConfig.__dataclass_fields__["input_format"], fail)}
    if name == "fields":
        return {"field_names": tuple(_mapping(value, key, fail).items())}
    fields = BuildConfig.__dataclass_fields__
    if name not in fields or name in _NOT_IN_RECIPE:
        known = sorted(set(fields) - _NOT_IN_RECIPE | {"format", "fields", "sources", "eval"})
        fail(key, f"unknown key; a recipe has {', '.join(known)}")
    return {name: _enum_value(name, value, fields[name], fail)}


def _enum_value(name: str, value: Any, f: dataclasses.Field, fail) -> Any:
    """``value`` as the field's type: enums from their names, lists as tuples, mappings as pairs, paths."""
    kind = typing.get_type_hints(BuildConfig)[f.name]
    options = typing.get_args(kind) or (kind,)
    enum = next((o for o in options if isinstance(o, type) and issubclass(o, Enum)), None)
    if enum is not None:
        try:
            return enum(value)
        except ValueError:
            fail(name, f"{value!r} is not one of {', '.join(e.value for e in enum)}")
    if name == "role_map":
        return tuple(_mapping(value, name, fail).items())
    if isinstance(value, list):
        return tuple(value)
    if Path in options and isinstance(value, str):
        return Path(value)
    return value
