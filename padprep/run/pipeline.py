"""``padprep build``: read -> normalize -> render -> tokenize -> mask -> bucket -> pad -> write.

Two passes keep memory bounded by chunk and shard size, never by the input:

* pass 1 plans chunks, maps ``Processor.process`` over them on an engine (``engine.py``: this
  machine's processes, as ``parallel.py`` plans them, or Ray, ``ray_engine.py``) and collects the
  results in input order: it appends unpadded rows to a spill file and their lengths to a histogram,
  and writes every reject as it comes (``rejects.py``);
* between passes the bucket bounds are chosen from the histogram;
* pass 2 (``spill.py``) streams the spill file, routes rows to buckets and pads and writes each
  bucket's shards, in the pad process (``padproc.py``) that imported torch meanwhile.

With ``--pack`` the lengths of pass 1 (one int per row) go to best-fit decreasing placement
(``pack.py``) instead of bucket bounds, and pass 2 packs the shards in placement order. The manifest
(``manifest.py``) is written last.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pyarrow as pa

from padprep import __version__
from padprep.chat.process import ChunkResult, ChunkStats, FlatResult, ProcessOptions, Processor
from padprep.chat.templates import TemplateError, resolve_template
from padprep.chat.tokenizer import TokenizerBundle, load_tokenizer
from padprep.config import BuildConfig, EngineName, Reasoning, SpanMethod, Task, TrainOn
from padprep.errors import EXIT_HAZARD, EXIT_USAGE, BuildFailed
from padprep.input.columnar import is_columnar
from padprep.input.formats import FileFormat, FormatOptions, needs_chat_template, with_formats
from padprep.input.hub import identity
from padprep.input.read import STDIN, expand_inputs, read_records
from padprep.input.records import RawRecord
from padprep.input.remote import is_remote
from padprep.layout.bucket import explicit_bounds, optimal_bounds, padding_of
from padprep.layout.pack import Placement, best_fit_decreasing
from padprep.layout.pairs import pass_two_pairs
from padprep.layout.pass_two import ShardOptions, list_lengths, pass_two, pass_two_packed
from padprep.layout.shards import WrittenShard
from padprep.layout.spill import PAIR_SCHEMA, SCHEMA, input_indices, spill_batch, spill_files, spill_pairs
from padprep.output import location, publish
from padprep.output.buildkey import input_digests, key_of, key_parts, up_to_date
from padprep.output.location import is_url, url_of
from padprep.output.manifest import FORMAT, PACKED_FORMAT, PAIRS_FORMAT, Manifest, ShardEntry, read_manifest, write_manifest
from padprep.output.ownership import OutputInTheWay, check_apart, check_replaceable
from padprep.output.rejects import (  # noqa: F401  (TooManyRejects, EmptyOutput, MIN_RECORDS_FOR_RATE: re-exported)
    MIN_RECORDS_FOR_RATE,
    Counts,
    EmptyOutput,
    RejectLog,
    RejectsKept,
    TooManyRejects,
    check_limits,
    check_not_empty,
    failed_rejects_path,
    keep_rejects,
)
from padprep.recipe.draw import Selection
from padprep.run.checkpoint import BuildLock, Checkpoint, PassOne, Position, describe_resume, spill_location
from padprep.run.engine import Engine, LocalEngine, RecordStream, detect_file_format
from padprep.run.padproc import PadProcess
from padprep.run.parallel import SMALL_INPUT_BYTES, plan_workers
from padprep.run.preflight import (
    Hazard,
    encoding_agrees,
    fast_spans_agree,
    sample_conversations,
    stats_hazards,
    tokenizer_hazards,
    unrendered_field_hazards,
)
from padprep.run.progress import Progress
from padprep.schema import IGNORE_INDEX, REJECTS
from padprep.store import Entry, Store, open_store, token_parts


@dataclass
class BuildResult:
    output: Path
    manifest: Manifest
    hazards: list[Hazard] = field(default_factory=list)
    up_to_date: bool = False  # nothing was built: the output already held this build (same build key)
    resumed_tokens: int = 0  # tokens an interrupted run had already processed (pass 1's, up to its last checkpoint)


def build(
    cfg: BuildConfig,
    progress: Progress | None = None,
    pad: PadProcess | None = None,
    selection: Callable[[], Selection] | None = None,
) -> BuildResult:
    """Build ``cfg.output`` from ``cfg.inputs``: the whole of ``padprep build``, without the CLI.

    Nothing is rebuilt when the output already holds this build (same build key; ``cfg.force``
    rebuilds). The output directory appears whole or not at all: a failure leaves nothing that
    looks complete (rejects of a failed run are kept beside it, see ``rejects.py``).

    Args:
        cfg: every option of the build (``config.BuildConfig``; the CLI's flags map onto it one to one).
        progress: where log lines and progress go (default: nowhere).
        pad: where pass 2 runs (``padproc.PadProcess``), entered by the caller; default: one forked here
            (the CLI forks it before it imports this module, so that torch loads sooner).
        selection: for one side of a recipe (``mixture.py``): gives which records of the inputs to read,
            how many times each; asked only when the output is not up to date.

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
        from padprep.run.ray_engine import import_ray

        import_ray()  # without Ray, fail before any work, in one line that says how to install it
    cfg = _followed(cfg)
    groups = _input_groups(cfg, progress)
    parts = key_parts(cfg, [d for g in groups for d in g.key_material()])
    if is_url(cfg.output):
        return _build_to_url(cfg, progress, pad, selection, groups, parts)
    with BuildLock(cfg.output, progress.log):  # one build per output at a time
        return _build_locked(cfg, progress, pad, selection, groups, parts)


def _build_locked(
    cfg: BuildConfig,
    progress: Progress,
    pad: PadProcess | None,
    selection: Callable[[], Selection] | None,
    groups: list[_InputGroup],
    parts: dict | None,
) -> BuildResult:
    """A build into a local output whose lock is held: up to date, or built (``_build_exact``)."""
    key = key_of(parts)
    existing = None if cfg.force else up_to_date(cfg.output, key)
    if existing is not None:
        Checkpoint.left_after_commit(cfg.output, key)
        return BuildResult(cfg.output, existing, up_to_date=True)
    files, digests = _expand_pinned(groups, cfg, progress)
    check_apart(cfg.output, read_paths(cfg, files))
    check_replaceable(cfg.output, cfg.overwrite or cfg.force)
    chosen = selection() if selection is not None else None
    if pad is not None:
        return _build_exact(cfg, progress, files, digests, key, pad, chosen, parts)
    with PadProcess.for_engine(cfg.engine) as pad:  # forked first: it imports torch while this process does pass 1
        return _build_exact(cfg, progress, files, digests, key, pad, chosen, parts)


def _build_to_url(
    cfg: BuildConfig,
    progress: Progress,
    pad: PadProcess | None,
    selection: Callable[[], Selection] | None,
    groups: list[_InputGroup],
    parts: dict | None,
) -> BuildResult:
    """``--output s3://...``: built as any build into a local staging output (its lock, checkpoints and resume
    on this machine), then published to the URL, manifest last (``output/publish.py``). The URL's own lock
    object keeps builds on other machines out; its rules for replacing are a local output's."""
    url, key = url_of(cfg.output), key_of(parts)
    publish.check_apart(url, [str(p) for p in cfg.inputs])
    staged = publish.staging_path(url, cfg.cache_dir)
    # the staging is padprep's own: replaced freely (the URL's output is what --overwrite is about)
    staged_cfg = dataclasses.replace(cfg, output=staged, publish_to=url, overwrite=True)
    with BuildLock(staged, progress.log), publish.RemoteLock(url, progress.log):
        existing = None if cfg.force else publish.remote_up_to_date(url, key)
        if existing is not None:
            publish.finish(url, existing)  # a publish killed after its manifest left old names to remove
            publish.remove_staged(staged)
            return BuildResult(cfg.output, existing, up_to_date=True)
        publish.check_replaceable(url, cfg.overwrite or cfg.force)
        try:
            result = _build_locked(staged_cfg, progress, pad, selection, groups, parts)
        except RejectsKept as exc:  # the rejects go beside the URL, as beside a local output
            kept = publish.keep_failed_rejects(exc.rejects_copy, url)
            if kept is None:
                raise
            raise type(exc)(str(exc).replace(str(exc.rejects_copy), kept), exc.rejects_copy) from None
        publish.publish(staged, url, progress.log)
    return dataclasses.replace(result, output=cfg.output, up_to_date=False)


class _NotProvablyExact(Exception):
    """A build that took its first inputs' rows from the store met what a fresh build might have met
    elsewhere (a reject limit checked at other records): it is built again without them."""


def _build_exact(cfg: BuildConfig, progress: Progress, *args) -> BuildResult:
    try:
        return _build(cfg, progress, *args)
    except _NotProvablyExact as exc:
        progress.log(f"store: {exc}: building again from the start, as a fresh build")
        return _build(cfg, progress, *args, reuse_prefix=False)


def _followed(cfg: BuildConfig) -> BuildConfig:
    """An output that is a symlink is built where it points: the link stays, and the folder it names is the output."""
    if not cfg.output.is_symlink():
        return cfg
    return dataclasses.replace(cfg, output=Path(os.path.realpath(cfg.output)))


def read_paths(cfg: BuildConfig, files: list[str]) -> list[str]:
    """Every local path a build reads: its inputs as given and as expanded, the tokenizer and the template."""
    paths = [str(p) for p in cfg.inputs] + files + [cfg.tokenizer]
    return paths + ([cfg.chat_template] if cfg.chat_template else [])


@dataclass
class _InputGroup:
    """What one of ``cfg.inputs`` stands for: its files and their digests, or, for a Hub revision that is a
    commit hash, its identity alone until the key says a build is needed (``hub.identity``)."""

    pattern: str
    files: list[str] | None = None
    digests: list[str | None] = field(default_factory=list)
    identity: str | None = None

    def key_material(self) -> list[str | None]:
        return [self.identity] if self.identity is not None else self.digests


def _input_groups(cfg: BuildConfig, progress: Progress) -> list[_InputGroup]:
    """Each input expanded and hashed in order (a file named twice counts once), pinned Hub inputs not yet fetched."""
    groups, seen = [], set()
    for pattern in (str(p) for p in cfg.inputs):
        pinned = identity(pattern, cfg.split)
        if pinned is not None:
            groups.append(_InputGroup(pattern, identity=pinned))
            continue
        files = [f for f in expand_inputs([pattern], progress.log, exclude=str(cfg.output), split=cfg.split) if f not in seen]
        seen.update(files)
        groups.append(_InputGroup(pattern, files, input_digests(files)))
    return groups


def _expand_pinned(groups: list[_InputGroup], cfg: BuildConfig, progress: Progress) -> tuple[list[str], list[str | None]]:
    """The build's files and digests, in input order, the pinned Hub inputs fetched (or found in the cache) now."""
    files: list[str] = []
    digests: list[str | None] = []
    for g in groups:
        if g.files is None:
            found = [f for f in expand_inputs([g.pattern], progress.log, split=cfg.split) if f not in files]
            g.files, g.digests = found, input_digests(found)
        for f, d in zip(g.files, g.digests):
            if f not in files:
                files.append(f)
                digests.append(d)
    return files, digests


def _build(
    cfg: BuildConfig,
    progress: Progress,
    files: list[str],
    digests,
    key: str | None,
    pad: PadProcess,
    selection: Selection | None = None,
    parts: dict | None = None,
    reuse_prefix: bool = True,
) -> BuildResult:
    """Everything after the up-to-date check; ``parts``: what ``key`` hashes (a start-over names what changed);
    ``reuse_prefix``: the store may give the rows of the first inputs (``_prefix_from_store``)."""
    store, store_parts = _store(cfg, files, parts, selection, progress)
    entry = store.lookup(store_parts) if store is not None and store_parts is not None else None
    # from the store: the tokenizer is not parsed (its pad id is the entry's: same files, same --pad-token)
    bundle = load_tokenizer(cfg.tokenizer, cfg.pad_token, entry.meta.get("pad_id") if entry is not None else None)
    formats = cfg.format_options()
    file_formats = selection.formats if selection is not None else {}
    template, template_origin = _template(cfg, bundle, files, formats, file_formats)
    task = Task(entry.meta["task"]) if entry is not None else _task(cfg, files, formats, file_formats, progress)
    if cfg.padded_pairs and task is not Task.preference:
        raise BuildFailed("--padded-pairs applies to preference pairs; these records are SFT rows: drop it", EXIT_USAGE)
    if cfg.pack and task is Task.preference:  # found by --task auto (config refuses --task preference --pack)
        raise BuildFailed(
            "--pack does not apply to preference pairs (these records hold `chosen` and `rejected`; pairs are "
            "bucketed by pair length): drop --pack",
            EXIT_USAGE,
        )
    total_bytes = _input_bytes(files)
    options = ProcessOptions(
        template,
        TrainOn.last if task is Task.preference else cfg.train_on,  # a pair's side trains its final reply
        _effective_max_length(cfg),
        cfg.truncation,
        cfg.span_method is SpanMethod.auto,
        formats,
        tuple(file_formats.items()),
        append_eos=cfg.append_eos,
        reasoning=cfg.reasoning,
        byte_offsets=total_bytes is None or total_bytes >= SMALL_INPUT_BYTES,
        task=task.value,
        limit_name=_limit_name(cfg),
    )
    if bundle.pad_origin.startswith("fallback"):
        progress.log(f"no pad token in the tokenizer: padding with eos {bundle.pad_token!r} (id {bundle.pad_id})")
    mirror = (
        location.beside_url(cfg.publish_to, "state") if cfg.publish_to and _on_cluster(cfg, task is Task.preference) else None
    )
    checkpoint = Checkpoint(cfg.output, key, EngineName(cfg.engine).value, cfg.fresh, progress.log, parts, mirror)
    placed = _from_store(entry, checkpoint, progress) if entry is not None else None
    if entry is not None and placed is None:  # resumed, or the entry was damaged: the tokenizer parsed after all
        bundle = load_tokenizer(cfg.tokenizer, cfg.pad_token)
    # compiled and probed once (forked workers inherit it); not at all when pass 1 comes from the store
    processor = Processor(bundle, options) if placed is None else None
    appended = None
    if entry is None and reuse_prefix and store_parts is not None and not checkpoint.resumed:
        appended = _prefix_from_store(cfg, store, files, digests, parts, task, total_bytes, checkpoint, progress)
    resumed_tokens = sum(checkpoint.done.counts.per_file_tokens.values()) if checkpoint.resumed else 0
    if checkpoint.resumed and appended is None:
        progress.log(describe_resume(checkpoint, total_bytes))
    work = checkpoint.path
    try:
        if checkpoint.phase == "written":  # killed between the manifest and the rename
            manifest = read_manifest(work)
            hazards = [Hazard(**h) for h in manifest.hazards]
        else:
            state = _BuildState(
                cfg, bundle, processor, files, digests, key, formats, template, template_origin, task, total_bytes, selection
            )
            stored = (entry, placed) if entry is not None and placed is not None else None
            state = dataclasses.replace(state, stored=stored, store=store, store_parts=store_parts, appended=appended)
            manifest, hazards = _passes(state, progress, pad, checkpoint)
        checkpoint.commit()
        failed_rejects_path(cfg).unlink(missing_ok=True)  # an earlier failed run's, now out of date
    except BaseException as exc:
        if isinstance(exc, RejectsKept):
            keep_rejects(work / REJECTS, exc.rejects_copy)
        # something put into the old output during the build: the finished build waits for the path to be clear
        kept = isinstance(exc, OutputInTheWay) and checkpoint.phase == "written"
        if not (key is not None and (_interrupted(exc) or kept)):
            checkpoint.abort()  # a failure the same command would meet again: nothing to resume
        raise
    return BuildResult(cfg.output, manifest, hazards, resumed_tokens=resumed_tokens)


def _interrupted(exc: BaseException) -> bool:
    """Ctrl-C / SIGTERM, or a full disk: the same command, run again, resumes from the last checkpoint."""
    return isinstance(exc, KeyboardInterrupt) or (isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT))


