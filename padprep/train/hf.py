"""padprep builds in HuggingFace's trainers: ``to_dataset`` and ``BucketBatchesMixin``.

* ``to_dataset(DIR)``: every shard of a build as one ``datasets.Dataset`` with variable-length int32
  list columns (what ``SFTTrainer`` requires and ``datasets`` can concatenate across buckets).
  Nothing is written anywhere, least of all into the build directory: the table lives in memory,
  its token buffers are the shard files' memory maps (no copy), and ``map`` on it does not cache
  to disk unless told where.
* ``BucketBatchesMixin``: mixed into ``transformers.Trainer`` or ``trl.SFTTrainer``, the train
  dataloader draws each batch from one bucket with ``BucketBatchSampler``, sized, seeded and split
  across ranks from the trainer's arguments.

``transformers``, ``datasets`` and ``trl`` are not padprep dependencies: they are imported here, when
used, and a missing one is named in the error.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import os
from collections.abc import Mapping
from functools import partial
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from torch.utils.data import DataLoader

from padprep.layout.shards import int32_array, int32_values
from padprep.schema import COLUMNS, PAIR_COLUMNS
from padprep.train.loader import BucketBatchSampler, ShardDataset, ShardInfo, collate, load, pad_collate
from padprep.train.pairs import PairDataset

if TYPE_CHECKING:  # optional dependencies: imported when used
    import datasets

# The columns ``to_dataset`` gives: the build's three, each row's real tokens, and its bucket.
LENGTH, SEQ_LEN = "length", "seq_len"
SCHEMA = pa.schema(
    [pa.field(c, pa.list_(pa.int32()), nullable=False) for c in COLUMNS]
    + [pa.field(LENGTH, pa.int32(), nullable=False), pa.field(SEQ_LEN, pa.int32(), nullable=False)]
)


def _require(module: str, purpose: str) -> Any:
    """Import an optional dependency, or fail naming it and how to get it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(f"padprep.train.hf: {purpose} needs `{module}`, which is not installed (pip install {module})") from exc


def _where(dataset: ShardDataset) -> str:
    """The build directory a ``ShardDataset`` reads, for error messages."""
    return str(dataset.shards[0].path.parent) if dataset.shards else "the build"


# --------------------------------------------------------------------------------------------
# A build as one datasets.Dataset
# --------------------------------------------------------------------------------------------


def to_dataset(source: str | os.PathLike | ShardDataset, padded: bool = True) -> "datasets.Dataset":
    """Every row of a padprep build as one ``datasets.Dataset``, without writing a file.

    Columns: ``input_ids``, ``attention_mask``, ``labels`` (variable-length int32 lists), ``length``
    (the row's real tokens) and ``seq_len`` (its bucket: its padded length in the build). Rows are in
    manifest order, shard after shard, as in ``padprep.load``: row ``i`` here is row ``i`` there.

    With ``padded=True`` each row keeps its bucket's padding and the token lists are the shard
    files' memory maps (no copy; private to this process). ``padded=False`` gives each row's real
    tokens only, for padding-free trainers and collators that pad (``DataCollatorForSeq2Seq``,
    ``pad_collate``, TRL's): those tokens are copied into memory.

    Nothing is written into the build directory, or anywhere: ``Dataset.map``, ``cast`` or
    ``shuffle`` on the result keep their output in memory (or where you point ``cache_file_name``),
    unlike ``Dataset.from_file`` on the shards, which caches into the directory it read.

    A ``--padding-side left`` build is refused with ``padded=True``: its rows start with padding,
    which trainers that ignore ``attention_mask`` (TRL's ``SFTTrainer``) would attend to; its rows
    with ``padded=False`` are exact.

    Args:
        source: a build directory, or a ``ShardDataset`` from ``padprep.load``.
        padded: keep each row's padding (default) or only its real tokens.

    Returns:
        A ``datasets.Dataset`` of ``len(padprep.load(source))`` rows.

    Example::

        >>> from padprep.train.hf import to_dataset
        >>> ds = to_dataset("out/sample")
        >>> ds.column_names
        ['input_ids', 'attention_mask', 'labels', 'length', 'seq_len']
        >>> unpadded = to_dataset("out/sample", padded=False)   # for padding_free=True
    """
    datasets = _require("datasets", "to_dataset")
    build = source if isinstance(source, (ShardDataset, PairDataset)) else load(source)
    if isinstance(build, PairDataset):  # TRL's preference columns, and each pair's bucket
        return datasets.Dataset(datasets.table.InMemoryTable(build.table()), fingerprint=_pair_fingerprint(build))
    if padded and build.padding_side == "left":
        raise ValueError(
            f"{_where(build)}: built with --padding-side left, so rows start with padding, which trainers that "
            "ignore attention_mask attend to; use to_dataset(..., padded=False) or rebuild with --padding-side right"
        )
    tables = [_shard_table(info, padded) for info in build.shards]
    table = pa.concat_tables(tables) if tables else SCHEMA.empty_table()
    return datasets.Dataset(datasets.table.InMemoryTable(table), fingerprint=_fingerprint(build, padded))


