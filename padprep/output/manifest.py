"""The manifest (``manifest.json``): what was built from what. Written and read here, and only here.

A ``Manifest`` holds the build's options, tokenizer and template fingerprints, inputs (with where
each record went), the buckets or packing, one ``ShardEntry`` per shard, totals and hazards. Its
JSON shape is stable (``format``: ``padprep-shards/1`` or ``padprep-packed-shards/1``); reading
checks that format, so an output from an incompatible padprep is refused in one line rather than
misread.

Example:
    >>> m = read_manifest(Path("out"))  # doctest: +SKIP
    >>> m.rows_written, m.shards[0].sha256, m.packed  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from padprep.errors import EXIT_FAILED, EXIT_USAGE, PadprepError
from padprep.layout.shards import WrittenShard, write_json
from padprep.schema import MANIFEST

FORMAT = "padprep-shards/1"
PACKED_FORMAT = "padprep-packed-shards/1"
PAIRS_FORMAT = "padprep-preference-pairs/1"  # unpadded prompt_ids / chosen_ids / rejected_ids (TRL's columns)
FORMATS = (FORMAT, PACKED_FORMAT, PAIRS_FORMAT)


class ManifestError(PadprepError):
    """No manifest (exit 2), or one padprep cannot read: damaged or of another format (``damaged``: exit 1)."""

    def __init__(self, message: str, damaged: bool = False):
        super().__init__(message, EXIT_FAILED if damaged else EXIT_USAGE)
        self.damaged = damaged


# Shard fields every reader relies on, and their types.
_SHARD_KEYS: dict[str, type] = {
    "file": str,
    "rows": int,
    "seq_len": int,
    "sha256": str,
    "real_tokens": int,
    "pad_tokens": int,
    "trained_tokens": int,
}


@dataclass(frozen=True)
class ShardEntry(WrittenShard):
    """One shard as the manifest lists it: what pass 2 wrote (``WrittenShard``'s fields), and ``extra``,
    the fields this padprep does not name (written back unchanged, after the known ones)."""

    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, shard: WrittenShard) -> "ShardEntry":
        """The entry of a shard pass 2 wrote."""
        return cls(**{f.name: getattr(shard, f.name) for f in dataclasses.fields(shard)})

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> "ShardEntry":
        """A shard entry from its manifest object, as read back."""
        known = {k: obj[k] for k in _ENTRY_FIELDS if k in obj}
        known.setdefault("bucket", obj["seq_len"])
        known.setdefault("bytes", 0)
        return cls(**known, extra={k: v for k, v in obj.items() if k not in _ENTRY_FIELDS})

    def to_json(self) -> dict[str, Any]:
        """The manifest object, keys in the order padprep has always written them."""
        out: dict[str, Any] = {"file": self.file, "bucket": self.bucket, "rows": self.rows, "seq_len": self.seq_len}
        if self.sequences is not None:
            out["sequences"] = self.sequences
        out["real_tokens"] = self.real_tokens
        out["pad_tokens"] = self.pad_tokens
        if self.fill is not None:
            out["fill"] = self.fill
        out.update({"trained_tokens": self.trained_tokens, "bytes": self.bytes, "sha256": self.sha256})
        if self.sources is not None:
            out.update({"sources": self.sources, "sources_sha256": self.sources_sha256})
        out.update(self.extra)
        return out


_ENTRY_FIELDS = (
    "file",
    "bucket",
    "rows",
    "seq_len",
    "real_tokens",
    "pad_tokens",
    "trained_tokens",
    "bytes",
    "sha256",
    "sequences",
    "fill",
    "sources",
    "sources_sha256",
)


@dataclass
class Manifest:
    """A build's manifest. ``to_json`` gives the object written to ``manifest.json``, key order included.

    ``options``, ``tokenizer``, ``chat_template``, ``inputs``, ``packing``, ``totals`` and ``hazards``
    are plain JSON objects (their keys are documented in the README); the fields readers need have
    typed properties (``packed``, ``pad_id``, ``padding_side``, ``rows_written``...).
    """

    padprep_version: str
    format: str
    build_key: str | None
    options: dict[str, Any]
    tokenizer: dict[str, Any]
    chat_template: dict[str, Any]
    inputs: list[dict[str, Any]]
    buckets: list[int]
    shards: list[ShardEntry]
    totals: dict[str, Any]
    hazards: list[dict[str, Any]]
    packing: dict[str, Any] | None = None
    mixture: dict[str, Any] | None = None  # one side of a recipe build: per source, what was drawn and written
    task: str = "sft"  # "sft" rows or "preference" pairs

    @property
    def packed(self) -> bool:
        return self.format == PACKED_FORMAT or bool(self.options.get("pack"))

    @property
    def pairs(self) -> bool:
        """A preference build: shards of prompt_ids / chosen_ids / rejected_ids."""
        return self.format == PAIRS_FORMAT

    @property
    def pad_id(self) -> int | None:
        return self.tokenizer.get("pad_id")

    @property
    def padding_side(self) -> str:
        return self.options.get("padding_side", "right")

    @property
    def weighted(self) -> bool:
        """Whether the shards carry ``loss_weights`` (some message's loss_weight was fractional)."""
        return bool(self.totals.get("rows_with_fractional_weights"))

    @property
    def rows_written(self) -> int:
        return int(self.totals.get("rows_written", sum(s.rows for s in self.shards)))

    @property
    def engine(self) -> str:
        return self.options.get("engine", "local")

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "padprep_version": self.padprep_version,
            "format": self.format,
            "task": self.task,
            "build_key": self.build_key,
            "options": self.options,
            "tokenizer": self.tokenizer,
            "chat_template": self.chat_template,
            "inputs": self.inputs,
            "buckets": self.buckets,
        }
        if self.packing is not None:
            out["packing"] = self.packing
        if self.mixture is not None:
            out["mixture"] = self.mixture
        out.update({"shards": [s.to_json() for s in self.shards], "totals": self.totals, "hazards": self.hazards})
        return out

    @classmethod
    def from_json(cls, obj: Any, where: str = MANIFEST) -> "Manifest":
        """Check and read a manifest object; a damaged one or one of another format is a ``ManifestError``."""
        if not isinstance(obj, dict):
            raise ManifestError(f"{where}: damaged, not a JSON object; rebuild the output", damaged=True)
        fmt = obj.get("format")
        if fmt not in FORMATS:
            raise ManifestError(
                f"{where}: format {fmt!r}, this padprep reads {' or '.join(FORMATS)}; rebuild the output "
                "with this padprep or read it with the version that wrote it",
                damaged=True,
            )
        shards = obj.get("shards")
        if not isinstance(shards, list) or not all(
            isinstance(sh, dict) and all(isinstance(sh.get(k), t) for k, t in _SHARD_KEYS.items()) for sh in shards
        ):
            raise ManifestError(f"{where}: damaged, its shard list is missing or malformed; rebuild the output", damaged=True)
        if any(Path(sh["file"]).name != sh["file"] for sh in shards):
            raise ManifestError(f"{where}: damaged, a shard name points outside the output directory", damaged=True)
        return cls(
            padprep_version=str(obj.get("padprep_version", "")),
            format=fmt,
            build_key=obj.get("build_key"),
            options=_object(obj.get("options")),
            tokenizer=_object(obj.get("tokenizer")),
            chat_template=_object(obj.get("chat_template")),
            inputs=list(obj.get("inputs") or []),
            buckets=list(obj.get("buckets") or []),
            shards=[ShardEntry.from_json(sh) for sh in shards],
            totals=_object(obj.get("totals")),
            hazards=list(obj.get("hazards") or []),
            packing=obj.get("packing"),
            mixture=obj.get("mixture") if isinstance(obj.get("mixture"), dict) else None,
            task=str(obj.get("task") or ("preference" if fmt == PAIRS_FORMAT else "sft")),
        )


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def write_manifest(directory: Path, manifest: Manifest) -> None:
    """Write ``directory/manifest.json``."""
    write_json(Path(directory) / MANIFEST, manifest.to_json())


def _builds_below(directory: Path) -> str:
    """Where a manifest was expected and is not: the builds in the folders below (a recipe's output holds
    one per side), else the question whether this is an output at all."""
    below = sorted(str(p.parent) for p in directory.glob(f"*/{MANIFEST}"))
    if below:
        return f"the builds are in {' and '.join(below)} (a recipe writes one per side): inspect {' or '.join(below)}"
    return "is this a padprep build output?"


def read_manifest(directory: Path) -> Manifest:
    """Read and check ``directory/manifest.json``.

    Args:
        directory: a padprep build output.

    Raises:
        ManifestError: no manifest there (exit 2), or a damaged one, or one of another format (exit 1).

    Example:
        >>> read_manifest(Path("out")).shards[0].file  # doctest: +SKIP
        'bucket-000256-00000.arrow'
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise ManifestError(f"{directory}: no such directory")
    path = directory / MANIFEST
    if not path.is_file():
        raise ManifestError(f"{directory}: no {MANIFEST} here; {_builds_below(directory)}")
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{path}: damaged, not JSON ({getattr(exc, 'msg', exc)}); rebuild the output", damaged=True) from None
    except OSError as exc:
        raise ManifestError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return Manifest.from_json(obj, str(path))
