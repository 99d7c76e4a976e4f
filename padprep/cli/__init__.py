"""The ``padprep`` command line: ``build`` and ``inspect``.

Exit codes: 0 success; 1 the build or check failed (bad input, template error, verify breach);
2 usage error (bad option, missing file, output exists); 3 ``--strict`` preflight hazard;
130 interrupted.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Iterator, List, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, TextColumn, TimeElapsedColumn
from rich.progress import Progress as RichProgress

from padprep import __version__
from padprep.cli.help import App, show_all
from padprep.config import (
    DEFAULT_MAX_REJECT_RATE,
    BuildConfig,
    EngineName,
    InputFormat,
    PaddingSide,
    Reasoning,
    SpanMethod,
    Task,
    TrainOn,
    Truncation,
)
from padprep.input.read import as_input
from padprep.run.progress import Throughput, format_duration

app = App(
    add_completion=False,
    no_args_is_help=True,
    help="Chat / instruction data -> tokenized, label-masked, length-bucketed, padded Arrow shards.",
)

from padprep.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE  # noqa: E402  (the codes have one owner)


def _console(stderr: bool = False) -> Console:
    return Console(stderr=stderr, highlight=False, soft_wrap=True)


def _int_list(value: Optional[str]) -> Optional[tuple[int, ...]]:
    if value is None:
        return None
    try:
        return tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise typer.BadParameter("expected comma-separated integers, e.g. 256,512,1024", param_hint="'--buckets'") from None


def _pairs(value: Optional[str], option: str) -> tuple[tuple[str, str], ...]:
    """``a=b,c=d`` -> (("a", "b"), ("c", "d"))."""
    if not value:
        return ()
    out = []
    for item in value.split(","):
        if not item.strip():
            continue
        key, sep, target = item.partition("=")
        if not sep or not key.strip() or not target.strip():
            raise typer.BadParameter(
                f"expected FROM=TO pairs separated by commas, e.g. bot=assistant,char=user; got {item!r}", param_hint=option
            )
        out.append((key.strip(), target.strip()))
    return tuple(out)


# ``padprep build --help`` groups its options in these panels, in this order.
_INPUT = "Input"
_LABELS = "Tokenizer, template and labels"
_LAYOUT = "Layout"
_PERFORMANCE = "Performance"
_OUTPUT = "Output and bad input"


_BUILD_EPILOG = (
    "Field renames (--messages-field KEY ...) and tuning (--workers, --engine ray, ...): --help-all; "
    "every option with its default: docs/cli.md."
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"padprep {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """padprep: SFT data preparation, exact to the token."""


@app.command(options_metavar="-t TOKENIZER -o DIR [OPTIONS]", epilog=_BUILD_EPILOG)
def build(
    ctx: typer.Context,
    inputs: Optional[List[str]] = typer.Argument(
        None,
        metavar="INPUTS...",
        help="Files, globs, directories, URLs; - for stdin.",
        show_default=False,
        rich_help_panel=_INPUT,
    ),
    recipe: Optional[Path] = typer.Option(
        None, metavar="FILE", help="A mixture (YAML) to build instead of INPUTS.", rich_help_panel=_INPUT
    ),
    split: str = typer.Option("train", metavar="NAME", help="Split of an hf:// dataset.", rich_help_panel=_INPUT),
    input_format: InputFormat = typer.Option(
        InputFormat.auto, "--format", help="Record format (auto: detected per file).", show_default=False, rich_help_panel=_INPUT
    ),
    task: Task = typer.Option(
        Task.auto,
        help="SFT rows or DPO pairs (auto: as records are).",
        show_default=False,
        rich_help_panel=_INPUT,
    ),
    role_map: Optional[str] = typer.Option(
        None, metavar="FROM=TO,...", help="Rename roles, e.g. bot=assistant,char=user.", rich_help_panel=_INPUT
    ),
    append_eos: bool = typer.Option(
        True,
        help="No eos after text rows, nor after a last reply no stop token follows (a template with no end of turn).",
        rich_help_panel=_INPUT,
    ),
    messages_field: str = typer.Option(
        "messages", metavar="KEY", help="Key of the message list (messages).", rich_help_panel=_INPUT, hidden=True
    ),
    conversations_field: str = typer.Option(
        "conversations", metavar="KEY", help="Key of the turn list (sharegpt).", rich_help_panel=_INPUT, hidden=True
    ),
    system_field: str = typer.Option(
        "system", metavar="KEY", help="Key of the system prompt (sharegpt, alpaca).", rich_help_panel=_INPUT, hidden=True
    ),
    tools_field: str = typer.Option("tools", metavar="KEY", help="Key of the tool schemas.", rich_help_panel=_INPUT, hidden=True),
    instruction_field: str = typer.Option(
        "instruction", metavar="KEY", help="Key of the instruction (alpaca).", rich_help_panel=_INPUT, hidden=True
    ),
    input_field: str = typer.Option(
        "input", metavar="KEY", help="Key of the optional input (alpaca).", rich_help_panel=_INPUT, hidden=True
    ),
    output_field: str = typer.Option(
        "output", metavar="KEY", help="Key of the reply (alpaca).", rich_help_panel=_INPUT, hidden=True
    ),
    history_field: str = typer.Option(
        "history", metavar="KEY", help="Key of earlier (prompt, reply) pairs (alpaca).", rich_help_panel=_INPUT, hidden=True
    ),
    prompt_field: str = typer.Option(
        "prompt", metavar="KEY", help="Key of the prompt (prompt-completion).", rich_help_panel=_INPUT, hidden=True
    ),
    completion_field: str = typer.Option(
        "completion", metavar="KEY", help="Key of the completion (prompt-completion).", rich_help_panel=_INPUT, hidden=True
    ),
    text_field: str = typer.Option("text", metavar="KEY", help="Key of the text (text).", rich_help_panel=_INPUT, hidden=True),
    tokenizer: Optional[str] = typer.Option(
        None,
        "--tokenizer",
        "-t",
        metavar="TOKENIZER",
        help="tokenizer.json, its directory, or a hub id.",
        rich_help_panel=_LABELS,
    ),
    chat_template: Optional[str] = typer.Option(
        None, metavar="NAME|FILE", help="Built-in chatml or llama3, or a Jinja file.", rich_help_panel=_LABELS
    ),
    pad_token: Optional[str] = typer.Option(
        None, metavar="TEXT", help="Pad token (default: the tokenizer's, else eos).", rich_help_panel=_LABELS
    ),
    train_on: TrainOn = typer.Option(
        TrainOn.assistant,
        help="Train every reply (default), the last, or all.",
        show_default=False,
        rich_help_panel=_LABELS,
    ),
    reasoning: Reasoning = typer.Option(
        Reasoning.train,
        help="Think blocks: trained (default), masked when empty, or masked.",
        show_default=False,
        rich_help_panel=_LABELS,
    ),
    span_method: SpanMethod = typer.Option(
        SpanMethod.auto,
        help="auto: header scan where preflight proves it exact; template: prefix renders.",
        rich_help_panel=_LABELS,
        hidden=True,
    ),
    max_length: Optional[int] = typer.Option(None, metavar="N", help="Longest row, in tokens.", rich_help_panel=_LAYOUT),
    truncation: Truncation = typer.Option(
        Truncation.drop,
        help="Longer rows: drop (default), cut right or left.",
        show_default=False,
        rich_help_panel=_LAYOUT,
    ),
    pack: bool = typer.Option(False, "--pack", help="Pack conversations into rows of --max-length.", rich_help_panel=_LAYOUT),
    buckets: Optional[str] = typer.Option(
        None, metavar="N,N,...", help="Bucket bounds (default: padding under 2.5%).", rich_help_panel=_LAYOUT
    ),
    padded_pairs: bool = typer.Option(
        False,
        "--padded-pairs",
        help="DPO pairs as padded chosen_ / rejected_ rows.",
        rich_help_panel=_LAYOUT,
    ),
    pad_to_multiple_of: int = typer.Option(
        1, metavar="N", help="Round bucket lengths up to a multiple of N.", show_default=False, rich_help_panel=_LAYOUT
    ),
    padding_side: PaddingSide = typer.Option(
        PaddingSide.right, help="right to train (default), left to generate.", show_default=False, rich_help_panel=_LAYOUT
    ),
    shard_tokens: int = typer.Option(
        1 << 20, metavar="N", help="Padded tokens per shard, at most.", rich_help_panel=_LAYOUT, hidden=True
    ),
    seed: Optional[int] = typer.Option(
        None, metavar="N", help="Shuffle rows within shards (default: in order).", rich_help_panel=_LAYOUT
    ),
    workers: int = typer.Option(
        0,
        metavar="N",
        help="Worker processes; 0: one per core (one process under 4 MiB of input).",
        rich_help_panel=_PERFORMANCE,
        hidden=True,
    ),
    engine: EngineName = typer.Option(
        EngineName.local,
        help="local processes, or ray tasks (pip install 'padprep[ray]'); same bytes.",
        rich_help_panel=_PERFORMANCE,
        hidden=True,
    ),
    ray_address: Optional[str] = typer.Option(
        None,
        envvar="RAY_ADDRESS",
        metavar="ADDR",
        help="--engine ray: the cluster to join (default: RAY_ADDRESS, else a local one).",
        rich_help_panel=_PERFORMANCE,
        hidden=True,
    ),
    cache_dir: Optional[Path] = typer.Option(
        None,
        envvar="PADPREP_CACHE_DIR",
        metavar="DIR",
        help="The tokenized store (default: ~/.cache/padprep/store).",
        rich_help_panel=_PERFORMANCE,
        hidden=True,
    ),
    no_cache: bool = typer.Option(
        False, "--no-cache", help="Neither use nor fill the tokenized store.", rich_help_panel=_PERFORMANCE, hidden=True
    ),
    output: Path = typer.Option(
        ..., "--output", "-o", metavar="DIR", help="Output directory (written atomically).", rich_help_panel=_OUTPUT
    ),
    overwrite: bool = typer.Option(False, help="Replace an existing output of padprep's.", rich_help_panel=_OUTPUT),
    force: bool = typer.Option(False, help="Rebuild even when the output is up to date.", rich_help_panel=_OUTPUT),
    fresh: bool = typer.Option(False, help="Start over instead of resuming.", rich_help_panel=_OUTPUT),
    strict: bool = typer.Option(False, help="Fail on any hazard or rejected record.", rich_help_panel=_OUTPUT),
    max_rejects: Optional[int] = typer.Option(
        None, metavar="N", help="Fail when more records are rejected.", rich_help_panel=_OUTPUT
    ),
    max_reject_rate: float = typer.Option(
        DEFAULT_MAX_REJECT_RATE, metavar="F", help="Fail above this share rejected.", rich_help_panel=_OUTPUT
    ),
    allow_empty: bool = typer.Option(False, help="Succeed when no row is written.", rich_help_panel=_OUTPUT),
    export_to: Optional[List[str]] = typer.Option(
        None,
        "--export",
        metavar="FORMAT:DEST",
        help="Then export the build for a trainer, as padprep export does (repeatable; docs/exports.md).",
        rich_help_panel=_OUTPUT,
    ),
    help_all: bool = typer.Option(
        False,
        "--help-all",
        is_eager=True,
        expose_value=False,
        callback=show_all,
        help="Show every option (field renames, tuning too).",
    ),
) -> None:
    """Render, tokenize, mask, bucket, pad and write INPUTS as Arrow shards in DIR.

    \b
    padprep build data/*.jsonl -t Qwen/Qwen3-8B -o shards/
    padprep build --recipe mix.yaml -o shards/
    """
    from padprep.run.padproc import PadProcess

    # Forked first: pass 2's process imports torch (1.4 s) while this one starts the build.
    with PadProcess.for_engine(engine) as pad:
        from padprep.run.pipeline import build as run_build

        err = _console(stderr=True)
        given_fields = {
            "messages": messages_field,
            "conversations": conversations_field,
            "system": system_field,
            "tools": tools_field,
            "instruction": instruction_field,
            "input": input_field,
            "output": output_field,
            "history": history_field,
            "prompt": prompt_field,
            "completion": completion_field,
            "text": text_field,
        }
        options = dict(
            tokenizer=tokenizer,
            output=output,
            chat_template=chat_template,
            pad_token=pad_token,
            train_on=train_on,
            span_method=span_method,
            max_length=max_length,
            truncation=truncation,
            pack=pack,
            buckets=_int_list(buckets),
            pad_to_multiple_of=pad_to_multiple_of,
            padding_side=padding_side,
            shard_tokens=shard_tokens,
            seed=seed,
            overwrite=overwrite,
            force=force,
            fresh=fresh,
            strict=strict,
            workers=workers,
            input_format=input_format,
            role_map=_pairs(role_map, "--role-map"),
            field_names=tuple((k, v) for k, v in given_fields.items() if v != k),
            append_eos=append_eos,
            max_rejects=max_rejects,
            max_reject_rate=max_reject_rate,
            allow_empty=allow_empty,
            reasoning=reasoning,
            engine=engine,
            ray_address=ray_address,
            split=split,
            task=task,
            padded_pairs=padded_pairs,
            cache_dir=cache_dir,
            no_cache=no_cache,
        )
        exports = _export_targets(export_to, err)
        if recipe is not None:
            _build_recipe(ctx, recipe, inputs, options, pad, err)
            _export_after(exports, output, overwrite, err)
            return
        if not inputs:
            _fail(err, "no INPUTS: give files, globs, directories or URLs to build, or --recipe RECIPE.yaml", EXIT_USAGE)
        if not tokenizer:
            _fail(err, "--tokenizer is required (a tokenizer.json, a directory holding it, or a hub id)", EXIT_USAGE)
        try:
            cfg = BuildConfig(inputs=tuple(as_input(i) for i in inputs), **options)
        except ValueError as exc:
            _fail(err, str(exc), EXIT_USAGE)
        started = time.monotonic()
        result = _run(err, lambda progress: run_build(cfg, progress, pad))
        _print_result(result, output, time.monotonic() - started)
        _export_after(exports, output, overwrite, err)


def _export_targets(given: Optional[List[str]], err: Console) -> list[tuple[str, Path]]:
    """``--export FORMAT:DEST`` values, checked before the build starts."""
    from padprep.output.export import FORMATS

    targets = []
    for value in given or ():
        fmt, sep, dest = value.partition(":")
        if not sep or not dest or fmt not in FORMATS:
            _fail(err, f"--export {value!r}: expected FORMAT:DEST, FORMAT one of {', '.join(FORMATS)}", EXIT_USAGE)
        targets.append((fmt, Path(dest)))
    return targets


def _export_after(targets: list[tuple[str, Path]], output: Path, overwrite: bool, err: Console) -> None:
    from padprep.output.export import export as run_export

    for fmt, dest in targets:
        started = time.monotonic()
        result = _run(err, lambda progress: run_export(output, fmt, dest, overwrite))
        _print_export(result, dest, fmt, time.monotonic() - started)


def _run(err: Console, work):
    """``work(progress)`` with progress on stderr; a failure is one line and its exit code, never a traceback."""
    from padprep.errors import PadprepError

    try:
        with _sigterm_as_interrupt(), _progress(err) as progress:
            return work(progress)
    except PadprepError as exc:
        _fail(err, str(exc), exc.exit_code)
    except OSError as exc:  # permissions, a full disk, a file that vanished mid-build: nothing is left behind
        _fail(err, f"{_os_error(exc)}; no output written", EXIT_FAILED)
    except KeyboardInterrupt:
        # a build stopped before its first checkpoint has nothing to resume: the same command starts over (and says so)
        _fail(
            err,
            "interrupted; no output written (run the same command again to resume from the last checkpoint, or to start "
            "over where none was made yet; --fresh to start over)",
            EXIT_INTERRUPTED,
        )


def _print_result(result, output: Path, seconds: float) -> None:
    from padprep.output.summary import print_build_summary

    if result.up_to_date:
        key = result.manifest.build_key
        _console().print(
            f"padprep: {_shown(output)} is up to date (build key {key[:12]}): nothing to do; --force rebuilds", markup=False
        )
        return
    print_build_summary(_console(), result.manifest, seconds, result.resumed_tokens)


def _shown(output: Path) -> str:
    """An output as the user named it: a URL with the ``//`` that ``Path`` folds restored."""
    from padprep.output.location import is_url, url_of

    return url_of(output) if is_url(output) else str(output)


def _build_recipe(ctx: typer.Context, recipe: Path, inputs, options: dict, pad, err: Console) -> None:
    """``build --recipe``: the recipe's options with the flags given on the command line over them."""
    from padprep.errors import PadprepError
    from padprep.recipe.spec import load_recipe
    from padprep.run.mixture import build_recipe, recipe_config

    if inputs:
        _fail(
            err, f"{recipe}: a recipe names its inputs under `sources`: drop the INPUTS arguments ({inputs[0]} ...)", EXIT_USAGE
        )
    given = {
        "field_names" if name.endswith("_field") else name
        for name in ctx.params
        if getattr(ctx.get_parameter_source(name), "name", "") in ("COMMANDLINE", "ENVIRONMENT")
    }
    try:
        spec = load_recipe(recipe)
        cfg = recipe_config(spec, {k: v for k, v in options.items() if k in given or k == "output"})
    except PadprepError as exc:
        _fail(err, str(exc), exc.exit_code)
    result = _run(err, lambda progress: build_recipe(spec, cfg, progress, pad))
    for side, built in result.sides.items():
        _console().print(f"[bold]{side}[/bold]: {_shown(built.output)}")
        _print_result(built, built.output, result.seconds[side])


@app.command()
def inspect(
    output: Path = typer.Argument(..., help="A directory written by padprep build, or its URL (s3://...)."),
    show: int = typer.Option(0, help="Print this many decoded examples, trained tokens highlighted."),
    verify: bool = typer.Option(False, help="Re-check sha256 and invariants of every shard; exit 1 on any breach."),
    as_json: bool = typer.Option(False, "--json", help="Print the statistics as JSON."),
    tokenizer: Optional[str] = typer.Option(
        None, help="Tokenizer for --show and --html (default: the one recorded in the manifest)."
    ),
    html: Optional[Path] = typer.Option(
        None, "--html", help="Write a self-contained HTML label report here (rows, tokens, figures; opens offline)."
    ),
    source: Optional[str] = typer.Option(
        None, "--source", help="Show the rows of one record: FILE:N, as --show and rejects.jsonl name it."
    ),
    bucket: Optional[int] = typer.Option(None, "--bucket", metavar="SEQ_LEN", help="Show rows of this bucket only."),
    row: Optional[str] = typer.Option(
        None, "--row", metavar="SHARD:R|K", help="Show one row: a shard file and its row, or the K-th row (from 0)."
    ),
    grep: Optional[str] = typer.Option(None, "--grep", metavar="REGEX", help="Show rows whose decoded text matches."),
    sample: Optional[int] = typer.Option(
        None, "--sample", metavar="SEED", help="Show N rows drawn at random with this seed, not the first N."
    ),
) -> None:
    """Report what is in OUTPUT's shards; optionally show examples, write an HTML report and verify every invariant."""
    from padprep.errors import PadprepError
    from padprep.output.fetch import local_copy
    from padprep.output.inspection import load_stats, print_stats, rows_json, show_examples, verify_shards
    from padprep.output.selection import RowSelector

    selector = RowSelector(show, bucket, row, source, grep, sample)

    err = _console(stderr=True)
    problems: list[str] = []
    shown = _shown(output)
    try:
        output = local_copy(output, verify=verify)  # an output at a URL: fetched into the local read cache
        stats = load_stats(output, problems if verify else None)
        stats["output"] = shown
        if verify:
            problems += verify_shards(output, stats)
    except PadprepError as exc:
        if verify and getattr(exc, "damaged", False):  # a damaged manifest: the one breach there is to report
            _report_breaches(_console(), [str(exc)], as_json)
        _fail(err, str(exc), exc.exit_code)
    except OSError as exc:
        _fail(err, _os_error(exc), EXIT_FAILED)
    if as_json:
        try:
            rows = {"rows": rows_json(output, stats, selector, tokenizer)} if selector.active else {}
        except PadprepError as exc:
            _fail(err, str(exc), exc.exit_code)
        typer.echo(json.dumps({**stats, **rows, "verify": {"ran": verify, "problems": problems}}, indent=2))
    else:
        out = _console()
        print_stats(out, stats)
        if selector.active:
            try:
                show_examples(out, output, stats, selector, tokenizer)
            except PadprepError as exc:
                _fail(err, str(exc), exc.exit_code)
        if html is not None:
            _write_report(out, err, output, html, tokenizer)
        if verify:
            if problems:
                for p in problems:
                    out.print(f"[red]verify:[/red] {escape(p)}")
            else:
                packed = ", seq_lens, position_ids" if "packed_shards" in stats else ""
                out.print(f"verify: ok ({len(stats['shards'])} shards: sha256, shapes, masks, labels{packed})")
    if problems:
        raise typer.Exit(EXIT_FAILED)


@app.command()
def export(
    output: Path = typer.Argument(..., help="A directory written by padprep build (or a recipe's output: train/ and eval/)."),
    dest: Path = typer.Argument(..., help="Where to write the export (atomically; an earlier export there needs --overwrite)."),
    to: str = typer.Option(
        ..., "--to", help="The format: axolotl, llamafactory, mds, swift, olmo-core, megatron-packed (docs/exports.md)."
    ),
    overwrite: bool = typer.Option(False, help="Replace an earlier export of padprep at DEST."),
) -> None:
    """Write OUTPUT's rows in the pre-tokenized format a trainer reads, from the shards alone (no re-tokenizing)."""
    from padprep.output.export import export as run_export

    err = _console(stderr=True)
    started = time.monotonic()
    result = _run(err, lambda progress: run_export(output, to, dest, overwrite))
    _print_export(result, dest, to, time.monotonic() - started)


def _print_export(result, dest: Path, fmt: str, seconds: float) -> None:
    if result.up_to_date:
        _console().print(
            f"padprep: {dest} is up to date (this build's {fmt} export): nothing to do; --overwrite rewrites it", markup=False
        )
        return
    rows = ", ".join(f"{side} {n:,} rows" for side, n in result.manifest["written"].get("rows", {}).items())
    files = len(result.manifest["files"])
    _console().print(f"export: {dest} ({fmt}: {rows}; {files} files) in {seconds:.1f}s", markup=False)


class _CacheAction(str, Enum):
    list = "list"
    prune = "prune"


@app.command()
def cache(
    action: _CacheAction = typer.Argument(_CacheAction.list, help="list (the default) or prune."),
    cache_dir: Optional[Path] = typer.Option(
        None, envvar="PADPREP_CACHE_DIR", metavar="DIR", help="The store (default: ~/.cache/padprep/store)."
    ),
    max_size: Optional[str] = typer.Option(None, metavar="SIZE", help="prune: down to SIZE, e.g. 5G (default: the bound)."),
    all_entries: bool = typer.Option(False, "--all", help="prune: every entry."),
) -> None:
    """List or prune the tokenized store: pass 1's rows, kept for builds that change only the layout."""
    from padprep.errors import PadprepError
    from padprep.store.store import default_root, listing, parse_size, prune

    err = _console(stderr=True)
    root = cache_dir.expanduser() if cache_dir is not None else default_root()
    try:
        limit = parse_size(max_size) if max_size is not None else None
        lines = listing(root) if action is _CacheAction.list else prune(root, limit, all_entries)
    except ValueError as exc:
        _fail(err, f"--max-size: {exc}", EXIT_USAGE)
    except PadprepError as exc:
        _fail(err, str(exc), exc.exit_code)
    except OSError as exc:
        _fail(err, _os_error(exc), EXIT_FAILED)
    for line in lines:
        typer.echo(line)


def _write_report(out: Console, err: Console, output: Path, dest: Path, tokenizer: Optional[str]) -> None:
    from padprep.errors import PadprepError
    from padprep.output.report import write_report

    try:
        shown = write_report(output, dest, tokenizer)
    except PadprepError as exc:
        _fail(err, str(exc), exc.exit_code)
    except OSError as exc:
        _fail(err, _os_error(exc), EXIT_FAILED)
    cap = " (capped: the page says where)" if shown["capped"] else ""
    out.print(f"report: {dest} ({shown['rows']} rows, {shown['tokens']:,} tokens shown{cap})", markup=False)


def _report_breaches(console: Console, problems: list[str], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps({"verify": {"ran": True, "problems": problems}}, indent=2))
    else:
        for p in problems:
            console.print(f"verify: {p}", markup=False)


def _os_error(exc: OSError) -> str:
    """One line for a filesystem error a user can cause (permissions, a full disk, a vanished file)."""
    where = f"{exc.filename}: " if exc.filename else ""
    return f"{where}{exc.strerror or exc}"


def _fail(console: Console, message: str, code: int):
    console.print(f"padprep: error: {message}", markup=False)
    raise typer.Exit(code)


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM cleans up like Ctrl-C: the temporary output is removed, nothing half-written remains."""

    def handler(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class _ProgressView(Throughput):
    """Draws a build's progress: a Rich bar on a terminal, else a plain line at most every few seconds."""

    PLAIN_EVERY = 5.0

    def __init__(self, console: Console, bar: RichProgress | None):
        super().__init__()
        self.console, self.bar = console, bar
        self.task = bar.add_task("build", total=None, info="") if bar is not None else None
        self.last_line = time.monotonic()

    def log(self, message: str) -> None:
        (self.bar.console if self.bar is not None else self.console).print(message, markup=False)

    def advance(self, records: int, tokens: int) -> None:
        super().advance(records, tokens)
        snap = self.snapshot()
        if self.bar is not None:
            done = f" · {snap.fraction:.0%} · ETA {format_duration(snap.eta_seconds)}" if snap.eta_seconds is not None else ""
            info = (
                f"{snap.records:,} records ({snap.records_per_second:,.0f}/s) · {snap.tokens:,} tokens "
                f"({snap.tokens_per_second:,.0f}/s){done}"
            )
            total = 1.0 if snap.fraction is not None else None
            self.bar.update(self.task, completed=snap.fraction or 0.0, total=total, info=info)
            self.bar.refresh()
        elif time.monotonic() - self.last_line >= self.PLAIN_EVERY:
            self.last_line = time.monotonic()
            self.console.print(snap.line(), markup=False)


@contextmanager
def _progress(console: Console) -> Iterator[_ProgressView]:
    """A Rich progress display on a terminal (redrawn by the build, no thread); plain lines otherwise."""
    if not console.is_terminal:
        yield _ProgressView(console, None)
        return
    bar = RichProgress(
        TextColumn("[bold]build"),
        BarColumn(bar_width=30),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        auto_refresh=False,
    )
    with bar:
        yield _ProgressView(console, bar)


def run(args: Optional[List[str]] = None) -> None:
    """The command line, as ``padprep`` runs it: a usage error (an unknown option, a missing argument, a bad
    value) is one ``padprep: error:`` line and exit 2, like every other failure, not click's usage block."""
    # click's UsageError, reached through typer's public BadParameter: typer 0.2x vendors its own click
    usage_error = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")
    try:
        code = app(args=args, prog_name="padprep", standalone_mode=False)  # not "python -m padprep" in the usage line
    except usage_error as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # ``padprep`` alone: the help, as before
            exc.show()
            sys.exit(exc.exit_code)
        command = exc.ctx.command_path.split()[-1] if exc.ctx is not None and exc.ctx.parent is not None else ""
        where = f"padprep {command} --help" if command else "padprep --help"
        _console(stderr=True).print(f"padprep: error: {exc.format_message()} ({where} lists the options)", markup=False)
        code = exc.exit_code
    except typer.Abort:  # end of input at a prompt
        code = EXIT_INTERRUPTED
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":  # pragma: no cover  (``padprep`` and ``python -m padprep`` start in __main__.py)
    run()
