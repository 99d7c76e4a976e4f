"""``padprep inspect OUT --html REPORT``: one self-contained page of what a build trains on.

Built from the shards and the manifest alone (and the tokenizer, to decode): no network, no script, no
font or image from elsewhere, so it opens offline, in a pull request or as a CI artifact.

* **Rows**: a sample that covers every bucket (its first and longest row) and every kind of row the
  shards can tell: several trained runs (multi-turn), a think or tool block (a special token whose text
  names it, probed from the vocabulary), packed rows with the most sequences, pairs with prompt / chosen /
  rejected. Each real token is one ``<span>`` whose class says what it is (trained, masked, special,
  inside a think block) and whose ``title`` gives its position, id and label; padding is one span per
  run. Packed rows mark every sequence boundary.
* **Figures** as inline SVG: rows per length bin, per bucket padding and trained share, packing fill,
  rejects and drops by reason (with the first example of each from ``rejects.jsonl``), sources of a recipe.
* **Bounded**: at most ``max_rows`` rows and ``max_tokens`` tokens are shown; the page says so where it cut.
"""

from __future__ import annotations

import html
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from padprep.output.figures import InspectError, shard_sources, source_text
from padprep.output.inspection import load_manifest, load_stats, read_listed_shard
from padprep.schema import IGNORE_INDEX, REJECTS, SEQ_LENS

MAX_ROWS = 40
MAX_TOKENS = 60_000
_EXAMPLE_CHARS = 300  # of a reject's record, in the reasons table


@dataclass
class Picked:
    """A row chosen for the page: where it is, and why."""

    file: str
    row: int
    why: list[str] = field(default_factory=list)


def write_report(
    output: Path, dest: Path, tokenizer_spec: str | None = None, max_rows: int = MAX_ROWS, max_tokens: int = MAX_TOKENS
) -> dict:
    """Write the report of build ``output`` to ``dest`` (atomically); returns what it shows (rows, tokens, capped).

    Raises:
        InspectError: not a padprep output, a damaged one, no tokenizer to decode with, or ``dest`` inside ``output``.
    """
    from padprep.output.inspection import load_decoder

    output, dest = Path(output), Path(dest)
    if os.path.realpath(dest).startswith(os.path.realpath(output) + os.sep):
        raise InspectError(
            f"{dest}: inside the output {output}, which would then hold a file its manifest does not list; "
            "write the report beside it"
        )
    stats = load_stats(output)
    tok = load_decoder(stats, tokenizer_spec)
    page = _Page(output, stats, tok, max_rows, max_tokens)
    text = page.render()
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, dest)
    return {"rows": page.rows_shown, "tokens": page.tokens_shown, "capped": page.capped, "bytes": len(text.encode())}