@dataclass(frozen=True)
class _BuildState:
    """What a build has settled before its passes: options, tokenizer, processor, inputs, template and task."""

    cfg: BuildConfig
    bundle: TokenizerBundle
    processor: Processor | None  # compiled and probed once (preflight may hand on one with a shortcut turned off)
    files: list[str]
    digests: list[str | None]
    key: str | None
    formats: FormatOptions
    template: str | None
    template_origin: str | None
    task: Task
    total_bytes: int | None  # the inputs' size, where known
    selection: Selection | None  # one side of a recipe: which records to read, how many times
    stored: tuple[Entry, list[Path]] | None = None  # pass 1 from the store: its entry, its segments placed
    store: Store | None = None  # where pass 1's rows are kept (None: --no-cache)
    store_parts: dict | None = None  # their key's parts (None: not kept, see ``_store``)
    # the first k inputs' rows came from the store (k, their formats); pass 1 goes on after them
    appended: tuple[int, dict[str, FileFormat]] | None = None

    @property
    def stop_signal(self) -> str:
        """The stop signal rule, in words: the processor's, or as the store kept it."""
        if self.processor is None:
            return self.stored[0].meta["stop_signal"]
        return self.processor.stop_signal


def _passes(state: _BuildState, progress: Progress, pad: PadProcess, checkpoint: Checkpoint) -> tuple[Manifest, list[Hazard]]:
    """Pass 1 (unless a checkpoint says it is done), pass 2, the manifest: everything but the rename. With
    --engine ray, both passes run on one connection to the cluster (a local one is started once)."""
    if state.cfg.engine is not EngineName.ray:
        return _both_passes(state, progress, pad, checkpoint)
    from padprep.run.ray_engine import session

    with session(state.cfg.ray_address):
        return _both_passes(state, progress, pad, checkpoint)


