"""``padprep build``: read -> normalize -> render -> tokenize -> mask -> bucket -> pad -> write.

Two passes keep memory bounded by chunk and shard size, never by the input:

* pass 1 plans chunks, maps ``Processor.process`` over them on an engine (``engine.py``: this
  machine's processes, as ``parallel.py`` plans them, or Ray, ``ray_engine.py``) and collects the
  results in input order: it appends unpadded rows to a spill file and their lengths to a histogram,
  and writes every reject as it comes (``rejects.py``);
* between passes the bucket bounds are chosen from the histogram;
* pass 2 streams the spill file, routes rows to buckets and pads and writes a shard each time a
  bucket fills one.

With ``--pack`` the lengths of pass 1 (one int per row) go to best-fit decreasing placement
(``pack.py``) instead of bucket bounds; pass 2 routes each row to the file of the shard its row of
``--max-length`` tokens lies in, then puts each shard's rows in placement order, packs, pads and
writes it. The manifest (``manifest.py``) is written last.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa

from . import __version__
from .buildkey import build_key, input_digests, up_to_date
from .bucket import assign, explicit_bounds, optimal_bounds, padding_of
from .config import BuildConfig, EngineName, Reasoning, SpanMethod
from .engine import Engine, LocalEngine, RecordStream
from .errors import EXIT_HAZARD, EXIT_USAGE, BuildFailed
from .formats import FileFormat, FormatOptions, needs_chat_template, with_formats
from .manifest import FORMAT, PACKED_FORMAT, Manifest, ShardEntry, write_manifest
from .mask import IGNORE_INDEX
from .pack import Placement, best_fit_decreasing
from .padproc import PadProcess
from .parallel import plan_workers
from .preflight import (
    Hazard, byte_offsets_agree, fast_spans_agree, sample_conversations, stats_hazards, tokenizer_hazards, unrendered_field_hazards,
)
from .process import ChunkResult, ChunkStats, PackedResult, PackedRows, ProcessOptions, Processor
from .progress import Progress
from .read import STDIN, RawRecord, expand_inputs, read_records
from .rejects import (  # noqa: F401  (TooManyRejects, EmptyOutput, MIN_RECORDS_FOR_RATE: re-exported)
    MIN_RECORDS_FOR_RATE, Counts, EmptyOutput, RejectLog, RejectsKept, TooManyRejects, check_limits, check_not_empty,
    failed_rejects_path, keep_rejects,
)
from .templates import TemplateError, resolve_template
from .tokenizer import TokenizerBundle, load_tokenizer
from .write import (
    LOSS_WEIGHTS, REJECTS, AtomicDir, float32_array, float32_values, int32_array, int32_values, write_shard,
)

SPILL = "spill.arrow"
# Loss weights are null for a chunk whose rows carry none (the usual case: nothing is written for them).
_SPILL_SCHEMA = pa.schema([
    ("input_ids", pa.list_(pa.int32())), ("labels", pa.list_(pa.int32())), (LOSS_WEIGHTS, pa.list_(pa.float32())),
])


@dataclass
class BuildResult:
    output: Path
    manifest: Manifest
    hazards: list[Hazard] = field(default_factory=list)
    up_to_date: bool = False  # nothing was built: the output already held this build (same build key)


def build(cfg: BuildConfig, progress: Progress | None = None, pad: PadProcess | None = None) -> BuildResult:
    """Build ``cfg.output`` from ``cfg.inputs``: the whole of ``padprep build``, without the CLI.

    Nothing is rebuilt when the output already holds this build (same build key; ``cfg.force``
    rebuilds). The output directory appears whole or not at all: a failure leaves nothing that
    looks complete (rejects of a failed run are kept beside it, see ``rejects.py``).

    Args:
        cfg: every option of the build (``config.BuildConfig``; the CLI's flags map onto it one to one).
        progress: where log lines and progress go (default: nowhere).
        pad: where pass 2 runs (``padproc.PadProcess``), entered by the caller; default: one forked here
            (the CLI forks it before it imports this module, so that torch loads sooner).

    Returns:
        The output path, its manifest, the preflight and whole-run hazards, and whether it was up to date.

    Raises:
        PadprepError: a failure a user can cause (bad input, a template that breaks, too many rejects...),
            with the exit code the CLI ends with.

    Example:
        >>> from padprep.config import BuildConfig
        >>> cfg = BuildConfig(inputs=(Path("chat.jsonl"),), tokenizer="tok/", output=Path("out"), max_length=4096)  # doctest: +SKIP
        >>> result = build(cfg)  # doctest: +SKIP
        >>> result.manifest.rows_written  # doctest: +SKIP
    """
    progress = progress or Progress()
    if cfg.engine is EngineName.ray:
        from .ray_engine import import_ray

        import_ray()  # without Ray, fail before any work, in one line that says how to install it
    files = expand_inputs([str(p) for p in cfg.inputs], progress.log, exclude=str(cfg.output))
    digests = input_digests(files)
    key = build_key(cfg, digests)
    existing = None if cfg.force else up_to_date(cfg.output, key)
    if existing is not None:
        return BuildResult(cfg.output, existing, up_to_date=True)
    if pad is not None:
        return _build(cfg, progress, files, digests, key, pad)
    with PadProcess.for_engine(cfg.engine) as pad:  # forked first: it imports torch while this process does pass 1
        return _build(cfg, progress, files, digests, key, pad)


def _build(cfg: BuildConfig, progress: Progress, files: list[str], digests, key: str, pad: PadProcess) -> BuildResult:
    bundle = load_tokenizer(cfg.tokenizer, cfg.pad_token)
    formats = cfg.format_options()
    template, template_origin = _template(cfg, bundle, files, formats)
    options = ProcessOptions(
        template, cfg.train_on, _effective_max_length(cfg), cfg.truncation, cfg.span_method is SpanMethod.auto,
        formats, cfg.append_eos, cfg.reasoning,
    )
    found: dict[str, FileFormat] = {}
    if bundle.pad_origin.startswith("fallback"):
        progress.log(f"no pad token in the tokenizer: padding with eos {bundle.pad_token!r} (id {bundle.pad_id})")
    total_bytes = _input_bytes(files)
    processor = Processor(bundle, options)  # compiled and probed once: forked workers inherit it
    engine = _engine(cfg, bundle, processor, files, formats, found, total_bytes, progress)
    out = AtomicDir(cfg.output, cfg.overwrite or cfg.force)
    try:
        with engine:  # local workers start before this process tokenizes anything
            progress.log(f"engine: {engine.describe()}")
            stream = RecordStream(files, formats, found, progress)
            sample = stream.take_sample(cfg.preflight_records)
            engine.head_start(stream, processor, cfg.chunk_size)  # the workers start while preflight runs
            processor, checked, hazards = _preflight_stage(cfg, bundle, processor, sample, progress, template_origin)
            progress.start(total_bytes)
            results = engine.results(stream, processor, cfg.chunk_size, checked)
            counts, stats, histogram, lengths = _pass_one(results, cfg, out.path, progress)
            stream.close()
        check_limits(cfg, counts, final=True)
        check_not_empty(cfg, counts, files)
        progress.log(f"pass 2 (pad and write) {pad.describe()}")
        weighted = stats.weighted_rows > 0  # some message's loss_weight is neither 0 nor 1: shards get loss_weights
        if cfg.pack:
            bounds = [cfg.max_length]
            placement = _placement(lengths, cfg.max_length, progress)
            shards = pad.run(_pass_two_packed, out.path, placement, bundle.pad_id, cfg, weighted)
        else:
            bounds = _bounds(cfg, histogram)
            shards = pad.run(_pass_two, out.path, bounds, bundle.pad_id, cfg, weighted)
        (out.path / SPILL).unlink()
        hazards = _merge_hazards(hazards, stats_hazards(stats))
        manifest = _manifest(cfg, bundle, template, template_origin, files, digests, key, counts, stats, histogram, bounds,
                             shards, hazards, found)
        write_manifest(out.path, manifest)
        out.commit()
        failed_rejects_path(cfg).unlink(missing_ok=True)  # an earlier failed run's, now out of date
    except BaseException as exc:
        if isinstance(exc, RejectsKept):
            keep_rejects(out.path / REJECTS, exc.rejects_copy)
        out.abort()
        raise
    return BuildResult(cfg.output, manifest, hazards)


def _engine(cfg: BuildConfig, bundle: TokenizerBundle, processor: Processor, files: list[str], formats: FormatOptions,
            found: dict[str, FileFormat], total_bytes: int | None, progress: Progress) -> Engine:
    """The engine ``--engine`` names: this machine's processes (as ``--workers`` plans), or Ray."""
    if cfg.engine is EngineName.ray:
        from .ray_engine import RayEngine  # imports ray: only when asked for

        return RayEngine(bundle, files, formats, found, cfg.ray_address, progress)
    return LocalEngine(plan_workers(cfg.workers, total_bytes), bundle, processor)


def _preflight_stage(cfg: BuildConfig, bundle: TokenizerBundle, processor: Processor, sample: list[RawRecord],
                     progress: Progress, template_origin: str | None) -> tuple[Processor, ChunkResult | None, list[Hazard]]:
    """The processor for the whole run, the preflight sample's result when its rows can be kept, and the hazards.

    When the header-scan spans disagree with the template's on the sample, the run uses the template's
    spans, and the sample is processed again with them (no kept result).
    """
    _report_reasoning_option(cfg, processor, progress)
    convs = sample_conversations(processor, sample)
    checked, hazards = _preflight(bundle, processor, sample, convs, cfg, progress, template_origin)
    changes = {}
    if processor.renderer.fast_path and not fast_spans_agree(processor, convs).agree:
        changes["fast_spans"] = False
        hazards.append(Hazard("fast_spans_disagree", "header-scan spans differ from the template's own on the "
                              "preflight sample: the template's boundaries are used for the whole run", handled=True))
    if not byte_offsets_agree(processor, convs):
        changes["byte_offsets"] = False
        hazards.append(Hazard("byte_offsets_disagree", "token offsets computed from the tokens' bytes differ from the "
                              "tokenizer's own on the preflight sample: the tokenizer's are used for the whole run", handled=True))
    if changes:
        processor = Processor(bundle, dataclasses.replace(processor.options, **changes))
        checked = None
    return processor, checked, hazards


def _report_reasoning_option(cfg: BuildConfig, processor: Processor, progress: Progress) -> None:
    """``--reasoning mask|mask-empty`` with a template that writes no think block changes nothing: say so, once."""
    if cfg.reasoning is Reasoning.train:
        return
    markers = getattr(processor.renderer, "think_markers", None)
    if markers is None:
        progress.log(f"--reasoning {cfg.reasoning.value}: the chat template writes no think block; nothing to mask")
    else:
        progress.log(f"--reasoning {cfg.reasoning.value}: think blocks are {markers[0]} ... {markers[1]} (probed from the template)")


def _input_bytes(files: list[str]) -> int | None:
    """Total size of the inputs on disk (None with standard input, whose size is unknown)."""
    if STDIN in files:
        return None
    return sum(os.path.getsize(f) for f in files)


def _effective_max_length(cfg: BuildConfig) -> int | None:
    """With explicit buckets, nothing longer than the largest bucket fits."""
    if cfg.buckets is None:
        return cfg.max_length
    largest = max(cfg.buckets)
    if cfg.max_length is not None and cfg.max_length > largest:
        raise BuildFailed(f"--max-length {cfg.max_length} is larger than the largest bucket {largest}", EXIT_USAGE)
    return cfg.max_length or largest


def _template(cfg: BuildConfig, bundle: TokenizerBundle, files: list[str], formats: FormatOptions) -> tuple[str | None, str | None]:
    """The chat template, or None when there is none and the inputs are raw text that needs none."""
    try:
        return resolve_template(cfg.chat_template, bundle.chat_template)
    except TemplateError:
        if cfg.chat_template is None and not any(_needs_template(f, formats) for f in files):
            return None, None
        raise


def _needs_template(path: str, formats: FormatOptions) -> bool:
    """Whether a file's records (judged by its first one of a known shape) go through a chat template."""
    if formats.format == "text":
        return False
    if path == STDIN:
        return True  # cannot be read twice: assume chat
    records = with_formats(path, read_records(path), formats, {})
    try:
        first = next((r for r in records if r.format is not None), None)
    finally:
        records.close()
    return first is None or needs_chat_template(first.text, first.format, formats.fields)


def _preflight(bundle, processor: Processor, sample, convs, cfg: BuildConfig, progress: Progress, template_origin):
    """The sample processed (its rows are the build's first) and the hazards it shows."""
    result = processor.process(sample)
    broken = next((r for r in result.rejects if r.code == "template_limit"), None)
    if broken is not None:  # the template, not the data: every record would pay for it
        raise BuildFailed(f"the chat template ({template_origin}) went past a limit on the preflight sample, at {broken.describe()}; "
                          "fix or replace the template")
    hazards = tokenizer_hazards(bundle, processor, result) + stats_hazards(result.stats)
    hazards += unrendered_field_hazards(processor, convs, template_origin)
    for h in hazards:
        progress.log(f"preflight: {h.code}: {h.message}" + (f" [{h.count}]" if h.count else ""))
    if cfg.strict and hazards:
        raise BuildFailed(f"--strict: preflight found {len(hazards)} hazard(s), first: {hazards[0].code}: {hazards[0].message}", EXIT_HAZARD)
    return result, hazards


def _merge_hazards(preflight: list[Hazard], whole_run: list[Hazard]) -> list[Hazard]:
    """Counts from the whole run replace the preflight sample's counts for the same hazard."""
    by_code = {h.code: h for h in preflight}
    by_code.update({h.code: h for h in whole_run})
    return list(by_code.values())


def _pass_one(results: Iterator[PackedResult], cfg: BuildConfig, workdir: Path, progress: Progress):
    """Spill every row, write every reject, count everything; lengths go to the histogram (and, with
    --pack, to an int32 array in spill order: all that placement needs). ``results`` come in input order."""
    stats, histogram = ChunkStats(), Counter()
    lengths: list[np.ndarray] = []
    with open(workdir / REJECTS, "w", encoding="utf-8") as rejects_fh, pa.OSFile(str(workdir / SPILL), "wb") as sink:
        rejects = RejectLog(rejects_fh, progress.log)
        counts = rejects.counts
        spill = pa.ipc.new_stream(sink, _SPILL_SCHEMA)
        for result in results:
            stats.add(result.stats)
            counts.read += result.stats.records
            for reject in result.rejects:
                rejects.add(reject)
            rows = result.rows
            if len(rows.lengths):
                histogram.update(rows.lengths.tolist())
                if cfg.pack:
                    lengths.append(rows.lengths.astype(np.int32))
                counts.written += len(rows.lengths)
                spill.write_batch(_spill_batch(rows))
            counts.per_file.update(rows.per_file)
            check_limits(cfg, counts, final=False)
            progress.advance(result.stats.records, int(rows.lengths.sum()))
        spill.close()
    return counts, stats, histogram, np.concatenate(lengths) if lengths else np.zeros(0, np.int32)


def _spill_batch(rows: PackedRows) -> pa.RecordBatch:
    """Packed rows as list columns sharing one offsets array (no per-row conversion)."""
    offsets = int32_array(np.concatenate(([0], np.cumsum(rows.lengths))))
    ids = pa.ListArray.from_arrays(offsets, int32_array(rows.ids))
    labels = pa.ListArray.from_arrays(offsets, int32_array(rows.labels))
    if rows.weights is None:
        weights = pa.nulls(len(rows.lengths), pa.list_(pa.float32()))
    else:
        weights = pa.ListArray.from_arrays(offsets, float32_array(rows.weights))
    return pa.record_batch([ids, labels, weights], schema=_SPILL_SCHEMA)


def _flat_weights(take: pa.Table, flat_labels: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Every token's loss weight: as spilled where a row has them, else 1 where it trains and 0 elsewhere."""
    out = (flat_labels != IGNORE_INDEX).astype(np.float32)
    column = take.column(2).combine_chunks()
    if column.null_count == len(column):
        return out
    given = np.diff(int32_values(column.offsets)) > 0  # a null entry is empty; a row's weights never are
    out[np.repeat(given, lengths)] = float32_values(column.flatten())
    return out


def _bounds(cfg: BuildConfig, histogram: Counter) -> list[int]:
    if cfg.buckets is not None:
        return explicit_bounds(cfg.buckets, cfg.pad_to_multiple_of)
    return optimal_bounds(histogram, cfg.pad_to_multiple_of)


def _pass_two(workdir: Path, bounds: list[int], pad_id: int, cfg: BuildConfig, weighted: bool) -> list[dict]:
    """Route the spilled rows into one file per bucket (input order kept), then pad and write each
    bucket's shards from its file. Memory holds one batch or one shard, whatever the input size."""
    shards: list[dict] = []
    for bucket, path in _route(workdir, bounds).items():
        shards += _write_bucket(workdir, path, bucket, pad_id, cfg, len(shards), weighted)
        path.unlink()
    return sorted(shards, key=lambda s: (s["seq_len"], s["file"]))


def _route(workdir: Path, bounds: list[int]) -> dict[int, Path]:
    """One stream file per bucket that received rows, read back in bucket order."""
    paths: dict[int, Path] = {}
    with contextlib.ExitStack() as stack:
        writers: dict[int, pa.ipc.RecordBatchStreamWriter] = {}
        source = stack.enter_context(pa.OSFile(str(workdir / SPILL), "rb"))  # read, not mapped: RSS stays flat
        for batch in pa.ipc.open_stream(source):
            which = assign(_list_lengths(batch.column(0)), bounds)
            for k in np.unique(which):
                bucket = bounds[int(k)]
                if bucket not in writers:
                    paths[bucket] = workdir / f"route-{bucket:06d}.arrow"
                    sink = stack.enter_context(pa.OSFile(str(paths[bucket]), "wb"))
                    writers[bucket] = stack.enter_context(pa.ipc.new_stream(sink, _SPILL_SCHEMA))
                writers[bucket].write_batch(batch.take(int32_array(np.flatnonzero(which == k))))
    return dict(sorted(paths.items()))


def _write_bucket(workdir: Path, path: Path, bucket: int, pad_id: int, cfg: BuildConfig, first_serial: int,
                  weighted: bool) -> list[dict]:
    """Pad and write one bucket's rows, ``shard_tokens // bucket`` rows a shard."""
    per_shard = max(1, cfg.shard_tokens // bucket)
    shards: list[dict] = []
    pending: list[pa.RecordBatch] = []
    count = 0
    with pa.OSFile(str(path), "rb") as source:
        for batch in pa.ipc.open_stream(source):
            pending.append(batch)
            count += batch.num_rows
            while count >= per_shard:
                table = pa.Table.from_batches(pending, schema=_SPILL_SCHEMA)
                shards.append(_flush(workdir, table.slice(0, per_shard), bucket, pad_id, cfg, first_serial + len(shards), weighted))
                rest = table.slice(per_shard)
                pending, count = rest.to_batches(), rest.num_rows
                pa.default_memory_pool().release_unused()  # a shard's buffers go back to the OS, not to a cache
    if count:
        table = pa.Table.from_batches(pending, schema=_SPILL_SCHEMA)
        shards.append(_flush(workdir, table, bucket, pad_id, cfg, first_serial + len(shards), weighted))
    return shards


def _list_lengths(column: pa.ListArray) -> np.ndarray:
    offsets = int32_values(column.offsets)
    return np.diff(offsets)


def _flush(workdir: Path, take: pa.Table, bucket: int, pad_id: int, cfg: BuildConfig, serial: int, weighted: bool) -> dict:
    """Pad and write these rows of a bucket as one shard."""
    from .pad import pad_shard, shuffle_rows  # imports torch (over a second): not needed by an up-to-date build

    rows = take.num_rows
    ids_col, labels_col = take.column(0).combine_chunks(), take.column(1).combine_chunks()
    lengths = _list_lengths(ids_col)
    flat_ids, flat_labels = int32_values(ids_col.flatten()), int32_values(labels_col.flatten())
    weights = _flat_weights(take, flat_labels, lengths) if weighted else None
    padded = pad_shard(flat_ids, flat_labels, lengths, bucket, pad_id, cfg.padding_side, weights)
    if cfg.seed is not None:
        padded = shuffle_rows(padded, cfg.seed * 1_000_003 + serial)
    name = f"bucket-{bucket:06d}-{serial:05d}.arrow"
    digest = write_shard(workdir / name, padded)
    real = int(lengths.sum())
    return {
        "file": name,
        "bucket": bucket,
        "rows": rows,
        "seq_len": bucket,
        "real_tokens": real,
        "pad_tokens": rows * bucket - real,
        "trained_tokens": int(np.count_nonzero(flat_labels != IGNORE_INDEX)),
        "bytes": (workdir / name).stat().st_size,
        "sha256": digest,
    }


def _placement(lengths: np.ndarray, capacity: int, progress: Progress) -> Placement:
    started = time.perf_counter()
    placement = best_fit_decreasing(lengths, capacity)
    fill = int(lengths.sum()) / (placement.bins * capacity) if placement.bins else 0.0
    progress.log(f"packing: {len(lengths):,} sequences into {placement.bins:,} rows of {capacity:,} tokens "
                 f"({fill:.2%} full) in {time.perf_counter() - started:.2f}s")
    return placement


# Files open at once while routing packed rows to their shards; more shards are routed in two steps.
_FANOUT = 64


def _pass_two_packed(workdir: Path, placement: Placement, pad_id: int, cfg: BuildConfig, weighted: bool) -> list[dict]:
    """Route the spilled rows into one file per shard (input order kept), then put each shard's rows
    in placement order, pack, pad and write it. Memory holds one batch or one shard."""
    capacity = placement.capacity
    per_shard = max(1, cfg.shard_tokens // capacity)  # rows of ``capacity`` tokens per shard
    n_shards = -(-placement.bins // per_shard)
    shard_of_row = placement.bin_of // per_shard
    paths = _scatter(workdir / SPILL, shard_of_row, n_shards, workdir, "pack")
    shards: list[dict] = []
    for serial, path in enumerate(paths):
        first, last = serial * per_shard, min((serial + 1) * per_shard, placement.bins)
        final = placement.order[placement.starts[first] : placement.starts[last]]  # spill indices, placement order
        with pa.OSFile(str(path), "rb") as source:
            table = pa.ipc.open_stream(source).read_all()  # this shard's rows, in spill order
        table = table.take(int32_array(np.searchsorted(np.sort(final), final)))
        seq_counts = np.diff(placement.starts[first : last + 1])
        shards.append(_flush_packed(workdir, table, seq_counts, capacity, pad_id, cfg, serial, weighted))
        path.unlink()
        del table
        pa.default_memory_pool().release_unused()
    return shards


def _scatter(source: Path, dest: np.ndarray, n_dest: int, workdir: Path, name: str) -> list[Path]:
    """Split a stream file of rows into one file per destination (``dest[i]``: row ``i``'s), each in
    the source's order. At most ``_FANOUT`` files are open: with more destinations, rows go to
    groups of destinations first and each group file is split again."""
    if n_dest <= _FANOUT:
        return _split(source, dest, [workdir / f"{name}-{d:05d}.arrow" for d in range(n_dest)])
    per_group = -(-n_dest // _FANOUT)
    group = dest // per_group
    groups = _split(source, group, [workdir / f"{name}-{g}.arrow" for g in range(-(-n_dest // per_group))])
    paths: list[Path] = []
    for g, path in enumerate(groups):
        first = g * per_group
        paths += _scatter(path, dest[group == g] - first, min(per_group, n_dest - first), workdir, f"{name}-{g}")
        path.unlink()
    return paths


def _split(source: Path, dest: np.ndarray, paths: list[Path]) -> list[Path]:
    """One pass over ``source``: row ``i`` goes to ``paths[dest[i]]`` (every path is written, rows in order)."""
    with contextlib.ExitStack() as stack:
        reader = pa.ipc.open_stream(stack.enter_context(pa.OSFile(str(source), "rb")))  # read, not mapped
        writers = [stack.enter_context(pa.ipc.new_stream(stack.enter_context(pa.OSFile(str(p), "wb")), _SPILL_SCHEMA))
                   for p in paths]
        done = 0
        for batch in reader:
            which = dest[done : done + batch.num_rows]
            done += batch.num_rows
            for k in np.unique(which):
                writers[int(k)].write_batch(batch.take(int32_array(np.flatnonzero(which == k))))
    if done != len(dest):
        raise RuntimeError(f"internal: {source.name} holds {done} rows, the placement {len(dest)}")
    return paths


def _flush_packed(workdir: Path, take: pa.Table, seq_counts: np.ndarray, seq_len: int, pad_id: int, cfg: BuildConfig,
                  serial: int, weighted: bool) -> dict:
    """Pack these sequences (in order, ``seq_counts[r]`` to row ``r``), pad and write them as one shard."""
    from .pad import pad_packed_shard, shuffle_rows  # imports torch: not needed by an up-to-date build

    ids_col, labels_col = take.column(0).combine_chunks(), take.column(1).combine_chunks()
    seq_lens = _list_lengths(ids_col)
    flat_ids, flat_labels = int32_values(ids_col.flatten()), int32_values(labels_col.flatten())
    weights = _flat_weights(take, flat_labels, seq_lens) if weighted else None
    padded = pad_packed_shard(flat_ids, flat_labels, seq_lens, seq_counts, seq_len, pad_id, weights)
    if cfg.seed is not None:
        padded = shuffle_rows(padded, cfg.seed * 1_000_003 + serial)
    name = f"packed-{seq_len:06d}-{serial:05d}.arrow"
    digest = write_shard(workdir / name, padded)
    rows, real = len(seq_counts), int(seq_lens.sum())
    return {
        "file": name,
        "bucket": seq_len,
        "rows": rows,
        "seq_len": seq_len,
        "sequences": len(seq_lens),
        "real_tokens": real,
        "pad_tokens": rows * seq_len - real,
        "fill": real / (rows * seq_len),
        "trained_tokens": int((padded.labels != IGNORE_INDEX).sum()),  # each sequence's first label now -100
        "bytes": (workdir / name).stat().st_size,
        "sha256": digest,
    }


def _packing(cfg: BuildConfig, shards: list[ShardEntry]) -> dict | None:
    """The manifest's record of packing: None for a bucketed build."""
    if not cfg.pack:
        return None
    rows, real = sum(s.rows for s in shards), sum(s.real_tokens for s in shards)
    return {
        "algorithm": "best-fit decreasing",
        "seq_len": cfg.max_length,
        "rows": rows,
        "sequences": sum(s.sequences or 0 for s in shards),
        "fill": real / (rows * cfg.max_length) if rows else 0.0,
        "position_ids": "restart at 0 at every sequence and at the padding tail",
        "first_label_of_each_sequence": IGNORE_INDEX,
    }


def _manifest(cfg: BuildConfig, bundle: TokenizerBundle, template: str | None, template_origin: str | None, files: list[str],
              digests: list[str | None], key: str | None, counts: Counts, stats: ChunkStats, histogram: Counter,
              bounds: list[int], shard_dicts: list[dict], hazards: list[Hazard],
              found: dict[str, FileFormat] | None = None) -> Manifest:
    """Everything needed to know what was built from what: options, fingerprints, per-shard counts."""
    shards = [ShardEntry.from_json(s) for s in shard_dicts]
    real = sum(s.real_tokens for s in shards)
    pad = sum(s.pad_tokens for s in shards)
    longest = max(histogram) if histogram else 0
    return Manifest(
        padprep_version=__version__,
        format=PACKED_FORMAT if cfg.pack else FORMAT,
        build_key=key,
        options=cfg.as_manifest(),
        tokenizer={
            "source": bundle.source,
            "fingerprint": bundle.fingerprint,
            "files": bundle.files,
            "special_tokens": bundle.special,
            "pad_token": bundle.pad_token,
            "pad_id": bundle.pad_id,
            "pad_origin": bundle.pad_origin,
        },
        chat_template={
            "origin": template_origin if template is not None else "none (raw-text inputs only)",
            "sha256": hashlib.sha256(template.encode()).hexdigest() if template is not None else None,
        },
        inputs=[
            {
                "path": f,
                "sha256": digest,
                "format": (found or {}).get(f, FileFormat(None, "")).format,
                "format_origin": (found or {}).get(f, FileFormat(None, "not read")).origin,
                **counts.file_totals(f),
            }
            for f, digest in zip(files, digests)
        ],
        buckets=bounds,
        packing=_packing(cfg, shards),
        shards=shards,
        totals={
            "records_read": counts.read,
            "rows_written": counts.written,
            "rejected": counts.rejected,
            "dropped": counts.dropped,
            "truncated": stats.truncated,
            "reasons": dict(sorted(counts.reasons.items())),
            "reason_descriptions": dict(sorted(counts.descriptions.items())),
            "real_tokens": real,
            "pad_tokens": pad,
            "trained_tokens": sum(s.trained_tokens for s in shards),
            "padding_fraction": pad / (real + pad) if real + pad else 0.0,
            "unbucketed_padding_fraction": padding_of(histogram, [longest]) / (longest * counts.written) if counts.written else 0.0,
            "realigned_boundaries": stats.realigned,
            "replies_masked_by_flag": stats.masked_by_flag,
            "messages_trained_by_flag": stats.trained_by_flag,
            "rows_with_fractional_weights": stats.weighted_rows,
            "think_blocks_masked": stats.think_masked,
        },
        hazards=[h.as_json() for h in hazards],
    )