class _Page:
    def __init__(self, output: Path, stats: dict, tok, max_rows: int, max_tokens: int):
        self.output, self.stats, self.tok = output, stats, tok
        self.max_rows, self.budget = max_rows, max_tokens
        self.rows_shown = self.tokens_shown = 0
        self.capped = False
        self.special = _special_ids(tok)
        self.inputs = [i["path"] for i in load_manifest(output).inputs]
        self.think = {i for i, text in self.special.items() if "think" in text.lower()}
        self.tool = {i for i, text in self.special.items() if "tool" in text.lower() or "function" in text.lower()}

    # -- the page ----------------------------------------------------------------------------------

    def render(self) -> str:
        stats = self.stats
        pairs = stats.get("task") == "preference"
        body = [self._header(), self._figures()]
        body.append(self._pairs() if pairs else self._rows())
        title = f"padprep report: {html.escape(str(self.output))}"
        return (
            f"<!doctype html>\n<html lang=en><head><meta charset=utf-8><title>{title}</title>"
            f"<meta name=viewport content='width=device-width'><style>{_CSS}</style></head>\n<body>\n"
            + "\n".join(body)
            + "\n</body></html>\n"
        )

    def _header(self) -> str:
        s, rec = self.stats, self.stats["records"]
        m = s["manifest"]
        opts = m.get("options") or {}
        lines = [f"<h1>{html.escape(str(self.output))}</h1>"]
        lines.append(
            f"<p class=meta>padprep {html.escape(str(m.get('padprep_version')))} · tokenizer "
            f"{html.escape(str((m.get('tokenizer') or {}).get('source')))} · "
            + ("preference pairs" if s.get("task") == "preference" else "packed" if opts.get("pack") else "bucketed")
            + "</p>"
        )
        if rec.get("records_read") is not None:
            lines.append(
                f"<p>records: <b>{rec['records_read']:,}</b> read = {rec['rows_written']:,} written + "
                f"{rec['rejected']:,} rejected + {rec['dropped']:,} dropped by policy ({rec['truncated']:,} truncated)</p>"
            )
        legend = "".join(
            f"<span class='t {cls}'>{label}</span> "
            for cls, label in (
                ("trained", "trained"),
                ("trained special", "trained end-of-turn / special"),
                ("masked", "masked (-100)"),
                ("masked special", "template scaffolding (special, masked)"),
                ("masked think", "think block"),
                ("pad", "padding"),
            )
        )
        lines.append(f"<p class=legend>{legend}<span class=boundary>sequence boundary</span></p>")
        for hz in m.get("hazards") or []:
            tag = "handled" if hz.get("handled") else "hazard"
            lines.append(f"<p class='hazard {tag}'><b>{tag}: {html.escape(hz['code'])}</b>: {html.escape(hz['message'])}</p>")
        return "\n".join(lines)

    # -- figures -----------------------------------------------------------------------------------

    def _figures(self) -> str:
        s = self.stats
        out = ["<section class=figures>"]
        hist = s.get("length_histogram") or []
        unit = "sequence" if "sequences" in s["totals"] else "row"
        if hist:
            out.append(
                _bars(
                    f"lengths (real tokens per {unit})",
                    [(f"{h['from']:,}–{h['to']:,}", h["rows"], f"{h['rows']:,}") for h in hist],
                )
            )
        by_bucket, by_input = self._lengths()
        if len(by_bucket) > 1:
            out.append(
                _histograms(f"lengths per bucket (tokens per {unit})", {f"bucket {b:,}": v for b, v in sorted(by_bucket.items())})
            )
        if "mixture" in s:
            index = {path: i for i, path in enumerate(self.inputs)}
            per_source = {
                str(src.get("source")): np.concatenate(
                    [by_input.get(index.get(f, -1), np.zeros(0, np.int64)) for f in src.get("files") or []]
                    or [np.zeros(0, np.int64)]
                )
                for src in s["mixture"]["sources"]
            }
            out.append(_histograms(f"lengths per recipe source (tokens per {unit})", per_source))
        buckets = s.get("buckets") or []
        if buckets and "pad_fraction" in buckets[0]:
            out.append(
                _bars(
                    "rows per bucket (seq_len)",
                    [(f"{b['seq_len']:,}", b["rows"], f"{b['rows']:,} · pad {b['pad_fraction']:.1%}") for b in buckets],
                )
            )
            out.append(
                _bars(
                    "trained share of real tokens, per bucket",
                    [(f"{b['seq_len']:,}", b["trained_fraction"], f"{b['trained_fraction']:.1%}") for b in buckets],
                    scale=1.0,
                )
            )
        elif buckets:
            out.append(_bars("pairs per bucket", [(f"{b['seq_len']:,}", b["pairs"], f"{b['pairs']:,}") for b in buckets]))
        t = s["totals"]
        if "padding_fraction" in t:
            out.append(
                f"<p>tokens: {t['real_tokens']:,} real, {t['pad_tokens']:,} pad ({t['padding_fraction']:.1%}), "
                f"{t['trained_tokens']:,} trained ({t['trained_fraction_of_real']:.1%} of real)"
                + (f"; packed fill {t['fill']:.2%} over {t['sequences']:,} sequences" if "fill" in t else "")
                + "</p>"
            )
        fills = s.get("packed_shards") or []
        if fills:
            out.append(_bars("packing fill per shard", [(f["file"], f["fill"], f"{f['fill']:.1%}") for f in fills[:40]], 1.0))
        if "mixture" in s:
            sources = s["mixture"]["sources"]
            out.append(
                _bars(
                    f"sources ({html.escape(str(s['mixture']['side']))} side): rows written",
                    [
                        (str((src.get("path") or [src.get("source")])[0]), src.get("rows_written", 0), f"{src['row_share']:.1%}")
                        for src in sources
                    ],
                )
            )
        out.append(self._reasons())
        out.append("</section>")
        return "\n".join(out)

    def _lengths(self) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray]]:
        """Every row's (every packed sequence's) length, by bucket and by input (from the sidecars)."""
        by_bucket: dict[int, list[np.ndarray]] = {}
        by_input: dict[int, list[np.ndarray]] = {}
        for shard in self.stats["shards"]:
            if shard["file"] in self.stats["unreadable"] or self.stats.get("task") == "preference":
                continue
            cols = read_listed_shard(self.output, shard)
            lengths = cols[SEQ_LENS].astype(np.int64) if SEQ_LENS in cols else cols["attention_mask"].sum(axis=1).astype(np.int64)
            by_bucket.setdefault(shard["seq_len"], []).append(lengths)
            sources = shard_sources(self.output, shard)
            if sources is not None:
                inputs = np.array([i for row in sources for i, _ in row], np.int64)
                for i in np.unique(inputs):
                    by_input.setdefault(int(i), []).append(lengths[inputs == i])
        return {k: np.concatenate(v) for k, v in by_bucket.items()}, {k: np.concatenate(v) for k, v in by_input.items()}

    def _reasons(self) -> str:
        reasons = (self.stats["records"] or {}).get("reasons") or {}
        if not reasons:
            return "<p>rejects and drops: none</p>"
        examples = _first_rejects(self.output / REJECTS, set(reasons))
        rows = "".join(
            f"<tr><td>{html.escape(code)}</td><td class=n>{count:,}</td><td><code>{html.escape(examples.get(code, ''))}</code></td></tr>"
            for code, count in sorted(reasons.items(), key=lambda kv: -kv[1])
        )
        chart = _bars(
            "rejects and drops by reason", [(code, n, f"{n:,}") for code, n in sorted(reasons.items(), key=lambda kv: -kv[1])]
        )
        return f"{chart}<table class=reasons><tr><th>reason</th><th>records</th><th>first example</th></tr>{rows}</table>"

    # -- rows --------------------------------------------------------------------------------------

    def _rows(self) -> str:
        picked = self._pick()
        out = [f"<h2>rows ({len(picked)} chosen to cover every bucket and kind of row)</h2>"]
        columns = {}
        for p in picked:
            if self.rows_shown >= self.max_rows or self.budget <= 0:
                self.capped = True
                break
            shard = next(s for s in self.stats["shards"] if s["file"] == p.file)
            if p.file not in columns:
                columns = {p.file: (read_listed_shard(self.output, shard), shard_sources(self.output, shard))}
            cols, sources = columns[p.file]
            out.append(self._row(cols, p, sources[p.row] if sources is not None else []))
            self.rows_shown += 1
        if self.capped:
            out.append(
                f"<p class=cap>shown: {self.rows_shown} rows, {self.tokens_shown:,} tokens (the page's cap); "
                "pick rows with padprep inspect --show</p>"
            )
        return "\n".join(out)

    def _pick(self) -> list[Picked]:
        """Rows that cover every bucket and every kind of row the shards can tell, in shard order."""
        picked: dict[tuple[str, int], Picked] = {}

        def take(file: str, row: int, why: str) -> None:
            picked.setdefault((file, row), Picked(file, row)).why.append(why)

        kinds: dict[str, tuple[str, int]] = {}
        longest: dict[int, tuple[int, str, int]] = {}
        for shard in self.stats["shards"]:
            if shard["file"] in self.stats["unreadable"]:
                continue
            cols = read_listed_shard(self.output, shard)
            ids, labels, mask = cols["input_ids"], cols["labels"], cols["attention_mask"]
            if shard["seq_len"] not in longest:  # the bucket's first shard: its first row
                take(shard["file"], 0, f"bucket {shard['seq_len']:,}")
            real = mask.sum(axis=1)
            r = int(np.argmax(real))
            if int(real[r]) > longest.get(shard["seq_len"], (-1,))[0]:
                longest[shard["seq_len"]] = (int(real[r]), shard["file"], r)
            trained = labels != IGNORE_INDEX
            runs = np.count_nonzero(np.diff(trained.astype(np.int8), axis=1) == 1, axis=1) + trained[:, 0]
            self._kind(kinds, "multi-turn (several trained runs)", shard["file"], np.flatnonzero(runs >= 2))
            if self.think:
                self._kind(kinds, "think block", shard["file"], np.flatnonzero(np.isin(ids, list(self.think)).any(axis=1)))
            if self.tool:
                self._kind(kinds, "tool call or result", shard["file"], np.flatnonzero(np.isin(ids, list(self.tool)).any(axis=1)))
            if SEQ_LENS in cols:
                counts = np.diff(cols["seq_lens_offsets"])
                self._kind(kinds, "packed: most sequences", shard["file"], [int(np.argmax(counts))] if len(counts) else [])
        for seq_len, (_, file, r) in sorted(longest.items()):
            take(file, r, f"longest in bucket {seq_len:,}")
        for why, (file, r) in kinds.items():
            take(file, r, why)
        order = {s["file"]: i for i, s in enumerate(self.stats["shards"])}
        return sorted(picked.values(), key=lambda p: (order[p.file], p.row))

    @staticmethod
    def _kind(kinds: dict, why: str, file: str, rows) -> None:
        if why not in kinds and len(rows):
            kinds[why] = (file, int(rows[0]))

    def _row(self, cols: dict, p: Picked, sources: list[tuple[int, int]]) -> str:
        ids, mask, labels = cols["input_ids"][p.row], cols["attention_mask"][p.row], cols["labels"][p.row]
        starts: set[int] = set()
        head = f"{p.file} row {p.row}"
        if SEQ_LENS in cols:
            lens = cols[SEQ_LENS][cols["seq_lens_offsets"][p.row] : cols["seq_lens_offsets"][p.row + 1]]
            first = int(np.flatnonzero(mask)[0]) if mask.any() else 0
            starts = set((first + np.cumsum(lens) - lens).tolist())
            head += f": {len(lens)} sequence{'s' * (len(lens) != 1)}"
        trained = int(np.count_nonzero(labels != IGNORE_INDEX))
        head += f" · {int(mask.sum()):,} real, {trained:,} trained of {len(ids):,}"
        body = self._tokens(ids, mask, labels, starts)
        why = ", ".join(p.why)
        where = "; ".join(source_text(self.inputs, i, line) for i, line in sources) or "source not recorded"
        return (
            f"<article class=row data-file='{html.escape(p.file)}' data-row={p.row}>"
            f"<h3>{html.escape(head)} <small>({html.escape(why)})</small></h3>"
            f"<p class=source>from {html.escape(where)}</p><pre>{body}</pre></article>"
        )

    def _tokens(self, ids: np.ndarray, mask: np.ndarray, labels: np.ndarray, starts: set[int]) -> str:
        """Every real token as a span (position, id, label in its title); each padding run as one span."""
        real = np.flatnonzero(mask)
        shown = real[: max(self.budget, 0)]
        pieces = _pieces(self.tok, ids[shown].tolist())
        out, think = [], False
        pos_to_piece = dict(zip(shown.tolist(), pieces))
        i = 0
        n = len(ids)
        while i < n:
            if mask[i] == 0:
                j = i
                while j < n and mask[j] == 0:
                    j += 1
                out.append(f"<span class='t pad' data-from={i} data-to={j}>&lt;pad ×{j - i}&gt;</span>")
                i = j
                continue
            if i not in pos_to_piece:
                left = int(np.count_nonzero(mask[i:]))
                out.append(f"<span class=cap>… {left:,} more tokens not shown (the page's cap)</span>")
                self.capped = True
                break
            if i in starts:
                out.append("<span class=boundary></span>")
                think = False
            tid, label = int(ids[i]), int(labels[i])
            special = tid in self.special
            if tid in self.think:
                think = not think if special else think
            classes = ["t", "trained" if label != IGNORE_INDEX else "masked"]
            if special:
                classes.append("special")
            if think or tid in self.think:
                classes.append("think")
            title = f"pos {i} · id {tid} · label {label}"
            out.append(
                f"<span class='{' '.join(classes)}' data-i={i} data-label={label} title='{title}'>"
                f"{html.escape(pos_to_piece[i])}</span>"
            )
            i += 1
        self.tokens_shown += len(shown)
        self.budget -= len(shown)
        return "".join(out)

    # -- pairs -------------------------------------------------------------------------------------

    def _pairs(self) -> str:
        from padprep.output.pair_inspection import read_pair_shard

        out = ["<h2>pairs (the first of every bucket)</h2>"]
        for shard in self.stats["shards"]:
            if shard["file"] in self.stats["unreadable"]:
                continue
            if self.rows_shown >= self.max_rows or self.budget <= 0:
                self.capped = True
                break
            cols = read_pair_shard(self.output, shard)
            if not cols["prompt_ids"]:
                continue
            parts = []
            for side, cls in (("prompt", "masked"), ("chosen", "trained"), ("rejected", "rejected")):
                ids = np.asarray(cols[f"{side}_ids"][0])[: max(self.budget, 0)]
                spans = "".join(
                    f"<span class='t {cls}' data-i={k} data-id={int(t)}>{html.escape(piece)}</span>"
                    for k, (t, piece) in enumerate(zip(ids.tolist(), _pieces(self.tok, ids.tolist())))
                )
                self.budget -= len(ids)
                self.tokens_shown += len(ids)
                parts.append(
                    f"<div class='side {side}' data-side={side}><h4>{side} ({len(ids):,} tokens)</h4><pre>{spans}</pre></div>"
                )
            out.append(
                f"<article class=pair data-file='{html.escape(shard['file'])}' data-row=0>"
                f"<h3>{html.escape(shard['file'])} pair 0 (bucket {shard['seq_len']:,})</h3>{''.join(parts)}</article>"
            )
            self.rows_shown += 1
        return "\n".join(out)