def _shard_table(info: ShardInfo, padded: bool) -> pa.Table:
    """One shard as a table of ``SCHEMA``: list columns over the file's map (padded) or over a copy of the real tokens."""
    with pa.memory_map(str(info.path), "r") as source:  # buffers keep the map alive after close
        table = pa.ipc.open_stream(source).read_all()
    if table.num_rows != info.rows or any(table.schema.field(c).type.list_size != info.seq_len for c in COLUMNS):
        raise ValueError(
            f"{info.path}: holds {table.num_rows} rows of {table.schema.field(COLUMNS[0]).type}, "
            f"the manifest says {info.rows} of length {info.seq_len}; rebuild it or check it with padprep inspect --verify"
        )
    if info.rows * info.seq_len >= 2**31:
        raise ValueError(
            f"{info.path}: {info.rows} x {info.seq_len} tokens overflow 32-bit list offsets; rebuild with a smaller --shard-tokens"
        )
    return pa.Table.from_batches([_list_batch(b, info.seq_len, padded) for b in table.to_batches()], schema=SCHEMA)


def _list_batch(batch: pa.RecordBatch, seq_len: int, padded: bool) -> pa.RecordBatch:
    """``fixed_size_list`` columns of one record batch as ``list`` columns, plus ``length`` and ``seq_len``."""
    rows = batch.num_rows
    real = int32_values(batch.column("attention_mask").flatten()).reshape(rows, seq_len) == 1
    lengths = real.sum(axis=1).astype(np.int32)
    if padded:
        offsets = int32_array(np.arange(0, (rows + 1) * seq_len, seq_len, dtype=np.int32))
        lists = [pa.ListArray.from_arrays(offsets, batch.column(c).flatten()) for c in COLUMNS]
    else:
        offsets = int32_array(np.concatenate([[0], np.cumsum(lengths)]))
        lists = [
            pa.ListArray.from_arrays(offsets, int32_array(int32_values(batch.column(c).flatten()).reshape(rows, seq_len)[real]))
            for c in COLUMNS
        ]
    extra = [int32_array(lengths), int32_array(np.full(rows, seq_len, dtype=np.int32))]
    return pa.RecordBatch.from_arrays(lists + extra, schema=SCHEMA)


def _pair_fingerprint(build: PairDataset) -> str:
    h = hashlib.sha256(b"padprep.hf.to_dataset pairs")
    for s in build.shards:
        path = build.root / s.file
        stat = path.stat()
        h.update(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}:{s.rows}:{s.sha256}".encode())
    return h.hexdigest()[:32]


def _fingerprint(build: ShardDataset, padded: bool) -> str:
    """A ``datasets`` fingerprint from the shard files' identity (hashing the table would read every byte)."""
    # the name padprep 0.1.0 hashed: the module moved, the fingerprints of the same shards did not
    h = hashlib.sha256(f"padprep.hf.to_dataset padded={padded}".encode())
    for info in build.shards:
        stat = info.path.stat()
        h.update(f"{info.path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}:{info.rows}:{info.seq_len}".encode())
    return h.hexdigest()[:32]


# --------------------------------------------------------------------------------------------
# Buckets and checks of any dataset a trainer may hold
# --------------------------------------------------------------------------------------------


