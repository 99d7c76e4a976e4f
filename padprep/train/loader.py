"""From shards to a training loop: a memory-mapped torch ``Dataset``, a bucket batch sampler, a collate.

* ``load(DIR)`` opens a build as a ``ShardDataset``. Each shard file is memory-mapped and its
  ``fixed_size_list<int32>[seq_len]`` columns become ``(rows, seq_len)`` int32 tensors that *view*
  the map: a row or a contiguous slice of rows is a view, a list of rows is one gather
  (the batch's rows only, never the whole shard), and nothing is done per row in Python.
* ``BucketBatchSampler`` draws every batch from one bucket (one ``seq_len``), so nothing needs
  re-padding; it shuffles by ``(seed, epoch)``, has a token-budget mode and splits batches across
  ``rank`` / ``world_size``.
* ``collate`` turns what ``ShardDataset.__getitems__`` returns into int64 tensors for the model;
  ``make_dataloader`` wires the three into a ``torch.utils.data.DataLoader``.
* For other samplers and collators (HuggingFace's): ``load(DIR, rows=True)`` gives a batch as a list
  of row dicts, and ``pad_collate`` re-pads rows of any lengths by position, so a plain random
  sampler works (with the padding a random batch costs).
* Packed builds (``padprep build --pack``) get ``PackedCollator`` instead: ``position_ids`` and either
  the variable-length attention kwargs of transformers' ``DataCollatorWithFlattening``
  (``cu_seq_lens_q`` / ``cu_seq_lens_k``, ``max_length_q`` / ``max_length_k``) or a 4-D
  block-diagonal causal mask, so no token attends to another sequence of its row.

The maps are private (copy-on-write): tensors from the dataset are writable, and writing into one
changes this process's copy of that page only, never the file. Maps are opened lazily, once per
process, so the dataset pickles small and works in ``DataLoader`` workers (fork or spawn).
"""

from __future__ import annotations

import copy
import mmap
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Mapping, Sequence, Union

import numpy as np
import pyarrow as pa
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from padprep.output.fetch import local_copy
from padprep.output.manifest import read_manifest

if TYPE_CHECKING:
    from padprep.train.pairs import PairDataset
from padprep.schema import COLUMNS, IGNORE_INDEX, LOSS_WEIGHTS, MANIFEST, PACKED_COLUMNS, PADDED_PAIR_COLUMNS

Batch = dict[str, torch.Tensor]
Arrays = dict[str, np.ndarray]
Index = Union[int, slice, Sequence[int], np.ndarray, torch.Tensor]


@dataclass(frozen=True)
class ShardInfo:
    """Where a shard is and what the manifest says it holds (known without opening the file)."""

    path: Path
    rows: int
    seq_len: int


# --------------------------------------------------------------------------------------------
# Mapping one shard
# --------------------------------------------------------------------------------------------


def _map_file(path: Path) -> np.ndarray:
    """The file as a writable uint8 array over a private (copy-on-write) memory map."""
    with open(path, "rb") as fh:
        kwargs = {"trackfd": False} if sys.version_info >= (3, 13) else {}  # no fd kept per shard
        mapped = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_COPY, **kwargs)
    return np.frombuffer(mapped, dtype=np.uint8)


def _column_view(raw: np.ndarray, column: pa.FixedSizeListArray) -> np.ndarray:
    """A ``(rows, seq_len)`` array over the column's values inside ``raw`` (no copy).

    Arrow read the stream from a buffer wrapping ``raw``, so the values buffer lies inside it; we
    slice ``raw`` (writable) rather than ask Arrow for numpy (read-only, which torch warns about).
    """
    seq_len = column.type.list_size
    values = column.flatten()  # honours the list array's own offset; zero-copy
    dtype = np.dtype(values.type.to_pandas_dtype())
    buf = values.buffers()[1]
    start = buf.address - raw.ctypes.data + values.offset * dtype.itemsize
    nbytes = len(values) * dtype.itemsize
    if values.null_count or not (0 <= start and start + nbytes <= raw.size):
        array = values.to_numpy(zero_copy_only=False).copy()  # not from our map: correct, copied
    else:
        array = raw[start : start + nbytes].view(dtype)
    return array.reshape(-1, seq_len)


class _MappedShard:
    """One shard's columns as arrays viewing its map, one dict per Arrow record batch (padprep writes one)."""

    def __init__(self, info: ShardInfo, columns: Sequence[str]):
        raw = _map_file(info.path)
        reader = pa.ipc.open_stream(pa.py_buffer(raw))
        self.parts: list[Arrays] = []
        for record_batch in reader:
            self.parts.append({c: _column_view(raw, record_batch.column(c)) for c in columns})
        rows = [len(next(iter(p.values()))) if p else 0 for p in self.parts]
        self.starts = np.concatenate([[0], np.cumsum(rows, dtype=np.int64)])
        _check_shape(info, self.parts, int(self.starts[-1]))

    def take(self, local: np.ndarray) -> Arrays:
        return _gather(self.starts, local, lambda k, rows: _take(self.parts[k], rows))


