"""``padprep build --recipe RECIPE.yaml``: a mixture of sources, drawn and split, built as ordinary builds.

1. plan: every source's inputs expanded (a file belongs to one source), each with its read options;
2. draw (``recipe.draw``), only when a side is not up to date: one read of every source gives each
   record's content key; the sample, the eval split and the weights follow from them and the seed;
3. build ``OUT/train`` and, with an ``eval`` section, ``OUT/eval``: each is a ``pipeline.build`` over
   the sources' files that reads each record as many times as its side's draw says, with its own
   manifest (``mixture``: per source what was read, sampled, held out, trained and written).

The recipe's text and the side are build options, so they are part of each side's build key, beside
the bytes of every file: the same recipe on the same data is up to date, and gives the same bytes.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from padprep.config import BuildConfig
from padprep.input.formats import FormatOptions
from padprep.input.read import expand_inputs, read_records
from padprep.output.ownership import check_apart
from padprep.recipe.draw import Selection, SourceDraw, content_key, draw_all
from padprep.recipe.spec import Recipe, RecipeError, Source
from padprep.run.padproc import PadProcess
from padprep.run.pipeline import BuildResult, build, read_paths
from padprep.run.progress import Progress

TRAIN, EVAL = "train", "eval"


@dataclass(frozen=True)
class PlannedSource:
    source: Source
    files: list[str]
    formats: FormatOptions


@dataclass
class RecipeResult:
    output: Path
    sides: dict[str, BuildResult]  # "train" (and "eval"): each side's build
    seconds: dict[str, float]  # how long each side's build took (its summary's time and rate)


def recipe_config(recipe: Recipe, given: dict[str, Any]) -> BuildConfig:
    """The build's options: the recipe's top level, then the command line's (``given``: BuildConfig fields).

    Example:
        >>> recipe = parse_recipe("tokenizer: tok/\\nmax_length: 512\\nsources: [a.jsonl]", "r.yaml")  # doctest: +SKIP
        >>> recipe_config(recipe, {"output": Path("out"), "max_length": 1024}).max_length  # doctest: +SKIP
        1024
    """
    options = {**recipe.options, **given}
    if not options.get("tokenizer"):
        raise RecipeError(f"{recipe.path}: tokenizer: missing: name it in the recipe or give --tokenizer")
    try:
        return BuildConfig(inputs=(), recipe_sha256=hashlib.sha256(recipe.text.encode()).hexdigest(), **options)
    except (TypeError, ValueError) as exc:
        raise RecipeError(f"{recipe.path}: {exc}") from None


def build_recipe(recipe: Recipe, cfg: BuildConfig, progress: Progress, pad: PadProcess) -> RecipeResult:
    """Build every side of ``recipe`` into ``cfg.output``/train (and /eval); see the module's description."""
    plan = _plan(recipe, cfg, progress)
    files = [f for p in plan for f in p.files]
    check_apart(cfg.output, [recipe.path, *(i for p in plan for i in p.source.inputs), *read_paths(cfg, files)])
    draws = functools.cache(lambda: _draw(recipe, cfg, plan, progress))
    sides = [TRAIN] + ([EVAL] if recipe.eval is not None else [])
    results, seconds = {}, {}
    for i, side in enumerate(sides):
        side_cfg = dataclasses.replace(cfg, inputs=tuple(files), output=Path(cfg.output) / side, recipe_side=side)
        progress.log(f"recipe {recipe.path}: building {side} into {side_cfg.output}")
        started = time.monotonic()
        # a pad process runs one pass 2: the first side takes the caller's, the next forks its own
        results[side] = build(
            side_cfg, progress, pad if i == 0 else None, selection=functools.partial(_selection, side, plan, draws)
        )
        seconds[side] = time.monotonic() - started
    return RecipeResult(Path(cfg.output), results, seconds)


def _plan(recipe: Recipe, cfg: BuildConfig, progress: Progress) -> list[PlannedSource]:
    base = cfg.format_options()
    owner: dict[str, str] = {}
    plan = []
    for s in recipe.sources:
        files = expand_inputs(list(s.inputs), progress.log, exclude=str(cfg.output), split=s.split)
        for f in files:
            if f in owner:
                raise RecipeError(f"{recipe.path}: {s.where}.path: {f} is in {owner[f]} too; a file belongs to one source")
            owner[f] = s.where
        plan.append(PlannedSource(s, files, s.formats_over(base)))
    return plan


def _draw(
    recipe: Recipe, cfg: BuildConfig, plan: list[PlannedSource], progress: Progress
) -> tuple[list[SourceDraw], dict[str, int]]:
    """Read every source once for its records' content keys, then draw (checks counts against sizes).
    Also gives the number of records in each file."""
    keys, sizes = [], {}
    for p in plan:
        per_file = [np.fromiter((content_key(r.text_of(), r.raw) for r in read_records(f)), np.uint64) for f in p.files]
        sizes.update({f: len(k) for f, k in zip(p.files, per_file)})
        keys.append(np.concatenate(per_file) if per_file else np.zeros(0, np.uint64))
    seed = cfg.seed if cfg.seed is not None else 0
    draws = draw_all(keys, [p.source for p in plan], recipe.eval, seed, recipe.path)
    if recipe.eval is not None and not any(d.eval.any() for d in draws):
        raise RecipeError(f"{recipe.path}: eval: holds no conversation at this size: raise its fraction or give a count")
    for p, d in zip(plan, draws):
        c = d.counts()
        progress.log(
            f"recipe: {p.source.where} {p.source.name}: {c['records']:,} records, {c['sampled']:,} sampled, "
            f"{c['eval']:,} to eval, {c['train']:,} to train (weight {p.source.weight:g})"
        )
    return draws, sizes


def _selection(side: str, plan: list[PlannedSource], draws) -> Selection:
    """What ``side`` reads: each file's slice of its source's draw."""
    copies, formats, sources = {}, {}, []
    drawn, sizes = draws()
    for p, d in zip(plan, drawn):
        counts = d.train if side == TRAIN else d.eval
        at = 0
        for f in p.files:
            copies[f], at = counts[at : at + sizes[f]], at + sizes[f]
            formats[f] = p.formats
        sources.append({"source": p.source.where, "path": list(p.source.inputs), "files": p.files, **d.counts()})
    return Selection(side, copies, formats, sources)