def _both_passes(
    state: _BuildState, progress: Progress, pad: PadProcess, checkpoint: Checkpoint
) -> tuple[Manifest, list[Hazard]]:
    cfg, bundle, processor, files, digests = state.cfg, state.bundle, state.processor, state.files, state.digests
    formats, task, total_bytes, selection = state.formats, state.task, state.total_bytes, state.selection
    work = checkpoint.path
    pairs = task is Task.preference
    if checkpoint.phase == "pass1" and state.stored is not None:
        done, lengths, hazards, found = _pass_one_stored(state, checkpoint, progress)
        counts, stats, histogram = done.counts, done.stats, done.histogram
        check_limits(cfg, counts, final=True)
        check_not_empty(cfg, counts, files)
        bounds = [cfg.max_length] if cfg.pack and not pairs else _bounds(cfg, histogram)
        checkpoint.start_pass_two(bounds, [h.as_json() for h in hazards], {f: [v.format, v.origin] for f, v in found.items()})
    elif checkpoint.phase == "pass1":
        found: dict[str, FileFormat] = {}
        spill_to = spill_location(cfg, checkpoint.path) if _on_cluster(cfg, pairs) else None
        engine = _engine(
            cfg, bundle, processor, files, digests, formats, found, total_bytes, progress, checkpoint.position, spill_to
        )
        with engine:  # local workers start before this process tokenizes anything
            progress.log(f"engine: {engine.describe()}")
            stream = RecordStream(
                files,
                formats,
                found,
                progress,
                dict(zip(files, digests)),
                selection,
                checkpoint.position.records,
                state.appended,
            )
            sample = stream.take_sample(cfg.preflight_records)
            engine.head_start(stream, processor, cfg.chunk_size)  # the workers start while preflight runs
            processor, checked, hazards = _preflight_stage(cfg, bundle, processor, sample, progress, state.template_origin)
            progress.start(total_bytes)
            results = engine.results(stream, processor, cfg.chunk_size, checked if not checkpoint.resumed else None)
            try:
                done, lengths = _pass_one(results, cfg, checkpoint, progress, pairs, stream, engine, files)
            except TooManyRejects:
                if state.appended is not None:  # checked at other records than a fresh build checks it: not provably the same
                    raise _NotProvablyExact("a reject limit was reached after the stored inputs' rows") from None
                raise
            stream.close()
        counts, stats, histogram = done.counts, done.stats, done.histogram
        if state.appended is not None and not _limits_met_anywhere(cfg, counts):
            raise _NotProvablyExact(f"{counts.rejected:,} rejects could reach --max-reject-rate at other records")
        check_limits(cfg, counts, final=True)
        check_not_empty(cfg, counts, files)
        bounds = [cfg.max_length] if cfg.pack and not pairs else _bounds(cfg, histogram)
        checkpoint.start_pass_two(bounds, [h.as_json() for h in hazards], {f: [v.format, v.origin] for f, v in found.items()})
        _keep_pass_one(state, checkpoint, done, hazards, found)
    else:  # resumed after pass 1
        done, lengths, bounds = checkpoint.done, checkpoint.lengths(), checkpoint.bounds
        counts, stats, histogram = done.counts, done.stats, done.histogram
        hazards = [Hazard(**h) for h in checkpoint.hazards]
        found = {f: FileFormat(*v) for f, v in checkpoint.found.items()}
    on_cluster = _on_cluster(cfg, pairs)
    progress.log(
        f"pass 2 (pad and write) {'on the cluster: the driver plans, the workers route, pad and write' if on_cluster else pad.describe()}"
    )
    weighted = stats.weighted_rows > 0  # some message's loss_weight is neither 0 nor 1: shards get loss_weights
    options = ShardOptions.of(cfg, checkpoint.done_shards(), checkpoint.shards_log if state.key is not None else None)
    pair_pad = bundle.pad_id if cfg.padded_pairs else None  # (unpadded pair shards have no padding)
    if on_cluster:
        from padprep.run.cluster import run_pass_two  # imports ray: only for --engine ray

        pad_id = pair_pad if pairs else bundle.pad_id
        shards = run_pass_two(cfg, checkpoint, bounds, pad_id, weighted, state.key, progress.log, pairs)
    elif pairs:
        shards = pad.run(pass_two_pairs, work, bounds, options, pair_pad)
    elif cfg.pack:
        placement = _placement(np.concatenate(lengths) if lengths else np.zeros(0, np.int32), cfg.max_length, progress)
        shards = pad.run(pass_two_packed, work, placement, bundle.pad_id, options, weighted, [len(x) for x in lengths], pad.clean)
    else:
        shards = pad.run(pass_two, work, bounds, bundle.pad_id, options, weighted, pad.clean)
    for path in spill_files(work):
        path.unlink()
    hazards = _merge_hazards(hazards, stats_hazards(stats))
    manifest = _manifest(state, counts, stats, histogram, bounds, shards, hazards, found)
    if pairs:
        manifest = dataclasses.replace(manifest, format=PAIRS_FORMAT, task=task.value)
    if selection is not None:
        manifest = dataclasses.replace(manifest, mixture=_mixture(cfg, selection, counts))
    write_manifest(work, manifest)
    checkpoint.finished()
    return manifest, hazards


