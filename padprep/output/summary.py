"""The table printed at the end of ``padprep build``: where every record went and what was written."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from padprep.output.manifest import Manifest


def print_build_summary(console: Console, manifest: Manifest, seconds: float, resumed_tokens: int = 0) -> None:
    """Print what a build wrote and where every record went.

    Args:
        console: where to print.
        manifest: the build's manifest (``BuildResult.manifest``).
        seconds: how long the build took (for tokens per second).
        resumed_tokens: tokens an interrupted run had already processed (a resumed build's rate counts the rest).

    Example:
        >>> print_build_summary(Console(), build(cfg).manifest, 12.5)  # doctest: +SKIP
    """
    t = manifest.totals
    table = Table(title=f"padprep build -> {len(manifest.shards)} shards", title_justify="left", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("records read", f"{t['records_read']:,}")
    table.add_row("pairs written" if manifest.pairs else "rows written", f"{t['rows_written']:,}")
    table.add_row("rejected (bad records)", f"{t['rejected']:,}")
    table.add_row("dropped by policy", f"{t['dropped']:,}")
    table.add_row("prompts cut (--truncation)" if manifest.pairs else "truncated", f"{t['truncated']:,}")
    packing = manifest.packing
    if packing:
        table.add_row(
            "packed",
            f"{packing['sequences']:,} sequences into {packing['rows']:,} rows of {packing['seq_len']:,} "
            f"(fill {packing['fill']:.2%})",
        )
    else:
        table.add_row("buckets", ", ".join(str(b) for b in manifest.buckets) or "-")
    table.add_row("real tokens", f"{t['real_tokens']:,}")
    table.add_row("completion tokens" if manifest.pairs else "trained tokens", f"{t['trained_tokens']:,}")
    if not manifest.pairs:  # pairs are written unpadded: a collator pads each batch
        table.add_row(
            "padding", f"{t['pad_tokens']:,} ({t['padding_fraction']:.1%}; unbucketed {t['unbucketed_padding_fraction']:.1%})"
        )
    done_here = max(t["real_tokens"] - resumed_tokens, 0)
    tps = done_here / seconds if seconds > 0 else 0.0
    resumed = f"; resumed: {resumed_tokens:,} tokens done by the interrupted run, not counted" if resumed_tokens else ""
    table.add_row("time", f"{seconds:.1f}s ({tps:,.0f} tokens/s{resumed})")
    console.print(table)
    for inp in manifest.inputs:
        if "format" not in inp:
            continue
        fmt = inp["format"] or "no known format"
        counts = ", ".join(
            f"{inp.get(k, 0):,} {label}"
            for k, label in (
                ("records_read", "read"),
                ("rows_written", "written"),
                ("rejected", "rejected"),
                ("dropped", "dropped"),
            )
        )
        console.print(f"input {inp['path']}: {fmt} ({inp.get('format_origin', '')}): {counts}", markup=False)
    descriptions = t.get("reason_descriptions", {})
    for code, n in t.get("reasons", {}).items():
        console.print(f"  {n:,} x {code}: {descriptions.get(code, '')}", markup=False)
    for hz in manifest.hazards:
        tag = "handled" if hz.get("handled") else "hazard"
        count = f" [{hz['count']}]" if hz.get("count") else ""
        console.print(f"{tag}: {hz['code']}: {hz['message']}{count}", markup=False)
