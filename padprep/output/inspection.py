"""``padprep inspect``: what is in a build's shards, decoded examples, and an invariant check.

Statistics are recomputed from the shards themselves (not copied from the manifest), so a report
always describes the files on disk. For a packed build (``build --pack``) the lengths are those of
the sequences (``seq_lens``), each shard's fill is reported, ``--show`` marks where every sequence
starts, and ``--verify`` checks ``seq_lens`` against ``attention_mask``, ``position_ids`` and the
-100 on each sequence's first label.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
from rich.console import Console
from rich.table import Table
from rich.text import Text

from padprep.errors import EXIT_FAILED, PadprepError
from padprep.layout.shards import file_sha256, read_shard, read_sources
from padprep.output.figures import (
    InspectError,
    find_source,
    frac,
    highlights,
    histogram,
    mixture,
    print_records,
    readable_shards,
    source_text,
    source_unit,
)
from padprep.output.manifest import Manifest, ManifestError, read_manifest
from padprep.output.selection import PickedRow, RowSelector, select_rows
from padprep.schema import IGNORE_INDEX, MANIFEST, REJECTS, SEQ_LENS


def load_manifest(output: Path) -> Manifest:
    """The build's manifest, read and checked by ``manifest.read_manifest`` (a damaged one is an ``InspectError``)."""
    try:
        return read_manifest(Path(output))
    except ManifestError as exc:
        raise InspectError(str(exc), damaged=exc.damaged) from None


def read_listed_shard(output: Path, shard: dict) -> dict[str, np.ndarray]:
    """A shard named by the manifest, or an ``InspectError`` naming the file and what is wrong with it."""
    path = Path(output) / shard["file"]
    try:
        cols = read_shard(path)
    except FileNotFoundError:
        raise InspectError(f"{path}: missing (listed in {MANIFEST})", damaged=True) from None
    except OSError as exc:
        raise InspectError(f"{path}: cannot read ({exc.strerror or exc})", damaged=True) from None
    except (pa.ArrowException, KeyError, ValueError, AttributeError) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InspectError(f"{path}: not a readable shard, truncated or overwritten? ({detail})", damaged=True) from None
    if not (
        cols["input_ids"].shape
        == cols["attention_mask"].shape
        == cols["labels"].shape
        == cols.get("position_ids", cols["labels"]).shape
    ):
        raise InspectError(f"{path}: columns of different shapes", damaged=True)
    if SEQ_LENS in cols and len(cols["seq_lens_offsets"]) != len(cols["input_ids"]) + 1:
        raise InspectError(f"{path}: seq_lens has another number of rows than input_ids", damaged=True)
    return cols


def is_packed(stats_or_manifest: dict) -> bool:
    """Whether the build was written with ``--pack`` (rows of whole sequences, ``seq_lens`` per row)."""
    manifest = stats_or_manifest.get("manifest", stats_or_manifest)
    return bool((manifest.get("options") or {}).get("pack"))


