"""What an export reads: a build's shards and manifest, shard by shard, each checked against its sha256.

A build is one output (``manifest.json``) or a recipe's output (``train/`` and ``eval/``, one build each:
its *sides*). Rows come back with their padding removed by ``attention_mask`` (by position, never by id),
as flat arrays per shard: memory stays bounded by one shard, and no token is re-tokenized.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa

from padprep.errors import EXIT_USAGE, PadprepError
from padprep.layout.shards import file_sha256, int32_values, read_shard
from padprep.output.manifest import Manifest, ManifestError, read_manifest
from padprep.schema import MANIFEST, PAIR_COLUMNS, SEQ_LENS

SIDES = ("train", "eval")  # a recipe's builds, in this order


class ExportError(PadprepError):
    """An export that cannot be made exactly: refused in one line (exit 2 for a build the format cannot hold)."""


@dataclass(frozen=True)
class Side:
    """One build to export: ``name`` is ``train`` / ``eval`` for a recipe's side, ``""`` for a plain build."""

    name: str
    path: Path
    manifest: Manifest


@dataclass(frozen=True)
class Chunk:
    """One shard's conversations, padding removed.

    ``ids`` and ``labels`` are every sequence's tokens one after another (int32); ``lengths`` each
    sequence's length; ``per_row`` how many sequences each padded row held (1 unless packed), so that a
    format that keeps packing can rebuild the rows. Labels are padprep's: not shifted, -100 where not trained.
    """

    ids: np.ndarray
    labels: np.ndarray
    lengths: np.ndarray
    per_row: np.ndarray

    @property
    def offsets(self) -> np.ndarray:
        """``len(lengths) + 1`` starts: sequence ``i`` is ``ids[offsets[i]:offsets[i + 1]]``."""
        return np.concatenate(([0], np.cumsum(self.lengths, dtype=np.int64)))


@dataclass(frozen=True)
class PairChunk:
    """One preference shard: per pair, the prompt's and each completion's tokens (every completion token trained)."""

    prompt: list[np.ndarray]
    chosen: list[np.ndarray]
    rejected: list[np.ndarray]


def open_build(path: Path) -> list[Side]:
    """The builds under ``path``: itself, or a recipe's ``train/`` and ``eval/``.

    Raises:
        ManifestError: no build there (exit 2), or a damaged manifest (exit 1).
    """
    path = Path(path)
    if not (path / MANIFEST).is_file():
        sides = [Side(name, path / name, read_manifest(path / name)) for name in SIDES if (path / name / MANIFEST).is_file()]
        if sides:
            return sides
    return [Side("", path, read_manifest(path))]


def _checked(side: Side, file: str, sha256: str) -> Path:
    path = side.path / file
    if not path.is_file():
        raise ManifestError(f"{path}: listed in the manifest and missing; rebuild the output", damaged=True)
    if file_sha256(path) != sha256:
        raise ManifestError(f"{path}: its sha256 differs from the manifest's (damaged); rebuild the output", damaged=True)
    return path


def refuse_weights(side: Side, fmt: str) -> None:
    if side.manifest.weighted:
        raise ExportError(
            f"{side.path}: some rows carry fractional loss weights, which {fmt} cannot hold (a token is trained or not); "
            "rebuild without fractional loss_weight",
            EXIT_USAGE,
        )


def chunks(side: Side) -> Iterator[Chunk]:
    """Every shard of an SFT build (packed or not), in manifest order, as a ``Chunk``."""
    if side.manifest.pairs:
        raise ExportError(f"{side.path}: a preference-pair build; this format takes SFT rows", EXIT_USAGE)
    for entry in side.manifest.shards:
        cols = read_shard(_checked(side, entry.file, entry.sha256))
        real = cols["attention_mask"].astype(bool)
        if SEQ_LENS in cols:
            lengths = cols[SEQ_LENS].astype(np.int64)
            per_row = np.diff(cols["seq_lens_offsets"]).astype(np.int64)
        else:
            lengths = real.sum(axis=1, dtype=np.int64)
            per_row = np.ones(len(lengths), np.int64)
        ids, labels = cols["input_ids"][real], cols["labels"][real]
        if int(lengths.sum()) != len(ids):
            raise ManifestError(f"{side.path / entry.file}: sequence lengths disagree with attention_mask; rebuild", damaged=True)
        yield Chunk(ids, labels, lengths, per_row)


def pair_chunks(side: Side) -> Iterator[PairChunk]:
    """Every shard of an (unpadded) preference build, in manifest order."""
    if not side.manifest.pairs:
        raise ExportError(f"{side.path}: an SFT build; preference pairs were asked for", EXIT_USAGE)
    for entry in side.manifest.shards:
        with pa.memory_map(str(_checked(side, entry.file, entry.sha256)), "r") as source:
            table = pa.ipc.open_stream(source).read_all()
        if table.column_names[:3] != list(PAIR_COLUMNS):
            raise ExportError(
                f"{side.path}: padded pairs (--padded-pairs); export reads the unpadded pair build: rebuild without it",
                EXIT_USAGE,
            )
        yield PairChunk(*(_lists(table.column(name)) for name in PAIR_COLUMNS))


def _lists(column: pa.ChunkedArray) -> list[np.ndarray]:
    col = column.combine_chunks()
    offsets = int32_values(col.offsets)
    values = int32_values(col.values)
    return [values[a:b] for a, b in zip(offsets[:-1], offsets[1:])]


__all__ = ["Chunk", "ExportError", "PairChunk", "Side", "chunks", "open_build", "pair_chunks", "refuse_weights"]
