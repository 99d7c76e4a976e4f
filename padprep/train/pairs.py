"""Reading a preference build to train: ``PairDataset`` (what ``padprep.load`` gives for one).

Item ``i`` is ``{"prompt_ids", "chosen_ids", "rejected_ids"}`` as lists of ints: the example shape
TRL's ``DataCollatorForPreference`` takes. Shards are memory-mapped; items are in manifest order,
shard after shard. ``bucket_indices`` groups pairs by bucket for ``BucketBatchSampler``, so that a
batch holds pairs of similar lengths.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
from torch.utils.data import Dataset

from padprep.output.manifest import Manifest
from padprep.schema import PAIR_COLUMNS

SEQ_LEN = "seq_len"  # each pair's bucket, a column of ``table()``


class PairDataset(Dataset):
    """The pairs of a preference build (``padprep.load(DIR)`` on one).

    Example::

        >>> pairs = padprep.load("out/dpo")
        >>> pairs[0].keys()
        dict_keys(['prompt_ids', 'chosen_ids', 'rejected_ids'])
        >>> sampler = BucketBatchSampler(pairs, batch_size=8, seed=0)
    """

    def __init__(self, root: Path, manifest: Manifest):
        self.root = Path(root)
        self.shards = [s for s in manifest.shards if s.rows]
        self._tables: list[pa.Table] = []
        for s in self.shards:
            with pa.memory_map(str(self.root / s.file), "r") as source:  # buffers keep the map alive
                table = pa.ipc.open_stream(source).read_all()
            if table.num_rows != s.rows or table.column_names[:3] != list(PAIR_COLUMNS):
                raise ValueError(
                    f"{self.root / s.file}: holds {table.num_rows} rows of {table.column_names}, the manifest lists "
                    f"{s.rows} pairs; rebuild it or check it with padprep inspect --verify"
                )
            self._tables.append(table)
        self._starts = np.cumsum([0] + [s.rows for s in self.shards])

    def __len__(self) -> int:
        return int(self._starts[-1])

    def __getitem__(self, i: int) -> dict[str, list[int]]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"pair {i} out of range ({len(self)} pairs)")
        i %= len(self)
        k = int(np.searchsorted(self._starts, i, side="right")) - 1
        row = self._tables[k].slice(i - int(self._starts[k]), 1)
        return {name: row.column(name)[0].as_py() for name in PAIR_COLUMNS}

    def bucket_indices(self) -> dict[int, np.ndarray]:
        """``{bucket: pair indices}``, ascending."""
        out: dict[int, list[np.ndarray]] = {}
        for s, start in zip(self.shards, self._starts):
            out.setdefault(s.seq_len, []).append(np.arange(start, start + s.rows))
        return {n: np.concatenate(parts) for n, parts in sorted(out.items())}

    def table(self) -> pa.Table:
        """Every pair as one table: TRL's three columns and ``seq_len`` (the pair's bucket), on the shards' maps."""
        parts = [
            t.select(list(PAIR_COLUMNS)).append_column(SEQ_LEN, pa.array(np.full(t.num_rows, s.seq_len, np.int32)))
            for t, s in zip(self._tables, self.shards)
        ]
        schema = pa.schema([(c, pa.list_(pa.int32())) for c in PAIR_COLUMNS] + [(SEQ_LEN, pa.int32())])
        return pa.concat_tables(parts) if parts else schema.empty_table()

    def __repr__(self) -> str:
        return f"PairDataset({self.root}, {len(self)} pairs in {len(self.shards)} shards)"