def _check_shape(info: ShardInfo, parts: list[Arrays], rows: int) -> None:
    """A shard that disagrees with its manifest entry would silently misindex every later row."""
    seq_lens = {t.shape[1] for p in parts for t in p.values()}
    if rows != info.rows or (seq_lens and seq_lens != {info.seq_len}):
        raise ValueError(
            f"{info.path}: holds {rows} rows of length {sorted(seq_lens)}, the manifest says {info.rows} of length {info.seq_len}"
        )


# --------------------------------------------------------------------------------------------
# Gathering rows without per-row Python work
# --------------------------------------------------------------------------------------------


def _is_run(rows: np.ndarray) -> bool:
    """Ascending consecutive indices: servable as a slice (a view)."""
    return len(rows) <= 1 or (rows[-1] - rows[0] == len(rows) - 1 and bool(np.all(np.diff(rows) == 1)))


def _take(cols: Arrays, rows: np.ndarray) -> Arrays:
    """Rows of one record batch: a view for a run, else one ``np.take`` per column.

    NumPy, not torch: its gathers are single-threaded, and torch's OpenMP ones stall ~10x on a busy
    CPU (the trainer's own threads) for batch-sized copies that threads cannot speed up anyway.
    """
    if _is_run(rows):
        lo = int(rows[0]) if len(rows) else 0
        return {c: a[lo : lo + len(rows)] for c, a in cols.items()}
    return {c: np.take(a, rows, axis=0) for c, a in cols.items()}


def _gather(starts: np.ndarray, idx: np.ndarray, take: Callable[[int, np.ndarray], Arrays]) -> Arrays:
    """Rows ``idx`` of a range partitioned at ``starts``, in ``idx`` order: one take per part touched."""
    part = np.searchsorted(starts, idx, side="right") - 1
    first = int(part[0]) if len(part) else 0
    if len(part) == 0 or bool(np.all(part == first)):
        return take(first, idx - starts[first])
    out: Arrays = {}
    for k in np.unique(part):
        pos = np.flatnonzero(part == k)
        for name, a in take(int(k), idx[pos] - starts[k]).items():
            if name not in out:
                out[name] = np.empty((len(idx), *a.shape[1:]), dtype=a.dtype)
            out[name][pos] = a
    return out


def _as_indices(index: Index, length: int) -> np.ndarray:
    """Any index form -> int64 array, negatives wrapped, bounds checked."""
    if isinstance(index, slice):
        r = range(length)[index]
        return np.arange(r.start, r.stop, r.step, dtype=np.int64)
    if isinstance(index, torch.Tensor):
        index = index.cpu().numpy()
    idx = np.asarray(index, dtype=np.int64).reshape(-1)
    if idx.size and (idx.min() < -length or idx.max() >= length):
        raise IndexError(f"row index out of range for a dataset of {length} rows")
    return np.where(idx < 0, idx + length, idx)


# --------------------------------------------------------------------------------------------
# The dataset
# --------------------------------------------------------------------------------------------