def bucket_indices(dataset: ShardDataset | "datasets.Dataset") -> dict[int, np.ndarray]:
    """Row indices of each bucket: ``{seq_len: rows}``, what ``BucketBatchSampler`` draws batches from.

    A ``ShardDataset``'s come from its manifest. A ``datasets.Dataset``'s come from its ``seq_len``
    column (``to_dataset`` writes it; selecting or shuffling rows keeps it right), or else from the
    length of each row's ``input_ids`` (padded rows: their bucket).

    Args:
        dataset: ``padprep.load(DIR)`` or a ``datasets.Dataset`` (``to_dataset(DIR)``).

    Example::

        >>> buckets = bucket_indices(to_dataset("out/sample"))
        >>> sampler = BucketBatchSampler(buckets, batch_size=8, seed=0)
    """
    if isinstance(dataset, ShardDataset):
        return dataset.bucket_indices()
    keys = _bucket_keys(dataset)
    return {int(k): np.flatnonzero(keys == k) for k in np.unique(keys)}


def _bucket_keys(dataset: "datasets.Dataset") -> np.ndarray:
    if SEQ_LEN in dataset.column_names:
        return np.asarray(dataset.select_columns([SEQ_LEN]).with_format("numpy")[:][SEQ_LEN], dtype=np.int64)
    ids = dataset.select_columns(["input_ids"]).with_format("arrow")[:]["input_ids"]
    return np.asarray(pc.list_value_length(ids).to_numpy(zero_copy_only=False), dtype=np.int64)


def _longest(dataset: ShardDataset | "datasets.Dataset") -> int:
    """The most real tokens in a row."""
    if isinstance(dataset, ShardDataset):
        return max((s.seq_len for s in dataset.shards), default=0)
    if LENGTH in dataset.column_names:
        lengths = dataset.select_columns([LENGTH]).with_format("numpy")[:][LENGTH]
        return int(np.max(lengths, initial=0))
    return int(_bucket_keys(dataset).max(initial=0))


def refuse_left_padding(dataset: ShardDataset | "datasets.Dataset") -> None:
    """Raise if rows start with padding (a ``--padding-side left`` build): trainers are given right padding or none.

    TRL's ``SFTTrainer`` (its collator) ignores ``attention_mask``, so leading padding would be
    attended to and change the loss, and models that number positions from the start of the row
    shift every position. Right padding is exact for both.

    Args:
        dataset: ``padprep.load(DIR)`` (its manifest's ``padding_side``) or a ``datasets.Dataset``
            (its ``attention_mask`` column: one value per row is read).

    Example::

        >>> refuse_left_padding(padprep.load("out/left"))
        ValueError: out/left: built with --padding-side left (for batched generation); train on ...

    """
    if isinstance(dataset, ShardDataset):
        if dataset.padding_side == "left":
            raise ValueError(
                f"{_where(dataset)}: built with --padding-side left (for batched generation); train on a "
                "--padding-side right build, or on padprep.train.hf.to_dataset(DIR, padded=False)"
            )
        return
    if "attention_mask" in dataset.column_names and _starts_with_padding(dataset.data.column("attention_mask")):
        raise ValueError(
            "train_dataset: some rows start with padding (attention_mask 0 at position 0: a --padding-side left "
            "build); train on a --padding-side right build, or on padprep.train.hf.to_dataset(DIR, padded=False)"
        )


def _starts_with_padding(column: pa.ChunkedArray) -> bool:
    """Whether any non-empty row's first ``attention_mask`` value is 0 (reads one value per row)."""
    for chunk in column.chunks:
        if isinstance(chunk, pa.FixedSizeListArray):
            size = chunk.type.list_size
            values = chunk.flatten().to_numpy(zero_copy_only=False)
            firsts = values[::size] if size else values[:0]
        else:
            offsets = chunk.offsets.to_numpy(zero_copy_only=False)
            starts = offsets[:-1][np.diff(offsets) > 0]
            firsts = chunk.values.to_numpy(zero_copy_only=False)[starts]
        if np.any(firsts == 0):
            return True
    return False


# --------------------------------------------------------------------------------------------
# The trainer mixin
# --------------------------------------------------------------------------------------------