def _on_cluster(cfg: BuildConfig, pairs: bool) -> bool:
    """Pass 2 runs on the Ray cluster (``run/cluster.py``): bucketed builds (SFT rows or pairs) of --engine ray.
    --pack is written by the driver: a packed row draws from anywhere in the spill (every piece feeds every shard)."""
    return cfg.engine is EngineName.ray and not cfg.pack


def _store(
    cfg: BuildConfig, files: list[str], parts: dict | None, selection: Selection | None, progress: Progress
) -> tuple[Store | None, dict | None]:
    """The tokenized store (``padprep/store``) and the key parts of this build's pass 1 in it; (None, None)
    with --no-cache, standard input (no key) or a recipe's side (its draw decides the records read)."""
    if parts is None or selection is not None:
        return None, None
    store = open_store(cfg.cache_dir, cfg.no_cache, progress.log)
    if store is None:
        return None, None
    policy = {
        "max_rejects": cfg.max_rejects,
        "max_reject_rate": cfg.max_reject_rate,
        "allow_empty": cfg.allow_empty,
        "chunk_size": cfg.chunk_size,
    }
    return store, token_parts(parts, files, _effective_max_length(cfg), _limit_name(cfg), policy)


def _prefix_from_store(
    cfg: BuildConfig,
    store: Store,
    files: list[str],
    digests: list[str | None],
    parts: dict,
    task: Task,
    total_bytes: int | None,
    checkpoint: Checkpoint,
    progress: Progress,
) -> tuple[int, dict[str, FileFormat]] | None:
    """The rows of the longest run of first inputs the store holds (a build of ``files[:k]`` with the same
    options), placed in the partial output as pass 1's first checkpoint: pass 1 then goes on after them, as a
    resumed build does, and tokenizes only the other inputs. Only where that is provably what a fresh build
    writes: the local engine; the preflight sample (the first records, which settle the processor's shortcuts
    and the hazards) lies inside the stored inputs; the same encoding shortcut applies (input size); no
    --strict, and no reject limit the stored rejects could reach wherever it is checked (else a build that
    meets one is built again from the start: ``_NotProvablyExact``). Returns how many inputs, and their formats:
    the record stream starts after them, without reading them (None: pass 1 reads everything)."""
    if cfg.engine is not EngineName.local or cfg.strict or len(files) < 2 or parts["inputs"] != digests:
        return None  # (a pinned Hub input is keyed by its identity, not by its files' digests)
    offsets = total_bytes is None or total_bytes >= SMALL_INPUT_BYTES
    for k in range(len(files) - 1, 0, -1):
        head = _input_bytes(files[:k])
        if (head is None or head >= SMALL_INPUT_BYTES) != offsets:
            continue
        prefix = _store(cfg, files[:k], {**parts, "inputs": parts["inputs"][:k]}, None, progress)[1]
        entry = store.lookup(prefix)
        if entry is None or entry.meta["task"] != task.value:
            continue
        done = PassOne.from_json(entry.meta["pass_one"])
        if done.counts.read < cfg.preflight_records or not _limits_met_anywhere(cfg, done.counts):
            continue
        found = {f: FileFormat(*v) for f, v in entry.meta["found"].items()}
        if any(f not in found for f in files[:k]):
            continue
        placed = entry.place(checkpoint.path, progress.log)
        if placed is None:
            return None
        checkpoint.adopt(
            [(p, n) for p, (_, n) in zip(placed, entry.segments)], done, _spill_lengths(placed) if cfg.pack else None
        )
        progress.log(
            f"store: the rows of the first {k} of {len(files)} inputs ({done.counts.read:,} records) come from the "
            f"tokenized store (entry {entry.key[:12]}): reading, rendering and tokenizing only the rest"
        )
        return k, found
    return None