def _special_ids(tok) -> dict[int, str]:
    """The tokenizer's added and special tokens (id -> text): template scaffolding where they are masked."""
    try:
        return {int(i): t.content for i, t in tok.get_added_tokens_decoder().items()}
    except AttributeError:
        return {}


def _pieces(tok, ids: list[int]) -> list[str]:
    """Each token's text, so that the pieces join to the decoded row: a token is decoded after the one before
    it (the prefix removed), so a leading space survives; bytes of one character split over tokens go on the
    last of them."""
    out: list[str] = []
    prev: list[int] = []
    pending: list[int] = []
    for tid in ids:
        pending.append(tid)
        whole = tok.decode(prev + pending, skip_special_tokens=False)
        if whole.endswith("\ufffd") and len(pending) < 4:
            continue  # part of a character: wait for the rest
        before = tok.decode(prev, skip_special_tokens=False) if prev else ""
        text = whole[len(before) :] if whole.startswith(before) else tok.decode(pending, skip_special_tokens=False)
        out += [""] * (len(pending) - 1) + [text]
        prev, pending = pending[-1:], []
    if pending:
        out += [""] * (len(pending) - 1) + [tok.decode(pending, skip_special_tokens=False)]
    return out


def _first_rejects(path: Path, codes: set[str]) -> dict[str, str]:
    """The first rejected or dropped record of each code in ``rejects.jsonl`` (where, and the record's start)."""
    found: dict[str, str] = {}
    try:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                try:
                    obj = json.loads(line)
                except ValueError:
                    continue
                code = obj.get("code")
                if code in codes and code not in found:
                    where = f"{obj.get('file', '?')}:{obj.get('line', obj.get('index', obj.get('row', '?')))}"
                    record = str(obj.get("record", ""))[:_EXAMPLE_CHARS]
                    found[code] = f"{where} {obj.get('reason', '')} {record}".strip()
                if len(found) == len(codes):
                    break
    except OSError:
        pass
    return found