def load_stats(output: Path, problems: list[str] | None = None) -> dict:
    """Totals, per-bucket figures and the length histogram, from the shards on disk.

    A shard that cannot be read raises ``InspectError``, or, when ``problems`` is given, is
    reported there (one line naming the file), left out of the figures and listed in
    ``stats["unreadable"]``.
    """
    manifest = load_manifest(output)
    if manifest.pairs:
        from padprep.output.pair_inspection import pair_stats

        return pair_stats(output, manifest, problems)
    packed = manifest.packed
    listed = [s.to_json() for s in manifest.shards]
    lengths, buckets, unreadable, fills = [], {}, [], []
    for shard, cols in readable_shards(listed, lambda shard: read_listed_shard(output, shard), problems, unreadable):
        row_lengths = cols["attention_mask"].sum(axis=1)
        lengths.append(cols[SEQ_LENS] if packed and SEQ_LENS in cols else row_lengths)
        if packed:
            fills.append(_fill(shard, cols))
        b = buckets.setdefault(
            shard["seq_len"], {"seq_len": shard["seq_len"], "shards": 0, "rows": 0, "real": 0, "pad": 0, "trained": 0}
        )
        b["shards"] += 1
        b["rows"] += int(cols["input_ids"].shape[0])
        b["real"] += int(row_lengths.sum())
        b["pad"] += int(cols["input_ids"].size - row_lengths.sum())
        b["trained"] += int(np.count_nonzero(cols["labels"] != IGNORE_INDEX))
    all_lengths = np.concatenate(lengths) if lengths else np.zeros(0, dtype=np.int64)
    real = sum(b["real"] for b in buckets.values())
    pad = sum(b["pad"] for b in buckets.values())
    trained = sum(b["trained"] for b in buckets.values())
    longest = int(all_lengths.max()) if len(all_lengths) else 0
    baseline_pad = longest * len(all_lengths) - real  # every row (every sequence, when packed) padded to the longest
    totals, recorded = manifest.totals, manifest.to_json()
    rows = sum(b["rows"] for b in buckets.values())
    return {
        "output": str(output),
        "manifest": {
            k: recorded.get(k) for k in ("padprep_version", "options", "tokenizer", "chat_template", "hazards", "packing")
        },
        "records": {k: totals.get(k) for k in ("records_read", "rows_written", "rejected", "dropped", "truncated", "reasons")},
        "totals": {
            "rows": rows,
            **({"sequences": int(len(all_lengths)), "fill": frac(real, real + pad)} if packed else {}),
            "real_tokens": real,
            "pad_tokens": pad,
            "trained_tokens": trained,
            "padding_fraction": frac(pad, real + pad),
            "trained_fraction_of_real": frac(trained, real),
            "unbucketed_padding_fraction": frac(baseline_pad, real + baseline_pad),
        },
        "buckets": [
            {**b, "pad_fraction": frac(b["pad"], b["real"] + b["pad"]), "trained_fraction": frac(b["trained"], b["real"])}
            for _, b in sorted(buckets.items())
        ],
        "length_histogram": histogram(all_lengths),
        "shards": listed,
        **({"packed_shards": fills} if packed else {}),
        "unreadable": unreadable,
        **({"mixture": mixture(manifest.mixture)} if manifest.mixture else {}),
    }


def _print_mixture(console: Console, mixture: dict) -> None:
    table = Table(title=f"mixture ({mixture['side']} side of a recipe)", title_justify="left")
    table.add_column("source", overflow="fold", min_width=16)
    for col in ("read", "sampled", "eval", "train", "rows", "rows %", "tokens", "tokens %"):
        table.add_column(col, justify="right")
    for s in mixture["sources"]:
        path = s.get("path") or []
        table.add_row(
            (path[0] if path else str(s.get("source"))) + (f" (+{len(path) - 1})" if len(path) > 1 else ""),
            f"{s.get('records', 0):,}",
            f"{s.get('sampled', 0):,}",
            f"{s.get('eval', 0):,}",
            f"{s.get('train', 0):,}",
            f"{s.get('rows_written', 0):,}",
            f"{s['row_share']:.1%}",
            f"{s.get('real_tokens', 0):,}",
            f"{s['token_share']:.1%}",
        )
    console.print(table)


def _fill(shard: dict, cols: dict) -> dict:
    """A packed shard's rows, sequences and fill (real tokens / (rows x seq_len)), from the file."""
    ids = cols["input_ids"]
    real = int(cols["attention_mask"].sum())
    sequences = int(len(cols[SEQ_LENS])) if SEQ_LENS in cols else 0
    return {"file": shard["file"], "rows": int(ids.shape[0]), "sequences": sequences, "fill": frac(real, ids.size)}