def _limits_met_anywhere(cfg: BuildConfig, counts: Counts) -> bool:
    """No reject limit is reached at any record, whichever records pass 1 checks it after: a build that
    takes its first inputs' rows from the store checks at other records than a fresh build does."""
    if counts.rejected == 0:
        return True
    if cfg.max_rejects is not None and counts.rejected > cfg.max_rejects:
        return False
    return counts.rejected <= cfg.max_reject_rate * MIN_RECORDS_FOR_RATE  # no rate above it once it is checked


def _spill_lengths(placed: list[Path]) -> list[list[np.ndarray]]:
    """Each spill segment's rows' lengths, per batch (what --pack's placement needs), from the lists' offsets."""
    per_segment = []
    for path in placed:
        with pa.OSFile(str(path), "rb") as source:
            reader = pa.ipc.open_file(source)
            batches = (reader.get_batch(i).column(0) for i in range(reader.num_record_batches))
            per_segment.append([list_lengths(col).astype(np.int32) for col in batches])
    return per_segment


def _from_store(entry: Entry, checkpoint: Checkpoint, progress: Progress) -> list[Path] | None:
    """The entry's spill segments placed in the partial output and checked (None: a resumed build goes on
    from its own checkpoint, or the entry was damaged and pass 1 runs)."""
    if checkpoint.resumed:
        return None
    return entry.place(checkpoint.path, progress.log)


