"""Every build option in one typed, immutable object.

The CLI fills it, the pipeline reads it, and the manifest records it (``as_manifest``), so what a
build did is always reconstructible from its output.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from enum import Enum
from pathlib import Path


class TrainOn(str, Enum):
    """Which tokens get labels: every assistant reply, only the final one, or every token."""

    assistant = "assistant"
    last = "last"
    all = "all"


class Truncation(str, Enum):
    """What to do with a row longer than ``max_length``.

    ``drop`` is the default: a truncated SFT example that lost its answer teaches nothing.
    """

    drop = "drop"
    right = "right"
    left = "left"


class SpanMethod(str, Enum):
    """How reply spans are found: ``auto`` scans for the generation header where preflight proved it
    agrees with the template's own boundaries; ``template`` always uses the prefix renders."""

    auto = "auto"
    template = "template"


class InputFormat(str, Enum):
    """The records' shape: detected per file (``auto``) or forced for every input."""

    auto = "auto"
    messages = "messages"
    sharegpt = "sharegpt"
    alpaca = "alpaca"
    prompt_completion = "prompt-completion"
    text = "text"
    preference = "preference"


class Reasoning(str, Enum):
    """What to do with the think blocks (``<think>...</think>``) a template writes into replies.

    ``train`` (default): train them, as the model writes them. ``mask-empty``: mask a block with nothing
    inside (Qwen3 writes ``<think>\n\n</think>\n\n`` into replies without reasoning). ``mask``: mask every
    think block. The reply after the block and its end-of-turn token stay trained; ids never change.
    """

    train = "train"
    mask_empty = "mask-empty"
    mask = "mask"


class Task(str, Enum):
    """What a build makes: SFT rows, or preference pairs (DPO); ``auto``: from the records' shape."""

    auto = "auto"
    sft = "sft"
    preference = "preference"


class PaddingSide(str, Enum):
    """Right padding for training, left padding for batched generation."""

    right = "right"
    left = "left"


# Options that change how a build runs but never what it writes: kept out of the manifest so that
# output is byte-identical whatever their value.
# The reject limits decide whether a build succeeds, never what a successful one writes.
_NOT_IN_MANIFEST = frozenset(
    {
        "output",
        "split",
        "overwrite",
        "force",
        "fresh",
        "workers",
        "chunk_size",
        "max_rejects",
        "max_reject_rate",
        "allow_empty",
        "ray_address",
        "cache_dir",
        "no_cache",
        "publish_to",
    }
)
# Options held as (key, value) pairs, recorded in the manifest as objects.
_PAIRS = frozenset({"role_map", "field_names"})
# An output given as a URL (s3://, gs://, hf://, https://...), before or after Path folded its "//".
_URL_OUTPUT = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:/")
# Schemes that name something padprep cannot write an output to (read-only, or a local path in disguise).
_NOT_WRITABLE = ("http", "https", "hf", "file")
# With no --max-reject-rate, a build fails when more than this fraction of records is rejected.
DEFAULT_MAX_REJECT_RATE = 0.05


class EngineName(str, Enum):
    """What maps ``Processor.process`` over pass 1's chunks (the output is the same bytes either way)."""

    local = "local"
    ray = "ray"


