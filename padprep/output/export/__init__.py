"""``padprep export``: a build -> the pre-tokenized format a trainer's own loader reads, from the shards alone.

Nothing is re-tokenized: the rows are read back from the shards (each checked against its sha256),
shard by shard, and written in the format's layout into a partial folder beside DEST, renamed into place
at the end, with ``padprep-export.json`` (the source build keys, each file's sha256). One module per
format; each states its columns and label convention, and refuses in one line a build it cannot hold
exactly. docs/exports.md has the table.

Example:
    >>> export(Path("out"), "axolotl", Path("out-axolotl"))  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from padprep.errors import EXIT_USAGE, PadprepError
from padprep.layout.shards import file_sha256
from padprep.output.export.dest import EXPORT_MANIFEST, Destination, read_export_manifest
from padprep.output.export.source import ExportError, open_build
from padprep.output.fetch import local_copy

# format name -> its module under padprep/output/export/ (each has ``write(sides, dest, fingerprint) -> dict``)
FORMATS = {
    "axolotl": "axolotl",
    "llamafactory": "llamafactory",
    "mds": "mds",
    "swift": "swift",
    "olmo-core": "olmo_core",
    "megatron-packed": "megatron",
}


@dataclass(frozen=True)
class ExportResult:
    dest: Path
    manifest: dict[str, Any]
    up_to_date: bool = False  # DEST already held this export of the same builds, intact: nothing was written


def export(build: Path, fmt: str, dest: Path, overwrite: bool = False) -> ExportResult:
    """Write the build at ``build`` (a build, or a recipe's output) to ``dest`` in format ``fmt``.

    Raises:
        ExportError: an unknown format, or a build the format cannot hold (exit 2).
        ManifestError: no build there (exit 2), a damaged one (exit 1).
        OutputInTheWay / OutputExists: DEST is not padprep's to replace, or exists without ``overwrite`` (exit 2).
    """
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; one of {', '.join(FORMATS)}", EXIT_USAGE)
    writer = importlib.import_module(f"padprep.output.export.{FORMATS[fmt]}")
    build = local_copy(build)  # a build at a URL: read from the local read cache (``output/fetch.py``)
    sides = open_build(Path(build))
    keys = [f"{s.name}:{s.manifest.build_key}" for s in sides]
    fingerprint = hashlib.sha256("\n".join([fmt, *keys]).encode()).hexdigest()[:16]
    if not overwrite:
        current = _up_to_date(Path(dest), fmt, sides)
        if current is not None:
            return ExportResult(Path(dest), current, up_to_date=True)
    target = Destination(Path(dest), [s.path for s in sides] + [Path(build)], overwrite)
    try:
        written = writer.write(sides, target, fingerprint)
        manifest = target.commit(
            {
                "export": fmt,
                "source": {
                    "sides": [
                        {
                            "name": s.name or "train",
                            "build_key": s.manifest.build_key,
                            "format": s.manifest.format,
                            "task": s.manifest.task,
                            "rows_written": s.manifest.rows_written,
                        }
                        for s in sides
                    ],
                    "tokenizer": sides[0].manifest.tokenizer,
                },
                "written": written,
            }
        )
    except BaseException:
        target.abandon()
        raise
    return ExportResult(Path(dest), manifest)


def _up_to_date(dest: Path, fmt: str, sides) -> dict[str, Any] | None:
    """DEST's export manifest when DEST is this format's export of these very builds (build keys), every file intact."""
    if not (dest / EXPORT_MANIFEST).is_file():
        return None
    try:
        manifest = read_export_manifest(dest)
    except PadprepError:
        return None
    recorded = [(s.get("name"), s.get("build_key")) for s in manifest.get("source", {}).get("sides", [])]
    if manifest.get("export") != fmt or recorded != [(s.name or "train", s.manifest.build_key) for s in sides]:
        return None
    if any(s.manifest.build_key is None for s in sides):
        return None
    for f in manifest["files"]:
        path = dest / str(f.get("path"))
        if not path.is_file() or path.stat().st_size != f.get("bytes") or file_sha256(path) != f.get("sha256"):
            return None
    return manifest


__all__ = ["FORMATS", "ExportError", "ExportResult", "export"]