def _pass_one_stored(state: _BuildState, checkpoint: Checkpoint, progress: Progress):
    """Pass 1 as the store kept it: its counts, hazards and formats; the placed segments checkpointed as done."""
    entry, placed = state.stored
    meta = entry.meta
    done = PassOne.from_json(meta["pass_one"])
    per_segment = _spill_lengths(placed) if state.cfg.pack else None  # all that --pack's placement needs
    checkpoint.adopt([(p, n) for p, (_, n) in zip(placed, entry.segments)], done, per_segment)
    lengths = [x for seg in per_segment for x in seg] if per_segment is not None else []
    hazards = [Hazard(**h) for h in meta["hazards"]]
    found = {f: FileFormat(*v) for f, v in meta["found"].items()}
    limit = entry.record["parts"]["length_limit"]["max_length"]
    progress.log(
        f"store: reading, rendering and tokenizing skipped: pass 1's {done.counts.written:,} rows and "
        f"{done.counts.rejected + done.counts.dropped:,} rejects of {done.counts.read:,} records come from the tokenized "
        f"store (entry {entry.key[:12]}: same inputs, tokenizer, template and options but the layout's; "
        f"its length limit {limit} and --truncation are in its key)"
    )
    return done, lengths, hazards, found


def _keep_pass_one(state: _BuildState, checkpoint: Checkpoint, done: PassOne, hazards: list[Hazard], found) -> None:
    """Pass 1's spill, rejects and counts kept in the store, for a later build that changes only the layout."""
    if state.store is None or state.store_parts is None or any(s.pieces for s in checkpoint.segments):
        return  # (rows Ray workers spilled are where the cluster reads them, not in this process's segments)
    meta = {
        "pass_one": done.to_json(),
        "hazards": [h.as_json() for h in hazards],
        "found": {f: [v.format, v.origin] for f, v in found.items()},
        "task": state.task.value,
        "stop_signal": state.stop_signal,
        "pad_id": state.bundle.pad_id,
    }
    segments = [(checkpoint.path / s.file, s.batches) for s in checkpoint.segments]
    if state.store.put(state.store_parts, segments, checkpoint.path / REJECTS, meta):
        progress_log = state.store.log
        progress_log(f"store: pass 1's rows kept in {state.store.root} for builds that change only the layout")


def _engine(
    cfg: BuildConfig,
    bundle: TokenizerBundle,
    processor: Processor,
    files: list[str],
    digests: list[str | None],
    formats: FormatOptions,
    found: dict[str, FileFormat],
    total_bytes: int | None,
    progress: Progress,
    resume: Position | None = None,
    spill_to: str | None = None,
) -> Engine:
    """The engine ``--engine`` names: this machine's processes (as ``--workers`` plans), or Ray (``spill_to``: where
    its workers write their rows themselves, when pass 2 runs on the cluster)."""
    if cfg.engine is EngineName.ray:
        from padprep.run.ray_engine import RayEngine  # imports ray: only when asked for

        where = dataclasses.asdict(resume) if resume is not None else None
        return RayEngine(bundle, files, formats, found, cfg.ray_address, progress, dict(zip(files, digests)), where, spill_to)
    return LocalEngine(plan_workers(cfg.workers, total_bytes), bundle, processor)


def _preflight_stage(
    cfg: BuildConfig,
    bundle: TokenizerBundle,
    processor: Processor,
    sample: list[RawRecord],
    progress: Progress,
    template_origin: str | None,
) -> tuple[Processor, ChunkResult | None, list[Hazard]]:
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
        hazards.append(
            Hazard(
                "fast_spans_disagree",
                "header-scan spans differ from the template's own on the "
                "preflight sample: the template's boundaries are used for the whole run",
                handled=True,
            )
        )
    if not encoding_agrees(processor, convs):
        changes.update(byte_offsets=False, skip_normalizer=False, reuse_segments=False)
        hazards.append(
            Hazard(
                "fast_encoding_disagree",
                "ids or offsets from padprep's shortcuts (offsets from the tokens' "
                "bytes, the normalizer skipped on text it leaves unchanged) differ from the tokenizer's own on "
                "the preflight sample: the tokenizer is used as it is for the whole run",
                handled=True,
            )
        )
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
        progress.log(
            f"--reasoning {cfg.reasoning.value}: think blocks are {markers[0]} ... {markers[1]} (probed from the template)"
        )


def _input_bytes(files: list[str]) -> int | None:
    """Total size of the inputs on disk (None with standard input or a URL, whose size is not known ahead)."""
    if any(f == STDIN or is_remote(f) for f in files):
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