@dataclass(frozen=True)
class BuildConfig:
    """Options of one ``padprep build`` run."""

    inputs: tuple[Path | str, ...]  # files, globs, directories, "-", or hf://datasets/... (a str: Path folds "//")
    tokenizer: str
    output: Path
    chat_template: str | None = None
    pad_token: str | None = None
    train_on: TrainOn = TrainOn.assistant
    span_method: SpanMethod = SpanMethod.auto
    max_length: int | None = None
    truncation: Truncation = Truncation.drop
    pack: bool = False  # whole conversations packed into rows of exactly max_length tokens (best-fit decreasing)
    buckets: tuple[int, ...] | None = None
    pad_to_multiple_of: int = 1
    padding_side: PaddingSide = PaddingSide.right
    shard_tokens: int = 1 << 20
    seed: int | None = None
    overwrite: bool = False
    force: bool = False  # rebuild even when the output is up to date (replaces it)
    fresh: bool = False  # start over even where an interrupted build of the same key could be resumed
    strict: bool = False
    workers: int = 0  # worker processes; 0: automatic (one per core, or this process for a small input)
    chunk_size: int = 512
    preflight_records: int = 64
    input_format: InputFormat = InputFormat.auto
    role_map: tuple[tuple[str, str], ...] = ()  # speaker/role name -> system|user|assistant|tool|function_call
    field_names: tuple[tuple[str, str], ...] = ()  # renamed record keys: (("messages", "dialog"),)
    append_eos: bool = True  # raw-text rows (text, string prompt-completion) end with eos
    max_rejects: int | None = None  # fail when more bad records than this (None: no count limit)
    max_reject_rate: float = DEFAULT_MAX_REJECT_RATE  # fail when a larger fraction of records is bad
    allow_empty: bool = False  # succeed even when no row is written (no records, all rejected or dropped)
    reasoning: Reasoning = Reasoning.train  # think blocks in replies: train, mask the empty ones, or mask all
    engine: EngineName = EngineName.local  # what runs pass 1's chunks: this machine's processes, or Ray
    ray_address: str | None = None  # --engine ray: the cluster to join (None: RAY_ADDRESS, else a local one)
    split: str = "train"  # the split of an hf://datasets/ input that names no file (the files' bytes are in the key)
    task: Task = Task.auto  # sft rows or preference pairs; auto: preference when the records are pairs
    padded_pairs: bool = False  # a preference build writes each side as a padded row (chosen_input_ids, ...)
    # One side of a recipe build (``--recipe``): the recipe file's sha256 and "train" or "eval" (both in the key).
    recipe_sha256: str | None = None
    recipe_side: str | None = None
    # The tokenized store (``padprep/store``): where it is (None: PADPREP_CACHE_DIR, else the user's cache), or none.
    cache_dir: Path | None = None
    no_cache: bool = False
    # A build to a URL (``--output s3://...``) runs into a local staging output (``output``) and is published
    # here after (``output/publish.py``); set by ``pipeline.build`` on the staged build's options, never by hand.
    publish_to: str | None = None

    def __post_init__(self) -> None:
        self._coerce_enums()
        if _URL_OUTPUT.match(str(self.output)):  # Path folds "s3://b/o" to "s3:/b/o": restored where it is read
            url = re.sub(r"^([^:]+):/+", r"\1://", str(self.output))
            if url.split(":", 1)[0].lower() in _NOT_WRITABLE:
                raise ValueError(
                    f"--output {url}: padprep cannot write there; give a local path or a URL of a store "
                    "that fsspec writes (s3://, gs://, az://: pip install 'padprep[cloud]')"
                )
        if self.max_length is not None and self.max_length < 1:
            raise ValueError("--max-length must be a positive integer")
        if self.pad_to_multiple_of < 1:
            raise ValueError("--pad-to-multiple-of must be a positive integer")
        if self.buckets is not None:
            if not self.buckets or any(b < 1 for b in self.buckets):
                raise ValueError("--buckets must be positive integers, e.g. 256,512,1024")
            if list(self.buckets) != sorted(set(self.buckets)):
                raise ValueError("--buckets must be strictly increasing, e.g. 256,512,1024")
        if self.pack:
            self._check_pack()
        if Task(self.task) is Task.preference and self.pack:
            raise ValueError("--pack applies to SFT rows; a preference build writes pairs, bucketed: drop --pack")
        if self.workers < 0:
            raise ValueError("--workers must be 0 (automatic) or a positive number")
        if self.shard_tokens < 1:
            raise ValueError("--shard-tokens must be positive")
        if self.max_rejects is not None and self.max_rejects < 0:
            raise ValueError("--max-rejects must be 0 or more")
        if not 0.0 <= self.max_reject_rate <= 1.0:
            raise ValueError("--max-reject-rate must be a fraction between 0 and 1, e.g. 0.05")
        self.format_options()  # validates --format, --role-map and the field names

    def _coerce_enums(self) -> None:
        """Enum options given by value (``engine="ray"``, as the library and recipes may) become the enum:
        the pipeline compares them by identity."""
        for f in dataclasses.fields(self):
            kind = _ENUM_FIELDS.get(f.name)
            value = getattr(self, f.name)
            if kind is not None and not isinstance(value, kind):
                try:
                    object.__setattr__(self, f.name, kind(value))
                except ValueError:
                    raise ValueError(f"{f.name}: {value!r} is not one of {', '.join(e.value for e in kind)}") from None

    def _check_pack(self) -> None:
        """--pack writes rows of exactly --max-length tokens: options about buckets or left padding do not apply."""
        if self.max_length is None:
            raise ValueError("--pack needs --max-length L, the length of every packed row (e.g. --pack --max-length 4096)")
        if self.buckets is not None:
            raise ValueError("--pack and --buckets exclude each other: packed rows all have --max-length tokens; drop one")
        if self.pad_to_multiple_of != 1:
            raise ValueError(
                "--pad-to-multiple-of applies to buckets; with --pack every row is --max-length tokens: "
                "choose a --max-length that is the multiple you need"
            )
        if PaddingSide(self.padding_side) is not PaddingSide.right:
            raise ValueError(
                "--pack writes right-padded rows for training; --padding-side left (batched generation) "
                "needs a bucketed build: drop --pack"
            )

    def format_options(self):
        """The options of the read/normalize stages (``formats.FormatOptions``)."""
        from padprep.input.formats import FieldNames, FormatOptions

        known = FieldNames.names()
        for key, value in self.field_names:
            if key not in known:
                raise ValueError(f"unknown record field {key!r}; renamable fields: {', '.join(known)}")
            if not value:
                raise ValueError(f"--{key}-field must not be empty")
        fmt = None if self.input_format is InputFormat.auto else InputFormat(self.input_format).value
        return FormatOptions(fmt, FieldNames(**dict(self.field_names)), tuple(self.role_map))

    def as_manifest(self) -> dict:
        """The options as plain JSON values (paths as given, enums as their names)."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in _NOT_IN_MANIFEST:
                continue
            if isinstance(value, Enum):
                value = value.value
            elif isinstance(value, Path):
                value = str(value)
            elif f.name in _PAIRS:
                value = dict(value)
            elif isinstance(value, tuple):
                value = [str(v) if isinstance(v, Path) else v for v in value]
            out[f.name] = value
        return out


# The options that hold an enum, and which (``_coerce_enums``).
_ENUM_FIELDS = {
    "train_on": TrainOn,
    "span_method": SpanMethod,
    "truncation": Truncation,
    "padding_side": PaddingSide,
    "input_format": InputFormat,
    "reasoning": Reasoning,
    "engine": EngineName,
    "task": Task,
}
