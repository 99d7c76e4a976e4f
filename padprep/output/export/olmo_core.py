"""OLMo-core's numpy dataset with label masks: token-id memmaps, label-mask memmaps and document boundaries.

Per part ``NNNN`` (a part is closed at 2**28 tokens):

* ``token_ids_part_NNNN.npy``: every conversation's tokens one after another, a raw ``uint32`` memmap (no
  ``.npy`` header: what ``np.memmap(path, dtype=np.uint32)`` reads, as OLMo-core does);
* ``labels_mask_part_NNNN.npy``: one ``bool`` per token, True where padprep trains the token (its label is
  not -100). Not shifted: OLMo-core's ``get_labels`` masks ``input_ids`` with it, then shifts;
* ``token_ids_part_NNNN.csv.gz``: one line ``start,end`` per conversation (token offsets in the part), the
  document boundaries OLMo-core reads from metadata.

OLMo-core otherwise infers documents from eos tokens in the array (a local path with ``eos_token_id`` set):
with a chat template whose end-of-turn token is eos that cuts a conversation at every reply. Use the
metadata (``OLMO_DATA_PREP_USE_ARRAY_IF_LOCAL=metadata``) or a remote path. ``DEST/train`` (and ``DEST/eval``
for a recipe's eval side). A packed build is written one conversation a document (OLMo-core packs or pads).
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from padprep.output.export.dest import Destination
from padprep.output.export.source import Side, chunks, refuse_weights
from padprep.schema import IGNORE_INDEX

NAME = "olmo-core"
PART_TOKENS = 1 << 28


class Parts:
    """Token and mask memmaps written part by part, with each part's document boundaries."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.part = -1
        self.tokens = 0  # in the open part
        self.documents = 0
        self._files = None

    def _open(self) -> None:
        self._close()
        self.part += 1
        stem = f"part_{self.part:04d}"
        self._files = (
            open(self.folder / f"token_ids_{stem}.npy", "wb"),
            open(self.folder / f"labels_mask_{stem}.npy", "wb"),
            gzip.GzipFile(self.folder / f"token_ids_{stem}.csv.gz", "wb", mtime=0),
        )
        self.tokens = 0

    def _close(self) -> None:
        if self._files is not None:
            for f in self._files:
                f.close()
            self._files = None

    def write(self, ids: np.ndarray, labels: np.ndarray, lengths: np.ndarray) -> None:
        """Conversations given as flat ``ids`` / ``labels`` and their ``lengths``; a part never splits one."""
        if ids.size and int(ids.min()) < 0:
            raise ValueError("olmo-core: a negative token id")
        offsets = np.concatenate(([0], np.cumsum(lengths, dtype=np.int64)))
        start = 0
        while start < len(lengths):
            if self._files is None or (self.tokens and self.tokens + lengths[start] > PART_TOKENS):
                self._open()
            # as many whole conversations as fit in the part (at least one)
            room = PART_TOKENS - self.tokens + offsets[start]
            end = max(start + 1, int(np.searchsorted(offsets, room, side="right")) - 1)
            end = min(end, len(lengths))
            a, b = offsets[start], offsets[end]
            token_file, mask_file, meta = self._files
            token_file.write(np.ascontiguousarray(ids[a:b], dtype=np.uint32).tobytes())
            mask_file.write((labels[a:b] != IGNORE_INDEX).astype(np.bool_).tobytes())
            bounds = self.tokens + offsets[start : end + 1] - a
            meta.write("".join(f"{s},{e}\n" for s, e in zip(bounds[:-1], bounds[1:])).encode())
            self.tokens += int(b - a)
            self.documents += end - start
            start = end

    def close(self) -> None:
        self._close()


def write(sides: list[Side], dest: Destination, fingerprint: str) -> dict:
    for side in sides:
        refuse_weights(side, NAME)
    rows, parts = {}, {}
    for side in sides:
        split = side.name or "train"
        out = Parts(dest.path(split))
        for chunk in chunks(side):
            out.write(chunk.ids, chunk.labels, chunk.lengths)
        out.close()
        rows[split], parts[split] = out.documents, out.part + 1
    return {"rows": rows, "parts": parts, "dtype": "uint32"}