def _limit_name(cfg: BuildConfig) -> str:
    """Where the longest row's limit came from, as drop reasons name it: a user who gave --buckets alone
    never gave --max-length."""
    if cfg.max_length is None and cfg.buckets is not None:
        return "the largest bucket of --buckets"
    return "--max-length"


def _task(
    cfg: BuildConfig,
    files: list[str],
    formats: FormatOptions,
    file_formats: dict[str, FormatOptions],
    progress: Progress,
) -> Task:
    """``--task``, else preference when the inputs hold pairs (each file judged by its first record of a known
    shape); SFT and pair files do not mix in one build."""
    if Task(cfg.task) is not Task.auto:
        return Task(cfg.task)
    if formats.format is not None:
        return Task.preference if formats.format == "preference" else Task.sft
    kinds = {}
    for f in files:
        if f == STDIN:
            continue  # read once only: judged by the other inputs (--task preference for pairs on stdin)
        found: dict[str, FileFormat] = {}
        kinds[f] = detect_file_format(f, file_formats.get(f, formats), found, lambda m: None).format == "preference"
    if any(kinds.values()) and not all(kinds.values()):
        pairs = next(f for f, p in kinds.items() if p)
        other = next(f for f, p in kinds.items() if not p)
        raise BuildFailed(f"{pairs} holds preference pairs but {other} does not: build them separately", EXIT_USAGE)
    task = Task.preference if kinds and all(kinds.values()) else Task.sft
    if task is Task.preference:
        progress.log("task: preference pairs (the records hold `chosen` and `rejected`): prompt_ids / chosen_ids / rejected_ids")
    return task


def _mixture(cfg: BuildConfig, selection: Selection, counts: Counts) -> dict:
    """The manifest's record of a recipe side: the recipe, the seed, and per source what was drawn and written."""
    return {
        "side": selection.side,
        "recipe_sha256": cfg.recipe_sha256,
        "sources": selection.of_source(dict(counts.per_file), dict(counts.per_file_tokens)),
    }


def _template(
    cfg: BuildConfig,
    bundle: TokenizerBundle,
    files: list[str],
    formats: FormatOptions,
    file_formats: dict[str, FormatOptions] | None = None,
) -> tuple[str | None, str | None]:
    """The chat template, or None when there is none and the inputs are raw text that needs none."""
    try:
        return resolve_template(cfg.chat_template, bundle.chat_template)
    except TemplateError:
        per_file = file_formats or {}
        if cfg.chat_template is None and not any(_needs_template(f, per_file.get(f, formats)) for f in files):
            return None, None
        raise


def _needs_template(path: str, formats: FormatOptions) -> bool:
    """Whether a file's records (judged by its first one of a known shape) go through a chat template."""
    if formats.format == "text":
        return False
    if path == STDIN or (is_remote(path) and is_columnar(path)):
        return True  # cannot be read twice, or only whole: assume chat
    records = with_formats(path, read_records(path), formats, {})
    try:
        first = next((r for r in records if r.format is not None), None)
    finally:
        records.close()
    return first is None or needs_chat_template(first.text_of(), first.format, formats.fields)


def _preflight(bundle, processor: Processor, sample, convs, cfg: BuildConfig, progress: Progress, template_origin):
    """The sample processed (its rows are the build's first) and the hazards it shows."""
    result = processor.process(sample)
    broken = next((r for r in result.rejects if r.code == "template_limit"), None)
    if broken is not None:  # the template, not the data: every record would pay for it
        raise BuildFailed(
            f"the chat template ({template_origin}) went past a limit on the preflight sample, at {broken.describe()}; "
            "fix or replace the template"
        )
    hazards = tokenizer_hazards(bundle, processor, result) + stats_hazards(result.stats)
    hazards += unrendered_field_hazards(processor, convs, template_origin)
    for h in hazards:
        progress.log(f"preflight: {h.code}: {h.message}" + (f" [{h.count}]" if h.count else ""))
    if processor.options.template is not None and processor.options.train_on is not TrainOn.all:
        progress.log(f"stop signal: {processor.stop_signal}")
    if cfg.strict and hazards:
        raise BuildFailed(
            f"--strict: preflight found {len(hazards)} hazard(s), first: {hazards[0].code}: {hazards[0].message}", EXIT_HAZARD
        )
    return result, hazards


def _merge_hazards(preflight: list[Hazard], whole_run: list[Hazard]) -> list[Hazard]:
    """Counts from the whole run replace the preflight sample's counts for the same hazard."""
    by_code = {h.code: h for h in preflight}
    by_code.update({h.code: h for h in whole_run})
    return list(by_code.values())