def print_stats(console: Console, stats: dict) -> None:
    if stats.get("task") == "preference":
        from padprep.output.pair_inspection import print_pair_stats

        print_pair_stats(console, stats)
        if "mixture" in stats:
            _print_mixture(console, stats["mixture"])
        return
    t = stats["totals"]
    print_records(console, stats, "", "written", "truncated")
    if "sequences" in t:
        console.print(
            f"packed: {t['sequences']:,} sequences in {t['rows']:,} rows, fill {t['fill']:.2%} (real tokens / rows x seq_len)"
        )
    console.print(
        f"rows: {t['rows']:,}   tokens: {t['real_tokens']:,} real, {t['pad_tokens']:,} pad "
        f"({t['padding_fraction']:.1%}), {t['trained_tokens']:,} trained ({t['trained_fraction_of_real']:.1%} of real)"
    )
    how, what = ("packed", "sequence") if "sequences" in t else ("bucketed", "row")
    console.print(
        f"padding waste: {t['padding_fraction']:.1%} {how} vs {t['unbucketed_padding_fraction']:.1%} "
        f"if every {what} were padded to the longest"
    )
    table = Table(title="buckets", title_justify="left")
    for col in ("seq_len", "shards", "rows", "real", "pad", "pad %", "trained", "trained %"):
        table.add_column(col, justify="right")
    for b in stats["buckets"]:
        table.add_row(
            str(b["seq_len"]),
            str(b["shards"]),
            f"{b['rows']:,}",
            f"{b['real']:,}",
            f"{b['pad']:,}",
            f"{b['pad_fraction']:.1%}",
            f"{b['trained']:,}",
            f"{b['trained_fraction']:.1%}",
        )
    console.print(table)
    if "packed_shards" in stats:
        _print_fills(console, stats["packed_shards"])
    if "mixture" in stats:
        _print_mixture(console, stats["mixture"])
    hist = stats["length_histogram"]
    if hist:
        console.print("sequence lengths (tokens):" if "sequences" in t else "row lengths (real tokens):")
        top = max(h["rows"] for h in hist) or 1
        for h in hist:
            bar = "#" * max(0, round(40 * h["rows"] / top))
            console.print(f"  {h['from']:>7,}-{h['to']:<7,} {h['rows']:>8,} {bar}", markup=False)
    for hz in stats["manifest"].get("hazards") or []:
        tag = "handled" if hz.get("handled") else "hazard"
        console.print(f"[yellow]{tag}:[/yellow] {hz['code']}: {hz['message']}" + (f" [{hz['count']}]" if hz.get("count") else ""))


_FILL_ROWS = 40  # a longer shard list shows its first and last 20 (--json lists every shard)


