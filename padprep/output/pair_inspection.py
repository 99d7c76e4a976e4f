"""``padprep inspect`` of a preference build: pairs, tokens per column, buckets, decoded pairs, --verify.

A pair is shown with its prompt once and both completions highlighted; ``--verify`` re-hashes every
shard and checks that every pair has both sides, that each pair fits its bucket, and that rows and
tokens per shard are those the manifest lists.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
from rich.console import Console
from rich.table import Table
from rich.text import Text

from padprep.layout.shards import file_sha256
from padprep.output.figures import (
    InspectError,
    highlights,
    histogram,
    mixture,
    print_records,
    readable_shards,
    source_text,
)
from padprep.output.manifest import Manifest
from padprep.schema import IGNORE_INDEX, MANIFEST, PAIR_COLUMNS


def read_pair_shard(output: Path, shard: dict) -> dict[str, list[np.ndarray]]:
    """A pair shard's columns as lists of int32 arrays (an ``InspectError`` naming the file when it cannot be read)."""
    path = Path(output) / shard["file"]
    try:
        with pa.memory_map(str(path)) as source:
            table = pa.ipc.open_stream(source).read_all()
        cols = _padded_pairs(table) if "chosen_input_ids" in table.column_names else {}
        for name in PAIR_COLUMNS if not cols else ():
            column = table.column(name).combine_chunks()
            offsets = np.asarray(column.offsets)
            values = np.asarray(column.values, dtype=np.int32)
            cols[name] = [values[offsets[i] : offsets[i + 1]] for i in range(len(column))]
    except FileNotFoundError:
        raise InspectError(f"{path}: missing (listed in {MANIFEST})", damaged=True) from None
    except (pa.ArrowException, KeyError, OSError) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InspectError(f"{path}: not a readable pair shard, truncated or overwritten? ({detail})", damaged=True) from None
    return cols


def _padded_pairs(table: pa.Table) -> dict[str, list[np.ndarray]]:
    """A ``--padded-pairs`` shard read back as pairs: each side's real tokens (attention_mask), split where its
    labels start; the two prompts must agree."""
    cols: dict[str, list[np.ndarray]] = {name: [] for name in PAIR_COLUMNS}
    sides = {}
    for side in ("chosen", "rejected"):
        arrays = []
        for c in ("input_ids", "attention_mask", "labels"):
            column = table.column(f"{side}_{c}").combine_chunks()
            arrays.append(np.asarray(column.flatten(), dtype=np.int32).reshape(len(column), column.type.list_size))
        sides[side] = arrays
    for r in range(table.num_rows):
        prompts = []
        for side in ("chosen", "rejected"):
            ids, mask, labels = (a[r] for a in sides[side])
            real = mask == 1
            seq, lab = ids[real], labels[real]
            trained = np.flatnonzero(lab != IGNORE_INDEX)
            start = int(trained[0]) if len(trained) else len(seq)
            prompts.append(seq[:start])
            cols[f"{side}_ids"].append(seq[start:])
        if not np.array_equal(*prompts):
            raise InspectError(f"pair {r}: its two padded sides hold different prompts", damaged=True)
        cols["prompt_ids"].append(prompts[0])
    return cols


def pair_stats(output: Path, manifest: Manifest, problems: list[str] | None) -> dict:
    """Totals per column, per-bucket figures and the pair-length histogram, from the shards on disk."""
    listed = [s.to_json() for s in manifest.shards]
    buckets, lengths, unreadable = {}, [], []
    sums = dict.fromkeys(PAIR_COLUMNS, 0)
    for shard, cols in readable_shards(listed, lambda shard: read_pair_shard(output, shard), problems, unreadable):
        n = _column_lengths(cols)
        pair_len = n["prompt_ids"] + np.maximum(n["chosen_ids"], n["rejected_ids"])
        lengths.append(pair_len)
        b = buckets.setdefault(shard["seq_len"], {"seq_len": shard["seq_len"], "shards": 0, "pairs": 0, "tokens": 0})
        b["shards"] += 1
        b["pairs"] += len(pair_len)
        b["tokens"] += int(sum(v.sum() for v in n.values()))
        for k in PAIR_COLUMNS:
            sums[k] += int(n[k].sum())
    totals = manifest.totals
    all_lengths = np.concatenate(lengths) if lengths else np.zeros(0, np.int64)
    return {
        "output": str(output),
        "task": "preference",
        "manifest": {
            k: manifest.to_json().get(k) for k in ("padprep_version", "options", "tokenizer", "chat_template", "hazards")
        },
        "records": {k: totals.get(k) for k in ("records_read", "rows_written", "rejected", "dropped", "truncated", "reasons")},
        "totals": {
            "pairs": int(len(all_lengths)),
            "prompt_tokens": sums["prompt_ids"],
            "chosen_tokens": sums["chosen_ids"],
            "rejected_tokens": sums["rejected_ids"],
            "real_tokens": sum(sums.values()),
            "trained_tokens": sums["chosen_ids"] + sums["rejected_ids"],
        },
        "buckets": [b for _, b in sorted(buckets.items())],
        "length_histogram": histogram(all_lengths),
        "shards": listed,
        "unreadable": unreadable,
        **({"mixture": mixture(manifest.mixture)} if manifest.mixture else {}),
    }