class ShardDataset(Dataset):
    """Every row of a padprep build, shard after shard, in manifest order.

    ``ds[i]`` is a dict of ``(seq_len,)`` int32 tensors; ``ds[a:b]``, ``ds[[i, j, ...]]`` and
    ``ds.get_batch(indices)`` give ``(rows, seq_len)`` tensors as long as the rows share one
    ``seq_len`` (rows of several shards of a bucket are fine). Tensors view a private map of the
    file: cheap to make, safe to write into (copy-on-write), and the file is never modified.

    ``DataLoader`` fetches a batch with ``__getitems__``: by default one dict of ``(rows, seq_len)``
    tensors (one gather; what ``collate`` takes). With ``rows=True`` (``load(DIR, rows=True)`` or
    ``ds.as_rows()``) it is a list of row dicts of int64 tensors, the shape HuggingFace collators
    and ``RemoveColumnsCollator`` expect; rows of different lengths are then allowed in one batch.
    """

    def __init__(
        self,
        shards: Sequence[ShardInfo],
        padding_side: str = "right",
        pad_id: int | None = None,
        columns: Sequence[str] = COLUMNS,
        rows: bool = False,
        packed: bool = False,
    ):
        self.shards = tuple(shards)
        self.packed = packed  # rows of whole sequences (build --pack): batch them with PackedCollator
        self.padding_side = padding_side
        self.pad_id = pad_id
        self.columns = tuple(columns)
        self.rows = rows
        self._starts = np.concatenate([[0], np.cumsum([s.rows for s in self.shards], dtype=np.int64)])
        self._seq_lens = np.array([s.seq_len for s in self.shards], dtype=np.int64)
        self._maps: dict[int, _MappedShard] = {}
        self._pid = os.getpid()

    def __len__(self) -> int:
        return int(self._starts[-1])

    def __getitem__(self, index: Index) -> Batch:
        if isinstance(index, (int, np.integer)):
            return {c: t[0] for c, t in self.get_batch([int(index)]).items()}
        return self.get_batch(index)

    def __getitems__(self, indices: Sequence[int]) -> Batch | list[Batch]:
        """What ``DataLoader`` calls with a whole batch of indices: one gather, not one call per row.

        A dict of ``(rows, seq_len)`` tensors, or with ``rows=True`` a list of row dicts.
        """
        return self.get_rows(indices) if self.rows else self.get_batch(indices)

    def as_rows(self) -> "ShardDataset":
        """The same rows (sharing this dataset's maps), fetched by ``DataLoader`` as a list of row dicts."""
        view = copy.copy(self)
        view.rows = True
        return view

    def get_rows(self, indices: Index) -> list[Batch]:
        """Rows ``indices`` as a list of dicts of ``(seq_len,)`` int64 tensors, in ``indices`` order.

        Rows may come from different buckets: one gather (and one int64 copy) per bucket touched, and
        each row is a view of its bucket's copy, so a collator may modify it freely.
        """
        idx = _as_indices(indices, len(self))
        seq_lens = self._seq_lens[self._shard_ids(idx)]
        out: list[Batch] = [{}] * len(idx)
        for seq_len in np.unique(seq_lens):
            pos = np.flatnonzero(seq_lens == seq_len)
            batch = collate(self.get_batch(idx[pos]))
            for k, p in enumerate(pos.tolist()):
                out[p] = {c: t[k] for c, t in batch.items()}
        return out

    def get_batch(self, indices: Index) -> Batch:
        """Rows ``indices`` as ``(rows, seq_len)`` tensors (all rows must share one ``seq_len``)."""
        idx = _as_indices(indices, len(self))
        if idx.size == 0:
            raise ValueError("get_batch needs at least one row index")
        shard = self._shard_ids(idx)
        if np.any(self._seq_lens[shard] != self._seq_lens[shard[0]]):
            raise ValueError(
                f"rows of different lengths {sorted(set(self._seq_lens[shard].tolist()))} cannot form one batch; "
                "use BucketBatchSampler, whose batches never mix buckets, or load(..., rows=True) with "
                "padprep.train.loader.pad_collate, which re-pads them"
            )
        rows = _gather(self._starts, idx, lambda k, local: self._mapped(k).take(local))
        return {c: torch.from_numpy(a) for c, a in rows.items()}

    def shard_of(self, i: int) -> int:
        """Position in ``self.shards`` of the shard holding row ``i``."""
        return int(self._shard_ids(_as_indices([i], len(self)))[0])

    def seq_len_of(self, i: int) -> int:
        return int(self._seq_lens[self.shard_of(i)])

    def bucket_indices(self) -> dict[int, np.ndarray]:
        """Global row indices of each bucket (``seq_len``), from the manifest alone (opens no file)."""
        out: dict[int, list[np.ndarray]] = {}
        for k, info in enumerate(self.shards):
            out.setdefault(info.seq_len, []).append(np.arange(self._starts[k], self._starts[k + 1]))
        return {seq_len: np.concatenate(parts) for seq_len, parts in sorted(out.items())}

    def _shard_ids(self, idx: np.ndarray) -> np.ndarray:
        return np.searchsorted(self._starts, idx, side="right") - 1

    def _mapped(self, k: int) -> _MappedShard:
        """Shard ``k``'s map, opened on first use in this process (a forked worker opens its own)."""
        if self._pid != os.getpid():
            self._maps, self._pid = {}, os.getpid()
        if k not in self._maps:
            self._maps[k] = _MappedShard(self.shards[k], self.columns)
        return self._maps[k]

    def __getstate__(self) -> dict:
        """Pickle without the maps: a spawned worker reopens them (and pickles stay small)."""
        state = dict(self.__dict__)
        state["_maps"] = {}
        return state

    def __repr__(self) -> str:
        return f"ShardDataset(rows={len(self)}, shards={len(self.shards)}, buckets={sorted(set(self._seq_lens.tolist()))})"