def _print_fills(console: Console, fills: list[dict]) -> None:
    table = Table(title="packed shards", title_justify="left")
    for col in ("shard", "rows", "sequences", "fill"):
        table.add_column(col, justify="right")
    shown = fills if len(fills) <= _FILL_ROWS else fills[: _FILL_ROWS // 2] + [None] + fills[-_FILL_ROWS // 2 :]
    for f in shown:
        if f is None:
            lowest = min(fills, key=lambda x: x["fill"])
            table.add_row(f"... {len(fills) - _FILL_ROWS} more", "", "", f"lowest {lowest['fill']:.2%}")
        else:
            table.add_row(f["file"], f"{f['rows']:,}", f"{f['sequences']:,}", f"{f['fill']:.2%}")
    console.print(table)


def load_decoder(stats: dict, tokenizer_spec: str | None):
    """The tokenizer to decode a build's rows: ``tokenizer_spec``, else the one its manifest names."""
    from padprep.chat.tokenizer import TokenizerError, load_tokenizer

    spec = tokenizer_spec or stats["manifest"]["tokenizer"]["source"]
    try:
        return load_tokenizer(spec).tokenizer
    except TokenizerError as exc:
        raise InspectError(f"cannot load the tokenizer to decode examples ({exc}); pass --tokenizer") from None


def pick_rows(output: Path, stats: dict, selector: RowSelector, tok, inputs: list[str]) -> list[PickedRow]:
    """The rows ``selector`` picks (``selection.py``); a record named by ``--source`` with no row says why.
    ``inputs``: the build's input paths, as its manifest lists them."""
    if stats.get("task") == "preference":
        from padprep.output.pair_inspection import read_pair_shard

        def read(shard: dict) -> dict:
            return read_pair_shard(output, shard)

        def text_of(cols: dict, r: int) -> str:
            return "".join(_decode(tok, cols[k][r]) for k in ("prompt_ids", "chosen_ids", "rejected_ids"))
    else:

        def read(shard: dict) -> dict:
            return read_listed_shard(output, shard)

        def text_of(cols: dict, r: int) -> str:
            return _decode(tok, cols["input_ids"][r][cols["attention_mask"][r] == 1])

    picked = select_rows(output, stats, inputs, selector, read, text_of)
    if not picked and selector.source is not None:
        wanted = find_source(inputs, selector.source)
        raise PadprepError(
            f"{selector.source}: no row of {output} came from this record; {_not_written(output, inputs, wanted)}", EXIT_FAILED
        )
    if not picked:
        raise PadprepError(f"no row of {output} matches the selectors given", EXIT_FAILED)
    return picked


def show_examples(console: Console, output: Path, stats: dict, selector: RowSelector, tokenizer_spec: str | None) -> None:
    """Decode the rows ``selector`` picks (``--show N``: the first N), trained / masked / padding visibly distinct,
    each headed by the record it came from."""
    tok = load_decoder(stats, tokenizer_spec)
    inputs = [i["path"] for i in load_manifest(output).inputs]
    picked = pick_rows(output, stats, selector, tok, inputs)
    if stats.get("task") == "preference":
        from padprep.output.pair_inspection import show_pairs

        return show_pairs(console, tok, picked, inputs)
    color = highlights(console)
    legend = (
        "[green]trained[/green]  [dim]masked (-100)[/dim]  [on grey23]padding[/on grey23]"
        if color
        else "legend: [[trained]]  masked as plain text  <pad xN> padding"
    )
    console.print(legend, markup=color)
    for p in picked:
        cols, r = p.cols, p.row
        where = "; ".join(source_text(inputs, i, line) for i, line in p.sources) or "source not recorded"
        if SEQ_LENS in cols:
            lens = cols[SEQ_LENS][cols["seq_lens_offsets"][r] : cols["seq_lens_offsets"][r + 1]]
            console.rule(
                f"{p.shard['file']} row {r}: {len(lens)} sequence{'s' * (len(lens) != 1)}, {int(lens.sum()):,} of "
                f"{cols['input_ids'].shape[1]:,} tokens",
                style="dim",
            )
            console.print(f"from {where}", markup=False, style="dim")
            console.print(_render_packed_row(tok, cols, r, lens, color))
        else:
            console.rule(f"{p.shard['file']} row {r}", style="dim")
            console.print(f"from {where}", markup=False, style="dim")
            console.print(_render_row(tok, cols["input_ids"][r], cols["attention_mask"][r], cols["labels"][r], color))


def rows_json(output: Path, stats: dict, selector: RowSelector, tokenizer_spec: str | None) -> list[dict]:
    """``inspect --json`` with ``--show`` or a selector: each picked row decoded, with its source and trained text."""
    tok = load_decoder(stats, tokenizer_spec)
    inputs = [i["path"] for i in load_manifest(output).inputs]
    out = []
    for p in pick_rows(output, stats, selector, tok, inputs):
        row: dict = {"shard": p.shard["file"], "row": p.row, "bucket": p.shard["seq_len"]}
        row["sources"] = [source_text(inputs, i, line) for i, line in p.sources]
        if stats.get("task") == "preference":
            row.update(
                {k.removesuffix("_ids"): _decode(tok, p.cols[k][p.row]) for k in ("prompt_ids", "chosen_ids", "rejected_ids")}
            )
        else:
            ids, mask, labels = (p.cols[k][p.row] for k in ("input_ids", "attention_mask", "labels"))
            row["text"] = _decode(tok, ids[mask == 1])
            trained = (labels != IGNORE_INDEX) & (mask == 1)
            starts = np.flatnonzero(np.diff(np.concatenate(([0], trained.astype(np.int8)))) == 1)
            ends = np.flatnonzero(np.diff(np.concatenate((trained.astype(np.int8), [0]))) == -1) + 1
            row["trained"] = [_decode(tok, ids[a:b]) for a, b in zip(starts, ends)]
        out.append(row)
    return out


def _decode(tok, ids) -> str:
    return tok.decode(np.asarray(ids).tolist(), skip_special_tokens=False)


def _not_written(output: Path, inputs: list[str], wanted: tuple[int, int]) -> str:
    """Why a record has no row: its line in rejects.jsonl (rejected or dropped), or that it was never read."""
    path = inputs[wanted[0]]
    try:
        with open(Path(output) / REJECTS, encoding="utf-8") as fh:
            for line in fh:
                obj = json.loads(line)
                if obj.get("file") == path and wanted[1] == obj.get(source_unit(path)):
                    return f"it was {obj.get('stage', 'rejected')}: {obj.get('code')}: {obj.get('reason')}"
    except (OSError, ValueError):
        pass
    return "rejects.jsonl does not list it either: is N past the file's last record?"


def _render_row(tok, ids: np.ndarray, mask: np.ndarray, labels: np.ndarray, color: bool) -> Text:
    """Runs of trained / masked / padding tokens, each decoded as a whole (so multi-byte text survives)."""
    kind = np.where(mask == 0, 0, np.where(labels != IGNORE_INDEX, 2, 1))
    text = Text()
    start = 0
    for end in list(np.flatnonzero(np.diff(kind)) + 1) + [len(kind)]:
        k, run = int(kind[start]), ids[start:end]
        if k == 0:
            text.append(f"<pad x{len(run)}>", style="on grey23" if color else "")
        else:
            piece = tok.decode(run.tolist(), skip_special_tokens=False)
            if k == 2:
                text.append(piece if color else f"[[{piece}]]", style="green" if color else "")
            else:
                text.append(piece, style="dim" if color else "")
        start = end
    return text


def _render_packed_row(tok, cols: dict, r: int, lens: np.ndarray, color: bool) -> Text:
    """A packed row sequence by sequence, each boundary marked ``<sequence k/n: N tokens>`` on a line of its own."""
    ids, mask, labels = cols["input_ids"][r], cols["attention_mask"][r], cols["labels"][r]
    text, start = Text(), 0
    for k, n in enumerate(lens.tolist()):
        text.append(("\n" if k else "") + f"<sequence {k + 1}/{len(lens)}: {n:,} tokens>\n", style="bold cyan" if color else "")
        text.append_text(_render_row(tok, ids[start : start + n], mask[start : start + n], labels[start : start + n], color))
        start += n
    if start < len(ids):
        text.append("\n")
        text.append_text(_render_row(tok, ids[start:], mask[start:], labels[start:], color))
    return text


def verify_shards(output: Path, stats: dict) -> list[str]:
    """Every breach of the output's invariants, as one line each (empty list: all good)."""
    if stats.get("task") == "preference":
        from padprep.output.pair_inspection import verify_pairs

        return verify_pairs(output, stats)
    problems: list[str] = []
    side = (stats["manifest"].get("options") or {}).get("padding_side", "right")
    packed = is_packed(stats)
    for shard in stats["shards"]:
        if shard["file"] in stats["unreadable"]:  # already reported by load_stats
            continue
        path = Path(output) / shard["file"]
        if file_sha256(path) != shard["sha256"]:
            problems.append(f"{shard['file']}: sha256 differs from the manifest")
        cols = read_listed_shard(output, shard)
        found = _shard_problems(cols, shard, side) + _sources_problems(output, shard, cols)
        if packed != (SEQ_LENS in cols):
            found.append("a packed shard in a bucketed build" if not packed else "no seq_lens / position_ids in a packed build")
        elif packed:
            found += _packed_problems(cols, shard)
        problems += [f"{shard['file']}: {p}" for p in found]
    return problems


def _sources_problems(output: Path, shard: dict, cols: dict) -> list[str]:
    """The sidecar: its sha256, and one source for every sequence of every row, in order."""
    if not shard.get("sources"):
        return []
    path = Path(output) / shard["sources"]
    if not path.is_file():
        return [f"{shard['sources']} (its rows' sources) is missing"]
    if file_sha256(path) != shard.get("sources_sha256"):
        return [f"{shard['sources']}: sha256 differs from the manifest"]
    try:
        sources = read_sources(path)
    except (OSError, pa.ArrowException) as exc:
        return [f"{shard['sources']}: not readable ({exc})"]
    rows = cols["input_ids"].shape[0]
    counts = np.diff(cols["seq_lens_offsets"]) if SEQ_LENS in cols else np.ones(rows, np.int64)
    if not np.array_equal(sources["row"], np.repeat(np.arange(rows), counts)):
        return [f"{shard['sources']}: does not list one source per sequence of every row, in order"]
    return []


def _packed_problems(cols: dict, shard: dict) -> list[str]:
    """``seq_lens`` against ``attention_mask`` and ``position_ids``, and -100 on every sequence's first label."""
    mask, positions, labels = cols["attention_mask"], cols["position_ids"], cols["labels"]
    seq_lens, offsets = cols[SEQ_LENS].astype(np.int64), cols["seq_lens_offsets"].astype(np.int64)
    rows, seq_len = mask.shape
    counts = np.diff(offsets)
    if np.any(counts < 1) or np.any(seq_lens < 1):
        return ["seq_lens: a row without sequences, or a sequence of length < 1"]
    row_lengths = np.add.reduceat(seq_lens, offsets[:-1]) if rows else np.zeros(0, np.int64)
    out = []
    if np.any(row_lengths > seq_len):
        return [f"seq_lens: a row's sequences add up to more than its {seq_len} tokens"]
    if not np.array_equal(mask.sum(axis=1), row_lengths):
        out.append("seq_lens do not add up to each row's attention_mask")
    starts = np.cumsum(seq_lens) - seq_lens
    row_of_seq = np.repeat(np.arange(rows), counts)
    expected = np.arange(seq_len)[None, :] - row_lengths[:, None]  # the padding tail: 0, 1, ...
    real = expected < 0
    within = np.arange(int(seq_lens.sum())) - np.repeat(starts, seq_lens)
    expected[real] = within
    if not np.array_equal(positions, expected):
        bad = int(np.flatnonzero((positions != expected).any(axis=1))[0])
        out.append(f"position_ids do not restart at 0 at every sequence of seq_lens (first at row {bad})")
    first = starts - (np.cumsum(np.concatenate(([0], row_lengths)))[:-1])[row_of_seq]  # start within its row
    if np.any(labels[row_of_seq, first] != IGNORE_INDEX):
        out.append("a sequence's first label is not -100 (it would be trained to predict across a boundary)")
    if "sequences" in shard and shard["sequences"] != len(seq_lens):
        out.append(f"{len(seq_lens)} sequences, the manifest says {shard['sequences']}")
    return out


def _shard_problems(cols: dict, shard: dict, side: str) -> list[str]:
    ids, mask, labels = cols["input_ids"], cols["attention_mask"], cols["labels"]
    out = []
    if not (ids.shape == mask.shape == labels.shape == (shard["rows"], shard["seq_len"])):
        return [f"shape {ids.shape} != ({shard['rows']}, {shard['seq_len']})"]
    if not np.isin(mask, (0, 1)).all():
        out.append("attention_mask holds values other than 0 and 1")
    expected = np.arange(ids.shape[1])[None, :] < mask.sum(axis=1)[:, None]
    if side == "left":
        expected = expected[:, ::-1]
    if not np.array_equal(mask.astype(bool), expected):
        out.append(f"attention_mask is not contiguous {side} padding")
    if np.any(labels[mask == 0] != IGNORE_INDEX):
        out.append("labels are not -100 at some padded position")
    trained = labels != IGNORE_INDEX
    if np.any(labels[trained] != ids[trained]):
        out.append("some trained label differs from its input id")
    empty = int(np.count_nonzero(~trained.any(axis=1)))
    if empty:
        out.append(f"{empty} row(s) without a trained token")
    real = int(mask.sum())
    if (real, ids.size - real, int(trained.sum())) != (shard["real_tokens"], shard["pad_tokens"], shard["trained_tokens"]):
        out.append("real / pad / trained token counts differ from the manifest")
    weights = cols.get("loss_weights")
    if weights is not None:
        if weights.shape != ids.shape or not np.all(np.isfinite(weights)):
            out.append("loss_weights has the wrong shape or non-finite values")
        elif np.any(weights[~trained] != 0) or np.any(weights[trained] <= 0):
            out.append("loss_weights is not 0 exactly where labels are -100")
    return out