def print_pair_stats(console: Console, stats: dict) -> None:
    t = stats["totals"]
    print_records(console, stats, ", preference pairs", "pairs written", "with the prompt cut")
    console.print(
        f"pairs: {t['pairs']:,}   tokens: {t['prompt_tokens']:,} prompt, {t['chosen_tokens']:,} chosen, "
        f"{t['rejected_tokens']:,} rejected"
    )
    table = Table(title="buckets (prompt + longer side)", title_justify="left")
    for col in ("seq_len", "shards", "pairs", "tokens"):
        table.add_column(col, justify="right")
    for b in stats["buckets"]:
        table.add_row(str(b["seq_len"]), str(b["shards"]), f"{b['pairs']:,}", f"{b['tokens']:,}")
    console.print(table)


def show_pairs(console: Console, tok, picked: list, inputs: list[str]) -> None:
    """The picked pairs (``selection.PickedRow``): the prompt once, then each completion highlighted."""
    color = highlights(console)
    legend = (
        "[dim]prompt[/dim]  [green]chosen[/green]  [red]rejected[/red]" if color else "legend: prompt, [[chosen]], {{rejected}}"
    )
    console.print(legend, markup=color)
    for p in picked:
        prompt, chosen, rejected = (p.cols[k][p.row] for k in PAIR_COLUMNS)
        console.rule(
            f"{p.shard['file']} pair {p.row}: prompt {len(prompt):,}, chosen {len(chosen):,}, rejected {len(rejected):,} tokens",
            style="dim",
        )
        where = "; ".join(source_text(inputs, i, line) for i, line in p.sources) or "source not recorded"
        console.print(f"from {where}", markup=False, style="dim")
        text = Text(_decode(tok, prompt), style="dim" if color else "")
        for label, ids, style, marks in (("chosen", chosen, "green", "[[]]"), ("rejected", rejected, "red", "{{}}")):
            text.append(f"\n── {label} ──\n", style="bold" if color else "")
            piece = _decode(tok, ids)
            text.append(piece if color else f"{marks[:2]}{piece}{marks[2:]}", style=style if color else "")
        console.print(text)


def verify_pairs(output: Path, stats: dict) -> list[str]:
    """Every breach of a preference build's invariants, one line each."""
    problems = []
    bounds = sorted({s["seq_len"] for s in stats["shards"]})
    padded = bool((stats["manifest"].get("options") or {}).get("padded_pairs"))
    for shard in stats["shards"]:
        if shard["file"] in stats["unreadable"]:
            continue
        if file_sha256(Path(output) / shard["file"]) != shard["sha256"]:
            problems.append(f"{shard['file']}: sha256 differs from the manifest")
        cols = read_pair_shard(output, shard)
        n = _column_lengths(cols)
        empty = int(np.count_nonzero((n["chosen_ids"] == 0) | (n["rejected_ids"] == 0)))
        if empty:
            problems.append(f"{shard['file']}: {empty} pair(s) with an empty side")
        length = n["prompt_ids"] + np.maximum(n["chosen_ids"], n["rejected_ids"])
        below = bounds[bounds.index(shard["seq_len"]) - 1] if bounds.index(shard["seq_len"]) else 0
        if len(length) and (length.max() > shard["seq_len"] or length.min() <= below):
            problems.append(
                f"{shard['file']}: a pair of {int(length.max())} tokens outside its bucket ({below}, {shard['seq_len']}]"
            )
        if len(length) != shard["rows"]:
            problems.append(f"{shard['file']}: {len(length)} pairs, the manifest lists {shard['rows']}")
        tokens, trained = int(sum(v.sum() for v in n.values())), int(n["chosen_ids"].sum() + n["rejected_ids"].sum())
        if padded:  # each side holds the prompt
            tokens += int(n["prompt_ids"].sum())
        if tokens != shard["real_tokens"] or trained != shard["trained_tokens"]:
            problems.append(f"{shard['file']}: token counts differ from the manifest")
    return problems


def _column_lengths(cols: dict) -> dict[str, np.ndarray]:
    """Each pair's length in tokens, per column (prompt_ids, chosen_ids, rejected_ids)."""
    return {k: np.fromiter((len(x) for x in cols[k]), np.int64) for k in PAIR_COLUMNS}


def _decode(tok, ids: np.ndarray) -> str:
    return tok.decode(ids.tolist(), skip_special_tokens=False)
