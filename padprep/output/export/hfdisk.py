"""A ``datasets`` ``save_to_disk`` folder, written table by table (what ``load_from_disk`` reads).

The layout is ``datasets``': ``data-00000-of-0000N.arrow`` (Arrow IPC streams carrying the features in
their ``huggingface`` schema metadata), ``dataset_info.json`` and ``state.json``; a ``DatasetDict`` adds
``dataset_dict.json`` naming its splits, one such folder each. Written here rather than through
``Dataset.save_to_disk`` so that it streams (a file is closed at ~256 MiB, nothing held beyond a table)
and is deterministic (``datasets`` gives an in-memory dataset a random fingerprint; this one is the
sources' build keys hashed). Sequences are written as ``Sequence(Value(...))``, which every ``datasets``
from 2.x reads.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from padprep.layout.shards import int32_array, write_json

FILE_BYTES = 256 << 20  # a data file is closed once it holds this much


def sequence_feature(dtype: str = "int32") -> dict[str, Any]:
    return {"feature": {"dtype": dtype, "_type": "Value"}, "_type": "Sequence"}


def null_feature() -> dict[str, Any]:
    return {"dtype": "null", "_type": "Value"}


class DiskDataset:
    """One ``Dataset.save_to_disk`` folder at ``folder``, fed tables of ``schema`` by ``write``; ``close`` names the files.

    Args:
        folder: the (empty) folder to write.
        schema: the tables' Arrow schema.
        features: ``datasets``' features JSON for the same columns.
        fingerprint: the ``_fingerprint`` written to ``state.json``.
    """

    def __init__(self, folder: Path, schema: pa.Schema, features: dict[str, Any], fingerprint: str):
        self.folder, self.features, self.fingerprint = Path(folder), features, fingerprint
        self.folder.mkdir(parents=True, exist_ok=True)
        meta = {"huggingface": json.dumps({"info": {"features": features}})}
        self.schema = schema.with_metadata(meta)
        self.files: list[Path] = []
        self.rows = 0
        self._writer: pa.ipc.RecordBatchStreamWriter | None = None
        self._sink: pa.OSFile | None = None

    def write(self, table: pa.Table) -> None:
        if not table.num_rows:
            return
        if self._writer is None:
            path = self.folder / f"data-{len(self.files):05d}.arrow.partial"
            self.files.append(path)
            self._sink = pa.OSFile(str(path), "wb")
            self._writer = pa.ipc.new_stream(self._sink, self.schema)
        self._writer.write_table(table.cast(self.schema))
        self.rows += table.num_rows
        if self._sink.tell() >= FILE_BYTES:
            self._close_file()

    def _close_file(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._sink.close()
            self._writer = self._sink = None

    def close(self) -> None:
        """Close the last file, name every file ``data-IIIII-of-NNNNN.arrow`` and write ``state.json`` / ``dataset_info.json``."""
        self._close_file()
        if not self.files:  # an empty dataset still has one (empty) file, as datasets writes it
            self.files.append(self.folder / "data-00000.arrow.partial")
            with pa.OSFile(str(self.files[0]), "wb") as sink, pa.ipc.new_stream(sink, self.schema):
                pass
        names = []
        for i, path in enumerate(self.files):
            name = f"data-{i:05d}-of-{len(self.files):05d}.arrow"
            os.rename(path, self.folder / name)
            names.append(name)
        write_json(
            self.folder / "dataset_info.json",
            {"citation": "", "description": "", "features": self.features, "homepage": "", "license": ""},
        )
        write_json(
            self.folder / "state.json",
            {
                "_data_files": [{"filename": n} for n in names],
                "_fingerprint": self.fingerprint,
                "_format_columns": None,
                "_format_kwargs": {},
                "_format_type": None,
                "_output_all_columns": False,
                "_split": None,
            },
        )


def list_column(flat: np.ndarray, lengths: np.ndarray) -> pa.Array:
    """``list<int32>`` rows cut from one flat array by their lengths (no copy of the values)."""
    offsets = np.concatenate(([0], np.cumsum(lengths, dtype=np.int64)))
    if offsets[-1] >= 1 << 31:
        raise ValueError("list_column: more than 2**31 values in one table")
    return pa.ListArray.from_arrays(int32_array(offsets), int32_array(flat))


def write_dataset_dict(folder: Path, splits: list[str]) -> None:
    """``dataset_dict.json`` of a ``DatasetDict`` whose splits are sub-folders of ``folder``."""
    write_json(Path(folder) / "dataset_dict.json", {"splits": splits})


__all__ = ["DiskDataset", "list_column", "null_feature", "sequence_feature", "write_dataset_dict"]