class BucketBatchesMixin:
    """Gives a HuggingFace trainer padprep's batches: each from one bucket, seeded, split across ranks.

    Mix it in first: ``class T(BucketBatchesMixin, transformers.Trainer)`` or
    ``class T(BucketBatchesMixin, trl.SFTTrainer)``. Its ``get_train_dataloader`` replaces the
    trainer's random (or length-grouped) sampler with ``BucketBatchSampler``, configured from the
    trainer's arguments:

    * batch size: ``per_device_train_batch_size`` rows, or a token budget ``max_tokens=N`` given to
      the trainer's constructor (``T(..., max_tokens=8192)``): ``max(1, N // seq_len)`` rows per batch,
      so short buckets get more rows; ``per_device_train_batch_size`` is then not used;
    * order: ``data_seed`` (else ``seed``) and the epoch, which ``Trainer`` sets each epoch
      (``train_sampling_strategy="sequential"``: buckets in order, rows in file order);
    * ranks: ``process_index`` / ``world_size``: every rank gets its own batches and the same number
      of them; accelerate's sharding wrapper is made a pass-through so it does not split them again;
    * ``dataloader_drop_last``, ``dataloader_num_workers`` and the other ``dataloader_*`` options.

    ``train_dataset`` may be ``padprep.load(DIR)`` or ``padprep.train.hf.to_dataset(DIR)`` (any
    ``datasets.Dataset`` works: grouped by its ``seq_len`` column, else by row length). TRL's trainers
    accept only ``datasets.Dataset``: a ``padprep.load(DIR)`` given to them becomes
    ``to_dataset`` of the same build. Collators: ``transformers.default_data_collator`` (``Trainer``'s
    default) is replaced by padprep's ``collate`` (a ``ShardDataset``: one gather per batch) or
    ``pad_collate`` (a ``datasets.Dataset``); any other collator gets rows, as it expects.

    Refused: a ``--padding-side left`` build (see ``refuse_left_padding``); with TRL, an
    ``SFTConfig.max_length`` shorter than the longest row when TRL prepares the dataset (it would
    truncate; set ``max_length=None`` or ``dataset_kwargs={"skip_prepare_dataset": True}``);
    accelerate's ``dispatch_batches`` / ``split_batches`` (they would re-split padprep's batches).

    Args:
        max_tokens: token budget per batch (rows x seq_len), instead of ``per_device_train_batch_size``.
        *args, **kwargs: the trainer's own.

    Example::

        >>> from transformers import Trainer, TrainingArguments
        >>> from padprep.train.hf import BucketBatchesMixin
        >>> class BucketTrainer(BucketBatchesMixin, Trainer):
        ...     pass
        >>> trainer = BucketTrainer(model=model, args=TrainingArguments("out/run", per_device_train_batch_size=16),
        ...                         train_dataset=padprep.load("out/sample"))
        >>> trainer.train()
    """

    def __init__(self, *args: Any, max_tokens: int | None = None, **kwargs: Any):
        if max_tokens is not None and max_tokens < 1:
            raise ValueError(f"max_tokens must be a positive number of tokens per batch, got {max_tokens}")
        self.bucket_max_tokens = max_tokens
        bound = inspect.signature(super().__init__).bind_partial(*args, **kwargs)
        dataset = bound.arguments.get("train_dataset")
        if isinstance(dataset, (ShardDataset, PairDataset)) and _is_trl(type(self)):
            bound.arguments["train_dataset"] = dataset = to_dataset(dataset)
        super().__init__(*bound.args, **bound.kwargs)
        if dataset is not None and _is_trl(type(self)):
            _refuse_trl_truncation(self.args, dataset)

    def get_train_dataloader(self) -> DataLoader:
        """The train ``DataLoader``: batches from ``BucketBatchSampler``, prepared by accelerate without re-sharding."""
        if self.train_dataset is None:
            raise ValueError("Trainer: training requires a train_dataset.")
        refuse_left_padding(self.train_dataset)
        sampler = self._bucket_sampler(self.train_dataset)
        dataset, collate_fn = self._bucket_dataset_and_collator(self.train_dataset)
        loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=collate_fn, **_loader_options(self.args))
        return _prepare_unsharded(self.accelerator, loader, sampler)

    def _bucket_sampler(self, dataset: ShardDataset | "datasets.Dataset") -> BucketBatchSampler:
        args = self.args
        return BucketBatchSampler(
            bucket_indices(dataset),
            batch_size=None if self.bucket_max_tokens else self._train_batch_size,
            max_tokens=self.bucket_max_tokens,
            shuffle=getattr(args, "train_sampling_strategy", "random") != "sequential",
            seed=args.data_seed if args.data_seed is not None else args.seed,
            drop_last=args.dataloader_drop_last,
            rank=args.process_index,
            world_size=args.world_size,
        )

    def _bucket_dataset_and_collator(self, dataset: Any) -> tuple[Any, Callable]:
        """What the ``DataLoader`` reads and how it collates: the fast dict path where the collator takes it, rows otherwise."""
        collator = self.data_collator
        default = _require("transformers", "BucketBatchesMixin").default_data_collator
        if isinstance(dataset, ShardDataset):
            if collator is None or collator is default:
                return dataset, collate
            if _takes_dict_batches(collator):
                return dataset, collator
            return dataset.as_rows(), self._get_collator_with_removed_columns(collator, description="training")
        datasets = _require("datasets", "BucketBatchesMixin with a datasets.Dataset")
        if not isinstance(dataset, datasets.Dataset):
            raise TypeError(
                f"BucketBatchesMixin: train_dataset is a {type(dataset).__name__}; give padprep.load(DIR) "
                "or padprep.train.hf.to_dataset(DIR) (a datasets.Dataset)"
            )
        dataset = self._remove_unused_columns(dataset, description="training")
        if collator is None or collator is default:
            pad_id = getattr(self.processing_class, "pad_token_id", None)
            collator = partial(pad_collate, pad_id=pad_id if pad_id is not None else 0)
        return dataset, collator