def load(path: str | os.PathLike, columns: Sequence[str] | None = None, rows: bool = False) -> "ShardDataset | PairDataset":
    """Open a padprep build directory (its ``manifest.json`` and shards) as a ``ShardDataset``
    (a preference build: a ``PairDataset``, ``train/pairs.py``).

    Args:
        path: the build's output directory, or its URL (``s3://bucket/prefix``: fetched once into the local
            read cache, ``output/fetch.py``).
        columns: the fixed-size columns to map; default ``input_ids``, ``attention_mask``, ``labels``,
            for a packed build ``position_ids``, and ``loss_weights`` (float32) where the build has them.
        rows: fetch batches as lists of row dicts (for HuggingFace collators; see ``ShardDataset``).
    """
    root = local_copy(path)  # a build at a URL (s3://...): its files fetched into the local read cache, sha256-checked
    if not (root / MANIFEST).is_file():
        raise FileNotFoundError(f"{root}: no {MANIFEST} here; is this a padprep build output?")
    manifest = read_manifest(root)
    shards = [ShardInfo(root / s.file, s.rows, s.seq_len) for s in manifest.shards if s.rows]
    if manifest.pairs and manifest.options.get("padded_pairs"):  # each side a padded row: fixed-size columns
        return ShardDataset(
            shards, padding_side=manifest.padding_side, pad_id=manifest.pad_id, columns=PADDED_PAIR_COLUMNS, rows=rows
        )
    if manifest.pairs:
        from padprep.train.pairs import PairDataset

        return PairDataset(root, manifest)
    packed = manifest.packed
    if columns is None:
        columns = (PACKED_COLUMNS if packed else COLUMNS) + ((LOSS_WEIGHTS,) if manifest.weighted else ())
    return ShardDataset(
        shards,
        padding_side=manifest.padding_side,
        pad_id=manifest.pad_id,
        columns=columns,
        rows=rows,
        packed=packed,
    )


# --------------------------------------------------------------------------------------------
# The sampler
# --------------------------------------------------------------------------------------------


def _buckets_of(source: ShardDataset | Mapping[int, Sequence[int]]) -> dict[int, np.ndarray]:
    """``{seq_len: row indices}`` in ascending ``seq_len``, from a dataset's manifest or given as is."""
    if isinstance(source, ShardDataset) or (hasattr(source, "bucket_indices") and not isinstance(source, Mapping)):
        return source.bucket_indices()
    buckets = {int(n): np.asarray(rows, dtype=np.int64) for n, rows in sorted(source.items())}
    if any(n < 1 for n in buckets):
        raise ValueError("bucket lengths must be positive")
    return buckets


def _split(rows: np.ndarray, size: int, drop_last: bool) -> list[np.ndarray]:
    batches = [rows[i : i + size] for i in range(0, len(rows), size)]
    return batches[:-1] if drop_last and batches and len(batches[-1]) < size else batches


def _count(rows: int, size: int, drop_last: bool) -> int:
    return rows // size if drop_last else -(-rows // size)


def _per_rank(batches: int, world_size: int, drop_last: bool) -> int:
    return batches // world_size if drop_last else -(-batches // world_size)