def _bars(title: str, items: list[tuple[str, float, str]], scale: float | None = None) -> str:
    """A horizontal bar chart as inline SVG: one bar per (label, value, shown text)."""
    if not items:
        return ""
    top = scale or max(v for _, v, _ in items) or 1
    row, width, left = 18, 360, 150
    height = row * len(items) + 24
    bars = []
    for k, (label, value, text) in enumerate(items):
        y = 20 + k * row
        w = max(0.0, width * float(value) / top)
        bars.append(
            f"<text x={left - 6} y={y + 12} text-anchor=end>{html.escape(label[:24])}</text>"
            f"<rect x={left} y={y + 2} width={w:.1f} height={row - 5} class=bar><title>{html.escape(text)}</title></rect>"
            f"<text x={left + w + 4:.1f} y={y + 12}>{html.escape(text)}</text>"
        )
    return (
        f"<figure><svg xmlns='http://www.w3.org/2000/svg' width={left + width + 160} height={height} role=img>"
        f"<text x=0 y=13 class=title>{html.escape(title)}</text>{''.join(bars)}</svg></figure>"
    )


def _histograms(title: str, groups: dict[str, np.ndarray], bins: int = 10) -> str:
    """Small histograms side by side as inline SVG, one per group, each over its own range."""
    cells = []
    w, h, per_line = 150, 60, 5
    for k, (name, lengths) in enumerate(groups.items()):
        x0, y0 = 10 + (k % per_line) * (w + 20), (k // per_line) * (h + 30)
        if len(lengths):
            counts, edges = np.histogram(lengths, bins=bins)
            top = counts.max() or 1
            bars = "".join(
                f"<rect class=bar x={x0 + i * w / bins:.1f} y={y0 + 20 + h - h * c / top:.1f} width={w / bins - 1:.1f} "
                f"height={h * c / top:.1f}><title>{int(edges[i]):,}–{int(edges[i + 1]):,}: {c:,}</title></rect>"
                for i, c in enumerate(counts)
            )
            label = f"{name}: {len(lengths):,}, {int(lengths.min()):,}–{int(lengths.max()):,}"
        else:
            bars, label = "", f"{name}: none"
        cells.append(f"{bars}<text x={x0} y={y0 + h + 34}>{html.escape(label[:30])}</text>")
    width = 20 + min(len(groups), per_line) * (w + 20)
    height = -(-len(groups) // per_line) * (h + 30) + 12
    return (
        f"<figure><svg xmlns='http://www.w3.org/2000/svg' width={width} height={height} role=img>"
        f"<text x=0 y=13 class=title>{html.escape(title)}</text>{''.join(cells)}</svg></figure>"
    )


_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:1.5em;color:#1b1f24;background:#fff}
h1{font-size:1.3em;margin:0 0 .3em} .meta{color:#555} pre{white-space:pre-wrap;word-break:break-all;
font:13px/1.6 ui-monospace,monospace;background:#fafafa;border:1px solid #ddd;padding:.6em;margin:.3em 0}
.t{border-radius:2px} .trained{background:#c8f0c8;color:#053d05} .trained.special{background:#4caf50;color:#fff;
outline:1px solid #1b5e20} .masked{color:#888} .masked.special{color:#7b4fa0;background:#f1e8f8}
.think{font-style:italic} .masked.think{background:#fff6d6} .rejected{background:#f8d0d0;color:#5c0b0b}
.pad{color:#999;background:#eee;font-size:11px} .boundary{display:inline-block;border-left:3px solid #e91e63;
height:1.1em;margin:0 2px;vertical-align:middle} .legend .boundary{padding-left:4px;border-left-width:3px;height:auto}
.legend .t{padding:1px 4px;margin-right:4px} .hazard{color:#8a4b00} .hazard.handled{color:#555}
.cap{color:#b00020;font-weight:600} figure{margin:.5em 0} svg text{font:12px system-ui,sans-serif;fill:#333}
svg .title{font-weight:600} .bar{fill:#4a90d9} table.reasons{border-collapse:collapse;margin:.5em 0}
.reasons td,.reasons th{border:1px solid #ddd;padding:2px 6px;text-align:left;vertical-align:top} .n{text-align:right}
.reasons code{font-size:12px;white-space:pre-wrap;word-break:break-all} .side h4{margin:.4em 0 0} .source{margin:0;color:#555;font-size:12px}
.figures{display:flex;flex-wrap:wrap;gap:0 2em;align-items:flex-start} article{margin:1em 0} h3{font-size:1em;margin:.2em 0} small{color:#666;font-weight:normal}
"""


__all__ = ["MAX_ROWS", "MAX_TOKENS", "write_report"]
