"""The docs run as written: every shell and Python block of README.md and docs/*.md, executed.

Each page runs in a fresh directory holding a copy of ``sample_data/``, its blocks in the order a reader
meets them: they share that directory (a build in one block is the input of the next) and, for Python,
one namespace (a model made in one block trains in the next). Shell blocks run under ``bash -euo
pipefail`` with this environment's ``padprep`` first on ``PATH``.

A block that cannot run here says so right above it, in a comment the reader sees in the source:

    <!-- not run: needs a GPU and Qwen/Qwen3-0.6B from the Hub -->

and is skipped by name (``README.md:27``) with that reason. A block whose marker is missing or whose code
no longer runs fails, naming the page and line."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ROOT, SAMPLE

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL = {"bash", "sh", "shell", "console"}
PYTHON = {"python", "py"}
NOT_RUN = re.compile(r"<!--\s*not run:\s*(?P<reason>.+?)\s*-->")
FENCE = re.compile(r"^```(?P<lang>[\w+-]*)\s*$")


@dataclass(frozen=True)
class Block:
    page: str  # README.md, docs/training.md
    line: int  # of the opening fence
    lang: str
    code: str
    skip: str | None  # the marker's reason

    @property
    def name(self) -> str:
        return f"{self.page}:{self.line}"

    @property
    def slow(self) -> bool:
        """A model trained (transformers / trl): seconds to tens of seconds."""
        return self.lang in PYTHON and re.search(r"^\s*(from|import) (transformers|trl)\b", self.code, re.M) is not None


def blocks(path: Path) -> list[Block]:
    lines = path.read_text(encoding="utf-8").splitlines()
    found, i = [], 0
    while i < len(lines):
        fence = FENCE.match(lines[i])
        if not fence:
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        lang = fence["lang"].lower()
        if lang in SHELL | PYTHON:
            before = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
            marker = NOT_RUN.search(before)
            page = str(path.relative_to(ROOT))
            found.append(Block(page, i + 1, lang, "\n".join(lines[i + 1 : end]) + "\n", marker["reason"] if marker else None))
        i = end + 1
    return found


ALL = [b for page in PAGES for b in blocks(page)]


class Page:
    """One page's directory and Python namespace, its blocks run once each, in order."""

    def __init__(self, work: Path):
        self.work, self.namespace, self.done = work, {"__name__": "__main__"}, 0

    def run_through(self, block: Block, monkeypatch) -> None:
        mine = [b for b in ALL if b.page == block.page]
        for earlier in mine[self.done : mine.index(block) + 1]:
            self.done += 1
            if earlier.skip is None:
                self.run(earlier, monkeypatch, before=earlier is not block)

    def run(self, block: Block, monkeypatch, before: bool) -> None:
        said = f"{block.name} (run first: the blocks of a page run in order)" if before else block.name
        if block.lang in SHELL:
            env = {
                **os.environ,
                "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
                "COLUMNS": "80",
                "NO_COLOR": "1",
            }
            res = subprocess.run(
                ["bash", "-euo", "pipefail", "-c", block.code],
                cwd=self.work,
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert res.returncode == 0, (
                f"{said}: exit {res.returncode}\n{block.code}\n--- stdout\n{res.stdout[-3000:]}\n--- stderr\n{res.stderr[-3000:]}"
                "\nfix the doc so it runs as written, or mark it <!-- not run: why --> right above the block"
            )
            return
        import torch

        monkeypatch.chdir(self.work)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # a tiny model gains nothing from threads on a shared machine
        try:
            exec(compile(block.code, block.name, "exec"), self.namespace)
        except Exception as exc:
            raise AssertionError(
                f"{said} raised {type(exc).__name__}: {exc}\n"
                "fix the doc so it runs as written, or mark it <!-- not run: why --> right above the block"
            ) from exc
        finally:
            torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def pages(tmp_path_factory) -> dict[str, Page]:
    made: dict[str, Page] = {}
    for page in PAGES:
        work = tmp_path_factory.mktemp(page.stem)
        shutil.copytree(SAMPLE, work / "sample_data")
        made[str(page.relative_to(ROOT))] = Page(work)
    return made


@pytest.mark.parametrize(
    "block",
    [pytest.param(b, id=b.name, marks=[pytest.mark.slow] if b.slow else []) for b in ALL],
)
def test_doc_block_runs_as_written(block: Block, pages, monkeypatch):
    if block.skip is not None:
        pytest.skip(f"{block.name}: {block.skip}")
    pages[block.page].run_through(block, monkeypatch)


def test_every_page_is_read():
    """The runner finds the blocks: the pages hold shell and Python blocks, and most run."""
    assert {b.page for b in ALL} >= {"README.md", "docs/training.md", "docs/cli.md"}
    assert sum(b.skip is None for b in ALL) >= len(ALL) // 2, [b.name for b in ALL if b.skip]


def test_docs_name_tests_that_exist():
    """A doc that says a test checks something names a test file that is there (tests/test_ray.py moved)."""
    missing = [
        f"{page.relative_to(ROOT)}: {path}"
        for page in PAGES
        for groups in re.findall(r"`(tests/[\w/]+\.py)(?:::\w+)?`|\(run by (tests/[\w/]+\.py)", page.read_text(encoding="utf-8"))
        for path in groups
        if path and not (ROOT / path).is_file()
    ]
    assert not missing, "docs name test files that do not exist:\n" + "\n".join(missing)