class BucketBatchSampler(Sampler[list[int]]):
    """Batches of row indices, each from one bucket, shuffled by ``(seed, epoch)``, split by rank.

    * Size: ``batch_size`` rows, or a token budget ``max_tokens`` (``max(1, max_tokens // seq_len)``
      rows, so short buckets get more rows; a row longer than the budget comes alone). With both,
      the budget is capped at ``batch_size`` rows.
    * Order: rows are shuffled within each bucket, then the batches across buckets, with a
      generator seeded by ``(seed, epoch)``: the same on every rank, different each epoch
      (call ``set_epoch``). ``shuffle=False`` gives buckets in ascending order, rows in file order.
    * Distributed: the epoch's batches are dealt round-robin to ``world_size`` ranks, so ranks get
      disjoint batches and the same number of them. When the count does not divide evenly,
      ``drop_last=True`` drops the last few batches (after shuffling: different ones each epoch);
      ``drop_last=False`` repeats batches from the start of the epoch to fill the last round, the
      only case where two ranks see the same rows. ``drop_last`` also drops each bucket's final
      partial batch.
    * Buckets: a ``ShardDataset``'s (from its manifest), or any ``{seq_len: row indices}`` mapping
      (what ``padprep.train.hf`` derives from a ``datasets.Dataset``).

    Args:
        dataset: a ``ShardDataset`` (``padprep.load``) or a ``{seq_len: row indices}`` mapping.
        batch_size: rows per batch (give this, ``max_tokens``, or both).
        max_tokens: padded tokens per batch: ``max(1, max_tokens // seq_len)`` rows of a bucket.
        shuffle: shuffle rows within buckets and batches across them (else ascending buckets, file order).
        seed: with the epoch, seeds the shuffle; the same on every rank.
        drop_last: drop each bucket's final partial batch and the batches that do not fill the last round of ranks.
        rank, world_size: this process's place among the data-parallel ranks.

    Example:
        >>> ds = padprep.load("out/sample")  # doctest: +SKIP
        >>> sampler = BucketBatchSampler(ds, max_tokens=4096, seed=0, rank=0, world_size=2)  # doctest: +SKIP
        >>> sampler.set_epoch(1)  # doctest: +SKIP
        >>> loader = DataLoader(ds, batch_sampler=sampler, collate_fn=collate)  # doctest: +SKIP
    """

    def __init__(
        self,
        dataset: ShardDataset | Mapping[int, Sequence[int]],
        batch_size: int | None = None,
        max_tokens: int | None = None,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
    ):
        if batch_size is None and max_tokens is None:
            raise ValueError("give batch_size (rows per batch) or max_tokens (tokens per batch)")
        if (batch_size is not None and batch_size < 1) or (max_tokens is not None and max_tokens < 1):
            raise ValueError("batch_size and max_tokens must be positive")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size); got rank={rank}, world_size={world_size}")
        if seed < 0:
            raise ValueError("seed must be non-negative")
        self.buckets = _buckets_of(dataset)
        self.batch_size, self.max_tokens = batch_size, max_tokens
        self.shuffle, self.seed, self.drop_last = shuffle, seed, drop_last
        self.rank, self.world_size = rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose order ``__iter__`` gives; call it on every rank before each epoch."""
        if epoch < 0:
            raise ValueError("epoch must be non-negative")
        self.epoch = epoch

    def rows_per_batch(self, seq_len: int) -> int:
        if self.max_tokens is None:
            return int(self.batch_size)
        rows = max(1, self.max_tokens // seq_len)
        return min(rows, self.batch_size) if self.batch_size is not None else rows

    def epoch_batches(self) -> list[np.ndarray]:
        """Every rank's batches of this epoch, in order, before the split by rank."""
        rng = np.random.default_rng((self.seed, self.epoch))
        batches: list[np.ndarray] = []
        for seq_len, rows in self.buckets.items():
            rows = rng.permutation(rows) if self.shuffle else rows
            batches += _split(rows, self.rows_per_batch(seq_len), self.drop_last)
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches

    def _rank_batches(self) -> list[np.ndarray]:
        batches = self.epoch_batches()
        total = _per_rank(len(batches), self.world_size, self.drop_last) * self.world_size
        batches = [batches[i % len(batches)] for i in range(total)] if batches else []
        return batches[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self._rank_batches():
            yield batch.tolist()

    def __len__(self) -> int:
        """Batches this rank gets per epoch (the same on every rank and in every epoch)."""
        batches = sum(_count(len(rows), self.rows_per_batch(n), self.drop_last) for n, rows in self.buckets.items())
        return _per_rank(batches, self.world_size, self.drop_last)


# --------------------------------------------------------------------------------------------
# Collate and DataLoader
# --------------------------------------------------------------------------------------------


def collate(batch: Mapping[str, torch.Tensor] | Sequence[Mapping[str, torch.Tensor]]) -> Batch:
    """A batch as int64 tensors (what embeddings and ``cross_entropy`` want), copied out of the maps.

    Takes what ``ShardDataset.__getitems__`` returns (already ``(rows, seq_len)``) or, from
    wrappers that fetch row by row, a list of row dicts (stacked; they must share ``seq_len``).
    The columns are slices of one ``(columns, rows, seq_len)`` allocation: one allocation per batch,
    and one shared-memory segment instead of three when a ``DataLoader`` worker sends it (~2x faster).
    """
    cols = batch if isinstance(batch, Mapping) else {n: torch.stack([row[n] for row in batch]) for n in batch[0]}
    names = [n for n in cols if not cols[n].dtype.is_floating_point]
    out = np.empty((len(names), *cols[names[0]].shape), dtype=np.int64)
    for k, name in enumerate(names):
        out[k] = cols[name].numpy()  # NumPy's copy: single-threaded, see _take
    tensor = torch.from_numpy(out)
    batch_out = {name: tensor[k] for k, name in enumerate(names)}
    for name in cols:  # loss_weights stay float32
        if name not in batch_out:
            batch_out[name] = cols[name].clone()
    return batch_out


def pad_collate(
    batch: Mapping[str, torch.Tensor] | Sequence[Mapping[str, object]],
    pad_id: int = 0,
    padding_side: str = "right",
    pad_to_multiple_of: int | None = None,
) -> Batch:
    """Rows of any lengths as one batch of int64 tensors, re-padded by position to the longest row.

    A row's real tokens are the positions where its ``attention_mask`` is 1 (all of them when it has
    no mask). Each row's real tokens go, in order, to the start (``padding_side="right"``) or the end
    (``"left"``) of the longest real length in the batch; every other position gets ``pad_id``,
    ``attention_mask`` 0 and ``labels`` -100. Padding is found by position, never by comparing ids
    with the pad id, so a row whose eos is the pad token keeps its label. Rows of a left-padded build
    come out right-padded by default. Only ``input_ids``, ``attention_mask`` and ``labels`` are
    returned (``attention_mask`` always); other keys (``length``, ``seq_len``) are not passed on.

    Bucket batches (one ``seq_len``) need no re-padding: ``collate`` is the faster choice there.
    This collator is for samplers that mix lengths, such as ``Trainer``'s random sampler.

    Args:
        batch: a list of row dicts (``ShardDataset`` with ``rows=True``, a ``datasets.Dataset``,
            lists, arrays or tensors), or one dict of ``(rows, seq_len)`` tensors.
        pad_id: the id written at padded positions (``ShardDataset.pad_id`` for the build's own).
        padding_side: ``"right"`` (training) or ``"left"`` (batched generation).
        pad_to_multiple_of: round the batch length up to a multiple of this.

    Returns:
        ``{"input_ids", "attention_mask", "labels"}``, int64 tensors of shape ``(rows, longest)``.

    Example::

        >>> from functools import partial
        >>> from torch.utils.data import DataLoader
        >>> ds = padprep.load("out/sample", rows=True)
        >>> loader = DataLoader(ds, batch_size=8, shuffle=True, collate_fn=partial(pad_collate, pad_id=ds.pad_id))
        >>> batch = next(iter(loader))   # labels -100 wherever attention_mask is 0
    """
    if padding_side not in ("right", "left"):
        raise ValueError(f"padding_side must be 'right' or 'left', got {padding_side!r}")
    if pad_id is None:
        raise ValueError("pad_collate: pad_id is None; pass the build's pad id (ShardDataset.pad_id, manifest tokenizer.pad_id)")
    cols, real = _dense_rows(batch)
    lengths = real.sum(axis=1)
    width = int(lengths.max(initial=0))
    if pad_to_multiple_of:
        width = -(-width // pad_to_multiple_of) * pad_to_multiple_of
    rows = np.repeat(np.arange(len(lengths)), lengths)
    first = (width - lengths) if padding_side == "left" else np.zeros_like(lengths)
    before = np.cumsum(lengths) - lengths  # real tokens of earlier rows, in the flat order
    pos = np.arange(int(lengths.sum())) - np.repeat(before, lengths) + np.repeat(first, lengths)
    fills = {"input_ids": pad_id, "attention_mask": 0, "labels": IGNORE_INDEX}
    out: Batch = {}
    for name in ("input_ids", "attention_mask", "labels"):
        if name not in cols and name != "attention_mask":
            continue
        dense = np.full((len(lengths), width), fills[name], dtype=np.int64)
        dense[rows, pos] = 1 if name == "attention_mask" else cols[name][real]
        out[name] = torch.from_numpy(dense)
    return out


def _dense_rows(batch: Mapping[str, torch.Tensor] | Sequence[Mapping[str, object]]) -> tuple[Arrays, np.ndarray]:
    """``input_ids`` / ``labels`` as ``(rows, longest)`` int64 arrays and which of their positions are real."""
    if isinstance(batch, Mapping):
        cols = {c: np.asarray(batch[c], dtype=np.int64) for c in ("input_ids", "attention_mask", "labels") if c in batch}
        if "input_ids" not in cols or cols["input_ids"].ndim != 2:
            raise ValueError("pad_collate: a dict batch needs (rows, seq_len) input_ids")
        real = cols.pop("attention_mask", np.ones_like(cols["input_ids"])) == 1
        return cols, real
    if not batch:
        raise ValueError("pad_collate needs at least one row")
    names = [c for c in ("input_ids", "labels") if c in batch[0]]
    if "input_ids" not in names:
        raise ValueError(f"pad_collate: rows need input_ids; got keys {sorted(batch[0])}")
    rows = [{c: np.asarray(row[c], dtype=np.int64).reshape(-1) for c in (*names, "attention_mask") if c in row} for row in batch]
    longest = max(len(r["input_ids"]) for r in rows)
    cols = {c: np.zeros((len(rows), longest), dtype=np.int64) for c in names}
    real = np.zeros((len(rows), longest), dtype=bool)
    for k, r in enumerate(rows):
        n = len(r["input_ids"])
        if any(len(a) != n for a in r.values()):
            raise ValueError(f"pad_collate: row {k} has columns of different lengths {[len(a) for a in r.values()]}")
        for c in names:
            cols[c][k, :n] = r[c]
        real[k, :n] = r["attention_mask"] == 1 if "attention_mask" in r else True
    return cols, real


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions counted over real tokens only: what a left-padded batch needs for generation."""
    return (attention_mask.long().cumsum(-1) - 1).clamp_min(0)


VARLEN, BLOCK_DIAGONAL = "varlen", "block_diagonal"


class PackedCollator:
    """Batches of packed rows (``padprep build --pack``) for padding-free training, sequences kept apart.

    A packed row holds whole sequences back to back, then a padding tail; its ``position_ids``
    restart at 0 at every sequence and at the tail. Call these the row's *segments*. The collator
    turns rows into one of two batch forms, so that no token attends to another segment:

    - ``attention="varlen"`` (default), for flash attention (``attn_implementation="flash_attention_2"``
      and the like): the batch is flattened into one row, the form and names of transformers'
      ``DataCollatorWithFlattening(return_flash_attn_kwargs=True)``, padding tails kept as segments
      of their own (shapes stay ``rows * seq_len``, ≤ 1% of tokens on the shared data):

      - ``input_ids``, ``labels``, ``position_ids``: int64 ``(1, rows * seq_len)``;
      - ``cu_seq_lens_q``, ``cu_seq_lens_k``: int32 ``(segments + 1,)``, cumulative segment lengths
        over the flattened batch (``0, ..., rows * seq_len``);
      - ``max_length_q``, ``max_length_k``: int, the longest segment.

      There is no ``attention_mask``: given a 2-D mask, flash attention unpads by it and ignores
      ``cu_seq_lens``, letting sequences of one row attend to each other.

    - ``attention="block_diagonal"``, for SDPA or eager attention on any device: ``input_ids``,
      ``labels``, ``position_ids`` int64 ``(rows, seq_len)`` and ``attention_mask`` of shape
      ``(rows, 1, seq_len, seq_len)``, where query ``q`` may attend to key ``k`` iff both lie in one
      segment and ``k <= q``. With a floating ``mask_dtype`` (default float32) it is additive: 0
      where attended, the dtype's minimum elsewhere (eager and SDPA; use the model's dtype, e.g.
      ``torch.bfloat16``). With ``torch.bool`` it is True where attended: 4x smaller, SDPA only
      (eager attention *adds* the mask, so a bool one would not mask anything).

    Labels are never shifted here (the model or the loss shifts); every sequence's first label is
    -100 in the shards, so no position is trained to predict across a boundary.

    Args:
        attention: ``"varlen"`` or ``"block_diagonal"``.
        mask_dtype: dtype of the block-diagonal mask (``torch.bool`` or a floating dtype).

    Example:
        >>> from padprep.train.loader import PackedCollator, make_dataloader
        >>> loader = make_dataloader("out/packed", batch_size=8)  # a packed build: PackedCollator("varlen")
        >>> batch = next(iter(loader))
        >>> sorted(batch)
        ['cu_seq_lens_k', 'cu_seq_lens_q', 'input_ids', 'labels', 'max_length_k', 'max_length_q', 'position_ids']
        >>> loss = model(**batch).loss  # model loaded with attn_implementation="flash_attention_2"
    """

    def __init__(self, attention: str = VARLEN, mask_dtype: torch.dtype = torch.float32):
        if attention not in (VARLEN, BLOCK_DIAGONAL):
            raise ValueError(
                f"attention must be {VARLEN!r} (flash attention) or {BLOCK_DIAGONAL!r} (SDPA / eager); got {attention!r}"
            )
        if not (mask_dtype == torch.bool or mask_dtype.is_floating_point):
            raise ValueError(f"mask_dtype must be torch.bool or a floating dtype; got {mask_dtype}")
        self.attention, self.mask_dtype = attention, mask_dtype

    def __call__(self, batch: Mapping[str, torch.Tensor] | Sequence[Mapping[str, torch.Tensor]]) -> Batch:
        cols = collate(batch)
        if "position_ids" not in cols:
            raise ValueError("PackedCollator needs position_ids: load a packed build (padprep build --pack) with padprep.load")
        ids, labels, positions = cols["input_ids"], cols["labels"], cols["position_ids"]
        if self.attention == BLOCK_DIAGONAL:
            return {
                "input_ids": ids,
                "labels": labels,
                "position_ids": positions,
                "attention_mask": block_diagonal_mask(positions, self.mask_dtype),
            }
        cu_seq_lens = cu_seq_lens_from_position_ids(positions)
        longest = int(cu_seq_lens.diff().max()) if len(cu_seq_lens) > 1 else 0
        return {
            "input_ids": ids.reshape(1, -1),
            "labels": labels.reshape(1, -1),
            "position_ids": positions.reshape(1, -1),
            "cu_seq_lens_q": cu_seq_lens,
            "cu_seq_lens_k": cu_seq_lens,
            "max_length_q": longest,
            "max_length_k": longest,
        }


def cu_seq_lens_from_position_ids(position_ids: torch.Tensor) -> torch.Tensor:
    """Cumulative segment lengths (int32) over the flattened ``position_ids``, segments starting where they are 0.

    Example:
        >>> cu_seq_lens_from_position_ids(torch.tensor([[0, 1, 2, 0, 1, 0], [0, 1, 2, 3, 0, 1]])).tolist()
        [0, 3, 5, 6, 10, 12]
    """
    flat = position_ids.reshape(-1)
    starts = torch.nonzero(flat == 0).reshape(-1)
    return torch.cat([starts, torch.tensor([flat.numel()])]).to(torch.int32)


def block_diagonal_mask(position_ids: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A ``(rows, 1, seq_len, seq_len)`` causal mask that keeps each segment (``position_ids`` restarting at 0) to itself.

    Args:
        position_ids: ``(rows, seq_len)``, 0 at the start of every segment.
        dtype: ``torch.bool`` (True where attended) or a floating dtype (additive: 0 where attended,
            the dtype's minimum elsewhere).

    Example:
        >>> block_diagonal_mask(torch.tensor([[0, 1, 0]]), torch.bool)[0, 0].int().tolist()
        [[1, 0, 0], [1, 1, 0], [0, 0, 1]]
    """
    segment = (position_ids == 0).cumsum(dim=-1)
    seq_len = position_ids.shape[-1]
    causal = torch.ones(seq_len, seq_len, dtype=torch.bool).tril()
    allowed = (segment[:, :, None] == segment[:, None, :]) & causal
    allowed = allowed[:, None]
    if dtype == torch.bool:
        return allowed
    return torch.zeros(allowed.shape, dtype=dtype).masked_fill_(~allowed, torch.finfo(dtype).min)


def make_dataloader(
    data: str | os.PathLike | ShardDataset,
    batch_size: int | None = None,
    max_tokens: int | None = None,
    shuffle: bool = True,
    seed: int = 0,
    drop_last: bool = False,
    rank: int = 0,
    world_size: int = 1,
    num_workers: int = 0,
    attention: str | None = None,
    mask_dtype: torch.dtype = torch.float32,
    **loader_options,
) -> DataLoader:
    """A ``DataLoader`` over a build with a ``BucketBatchSampler`` and ``collate`` (``PackedCollator`` for a packed build).

    Call ``loader.batch_sampler.set_epoch(epoch)`` before each epoch (the sampler runs in this
    process, so this works with ``persistent_workers`` too).

    Args:
        data: a build directory or a ``ShardDataset``.
        batch_size, max_tokens: rows per batch, or a token budget (see ``BucketBatchSampler``).
        shuffle, seed, drop_last, rank, world_size: see ``BucketBatchSampler``.
        num_workers: ``DataLoader`` worker processes (0 is usually fastest here).
        attention: packed builds only: ``"varlen"`` (default; ``cu_seq_lens_*`` for flash attention)
            or ``"block_diagonal"`` (a 4-D mask for SDPA / eager); see ``PackedCollator``.
        mask_dtype: packed builds with ``attention="block_diagonal"``: the mask's dtype.
        **loader_options: passed to ``torch.utils.data.DataLoader``.

    Example:
        >>> loader = make_dataloader("out/sample", max_tokens=512, seed=0)
        >>> for epoch in range(3):
        ...     loader.batch_sampler.set_epoch(epoch)
        ...     for batch in loader: ...
    """
    dataset = data if isinstance(data, ShardDataset) else load(data)
    if dataset.packed:
        collate_fn = PackedCollator(attention or VARLEN, mask_dtype)
    elif attention is not None:
        raise ValueError(
            f"attention={attention!r} is for packed builds (padprep build --pack); this build is bucketed: "
            "its batches carry a 2-D attention_mask already"
        )
    else:
        collate_fn = collate
    sampler = BucketBatchSampler(
        dataset, batch_size, max_tokens, shuffle=shuffle, seed=seed, drop_last=drop_last, rank=rank, world_size=world_size
    )
    return DataLoader(dataset, batch_sampler=sampler, num_workers=num_workers, collate_fn=collate_fn, **loader_options)