class PreferenceMixin(BucketBatchesMixin):
    """Makes ``trl.DPOTrainer`` train on a padprep preference build as it is: no re-tokenizing, no prompt
    extraction, no eos added; batches from ``BucketBatchSampler`` (pairs of similar lengths), as
    ``BucketBatchesMixin`` gives them, with every option of it (``max_tokens=N``, seeds, ranks).

    Mix it in first: ``class T(PreferenceMixin, trl.DPOTrainer)``. ``train_dataset`` (and
    ``eval_dataset``) may be ``padprep.load(DIR)`` or ``to_dataset(DIR)``; any dataset that already
    holds ``prompt_ids`` / ``chosen_ids`` / ``rejected_ids`` is passed through, any other is prepared
    by TRL as usual. ``precompute_ref_log_probs=True`` works (TRL adds its columns to the dataset).
    A ``DPOConfig.max_length`` shorter than the longest pair is refused (TRL's collator would cut
    completions); set ``max_length=None``.

    Example::

        >>> from trl import DPOConfig, DPOTrainer
        >>> from padprep.train.hf import PreferenceMixin
        >>> class Trainer(PreferenceMixin, DPOTrainer):
        ...     pass
        >>> trainer = Trainer(model=model, args=DPOConfig("out/dpo-run", max_length=None),
        ...                   train_dataset=padprep.load("out/dpo"), processing_class=tokenizer)
        >>> trainer.train()
    """

    def __init__(self, *args: Any, **kwargs: Any):
        bound = inspect.signature(super().__init__).bind_partial(*args, **kwargs)
        held_out = bound.arguments.get("eval_dataset")
        if isinstance(held_out, PairDataset):
            bound.arguments["eval_dataset"] = to_dataset(held_out)
        super().__init__(*bound.args, **bound.kwargs)

    def _prepare_dataset(self, dataset: Any, processing_class: Any, args: Any, dataset_name: str) -> Any:
        if _is_pairs(dataset):
            return dataset  # padprep's pairs: exact already
        return super()._prepare_dataset(dataset, processing_class, args, dataset_name)


def _is_trl(cls: type) -> bool:
    """Whether a trainer class derives from one of TRL's (which accept only ``datasets.Dataset``)."""
    return any(c.__module__.split(".")[0] == "trl" for c in cls.__mro__)