def _pass_one(
    results: Iterator[FlatResult],
    cfg: BuildConfig,
    checkpoint: Checkpoint,
    progress: Progress,
    pairs: bool,
    stream: RecordStream,
    engine: Engine,
    files: list[str],
) -> tuple[PassOne, list[np.ndarray]]:
    """Spill every row, write every reject, count everything, checkpointing as it goes (``checkpoint.py``);
    lengths go to the histogram (and, with --pack, to one int32 array per spilled batch, in spill order: all
    that placement needs). ``results`` come in input order; a resumed build's counts go on from its checkpoint.
    Each row is spilled with its source: its input's index in ``files`` (the manifest's inputs) and its line."""
    done = checkpoint.done
    input_index = {f: i for i, f in enumerate(files)}
    lengths: list[np.ndarray] = checkpoint.lengths()
    schema = PAIR_SCHEMA if pairs else SCHEMA
    every = _checkpoint_seconds()
    with open(checkpoint.path / REJECTS, "a", encoding="utf-8") as rejects_fh:
        rejects = RejectLog(rejects_fh, progress.log, done.counts)
        counts, stats, histogram = done.counts, done.stats, done.histogram
        segment, last = _SpillSegment(checkpoint.next_segment(), schema), time.monotonic()
        for result in results:
            stats.add(result.stats)
            counts.read += result.stats.records
            for reject in result.rejects:
                rejects.add(reject)
            rows = result.rows
            if len(rows.lengths):
                histogram.update(rows.lengths.tolist())
                if cfg.pack:
                    segment.lengths.append(rows.lengths.astype(np.int32))
                counts.written += len(rows.lengths)
                if not getattr(rows, "spilled", False):  # (a Ray worker that spilled them sent their lengths only)
                    inputs = input_indices(rows, input_index)
                    segment.write(spill_pairs(rows, inputs) if pairs else spill_batch(rows, inputs))
            counts.per_file.update(rows.per_file)
            counts.per_file_tokens.update(rows.per_file_tokens)
            check_limits(cfg, counts, final=False)
            progress.advance(result.stats.records, int(rows.lengths.sum()))
            if time.monotonic() - last >= every and (where := engine.position()) is not None:
                lengths += segment.close_into(
                    checkpoint,
                    rejects_fh,
                    done,
                    Position(counts.read, bytes_read=stream.bytes_read(), **where),
                    cfg.pack,
                    engine.take_spilled(),
                )
                segment, last = _SpillSegment(checkpoint.next_segment(), schema), time.monotonic()
        where = engine.position()
        lengths += segment.close_into(
            checkpoint,
            rejects_fh,
            done,
            Position(counts.read, bytes_read=stream.bytes_read(), **(where or {})),
            cfg.pack,
            engine.take_spilled(),
        )
    return done, lengths


def _checkpoint_seconds() -> float:
    """How often pass 1 checkpoints: ``PADPREP_CHECKPOINT_SECONDS`` (default 10; 0: after every chunk)."""
    try:
        return max(0.0, float(os.environ.get("PADPREP_CHECKPOINT_SECONDS", "10")))
    except ValueError:
        return 10.0


class _SpillSegment:
    """One segment of the spill (an Arrow IPC file) being written, and its rows' lengths (--pack)."""

    def __init__(self, path: Path, schema: pa.Schema):
        self.path = path
        self._sink = pa.OSFile(str(path), "wb")
        self._writer = pa.ipc.new_file(self._sink, schema)  # a file, not a stream: pass 2 may read it in parts
        self.batches = 0
        self.lengths: list[np.ndarray] = []

    def write(self, batch: pa.RecordBatch) -> None:
        self._writer.write_batch(batch)
        self.batches += 1

    def close_into(
        self, checkpoint: Checkpoint, rejects_fh, done: PassOne, position: Position, pack: bool, pieces: list[dict]
    ) -> list[np.ndarray]:
        """Close the segment and checkpoint it, with the pieces Ray workers spilled since the last checkpoint (an
        empty segment is removed, unless it is the only state there is or pieces were spilled)."""
        self._writer.close()
        self._sink.close()
        if self.batches == 0 and not pieces and checkpoint.segments:
            self.path.unlink()
        else:
            checkpoint.add_segment(self.path, self.batches, rejects_fh, position, done, self.lengths if pack else None, pieces)
        return self.lengths


def _bounds(cfg: BuildConfig, histogram: Counter) -> list[int]:
    if cfg.buckets is not None:
        return explicit_bounds(cfg.buckets, cfg.pad_to_multiple_of)
    return optimal_bounds(histogram, cfg.pad_to_multiple_of)


def _placement(lengths: np.ndarray, capacity: int, progress: Progress) -> Placement:
    started = time.perf_counter()
    placement = best_fit_decreasing(lengths, capacity)
    fill = int(lengths.sum()) / (placement.bins * capacity) if placement.bins else 0.0
    progress.log(
        f"packing: {len(lengths):,} sequences into {placement.bins:,} rows of {capacity:,} tokens "
        f"({fill:.2%} full) in {time.perf_counter() - started:.2f}s"
    )
    return placement


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


def _manifest(
    state: _BuildState,
    counts: Counts,
    stats: ChunkStats,
    histogram: Counter,
    bounds: list[int],
    written: list[WrittenShard],
    hazards: list[Hazard],
    found: dict[str, FileFormat] | None = None,
) -> Manifest:
    """Everything needed to know what was built from what: options, fingerprints, per-shard counts."""
    cfg, bundle, template, template_origin = state.cfg, state.bundle, state.template, state.template_origin
    files, digests, key = state.files, state.digests, state.key
    shards = [ShardEntry.of(w) for w in written]
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
            "stop_signal": state.stop_signal,
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
            "unbucketed_padding_fraction": padding_of(histogram, [longest]) / (longest * counts.written)
            if counts.written
            else 0.0,
            "realigned_boundaries": stats.realigned,
            "replies_masked_by_flag": stats.masked_by_flag,
            "messages_trained_by_flag": stats.trained_by_flag,
            "rows_with_fractional_weights": stats.weighted_rows,
            "think_blocks_masked": stats.think_masked,
            "stop_tokens_trained": stats.stop_trained,
            "eos_appended_after_last_reply": stats.eos_appended,
        },
        hazards=[h.as_json() for h in hazards],
    )