def _takes_dict_batches(collator: Callable) -> bool:
    """padprep's own collators take ``ShardDataset``'s one-dict batches (and rows)."""
    return getattr(collator, "func", collator) in (collate, pad_collate)


def _refuse_trl_truncation(args: Any, dataset: ShardDataset | "datasets.Dataset") -> None:
    """TRL prepares the dataset with ``max_length`` (default 1024) and truncates longer rows: their trained tokens would be lost."""
    kwargs = args.dataset_kwargs if isinstance(getattr(args, "dataset_kwargs", None), Mapping) else {}
    max_length = getattr(args, "max_length", None)
    pairs = _is_pairs(dataset)
    if max_length is None or (kwargs.get("skip_prepare_dataset") and not pairs) or getattr(args, "packing", False):
        return
    longest = _longest(dataset)
    if longest > max_length:
        if pairs:  # DPO's collator cuts every sequence past max_length: completions would lose tokens
            raise ValueError(
                f"{type(args).__name__}(max_length={max_length}) would truncate pairs of up to {longest} tokens "
                "(prompt + longer side); padprep pairs are already bounded by --max-length: set max_length=None"
            )
        raise ValueError(
            f"SFTConfig(max_length={max_length}) truncated train_dataset rows of up to {longest} tokens; "
            "padprep rows are already bounded by --max-length: set max_length=None or "
            "dataset_kwargs={'skip_prepare_dataset': True}"
        )


def _is_pairs(dataset: Any) -> bool:
    columns = getattr(dataset, "column_names", None) or []
    return isinstance(dataset, PairDataset) or all(c in columns for c in PAIR_COLUMNS)


def _loader_options(args: Any) -> dict[str, Any]:
    """The ``dataloader_*`` training arguments, as ``Trainer`` passes them to its own ``DataLoader``."""
    seed_worker = _require("transformers.trainer_utils", "BucketBatchesMixin").seed_worker
    options = {
        "num_workers": args.dataloader_num_workers,
        "pin_memory": args.dataloader_pin_memory,
        "persistent_workers": args.dataloader_persistent_workers,
        "prefetch_factor": args.dataloader_prefetch_factor,
        "worker_init_fn": partial(seed_worker, num_workers=args.dataloader_num_workers, rank=args.process_index),
    }
    for name, arg in (("multiprocessing_context", "dataloader_multiprocessing_context"), ("in_order", "dataloader_in_order")):
        if hasattr(args, arg):
            options[name] = getattr(args, arg)
    return options


def _prepare_unsharded(accelerator: Any, loader: DataLoader, sampler: BucketBatchSampler) -> DataLoader:
    """``accelerator.prepare(loader)`` (device placement, gradient state) without accelerate re-splitting the batches.

    Under DDP accelerate wraps the batch sampler in a ``BatchSamplerShard`` that deals its batches to
    ranks, and holds back batches shorter than ``batch_size`` (each bucket's last). padprep's sampler
    already gave this rank its batches, so the wrapper is made a pass-through (as ``Trainer`` does for
    its own rank-aware sampler) and the result is checked batch for batch.
    """
    config = getattr(accelerator, "dataloader_config", None)
    for option in ("dispatch_batches", "split_batches"):
        if getattr(config, option, None):
            raise ValueError(
                f"BucketBatchesMixin: accelerate's {option}=True would split padprep's batches again; "
                f"set TrainingArguments(accelerator_config={{'{option}': False}})"
            )
    prepared = accelerator.prepare(loader)
    wrapper = getattr(prepared, "batch_sampler", None)
    if wrapper is not sampler and getattr(wrapper, "batch_sampler", None) is sampler:
        wrapper.num_processes, wrapper.process_index = 1, 0
        wrapper.batch_size = None  # let every batch through, whatever its size
        wrapper.set_epoch = sampler.set_epoch  # reached by Trainer and by accelerate's set_epoch alike
    unchanged = wrapper is sampler or (wrapper is not None and [list(b) for b in wrapper] == [list(b) for b in sampler])
    if not unchanged or len(prepared) != len(sampler):
        raise RuntimeError(
            f"BucketBatchesMixin: accelerate's prepared dataloader ({type(prepared).__name__}) does not draw padprep's "
            "batches unchanged; this accelerate version is not supported (please report it)"
        )
    return prepared
