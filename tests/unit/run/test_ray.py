"""``--engine ray``: the same bytes as the local engine (shards, manifest but its engine, rejects).

A local Ray cluster is started once for the module (one CPU per core, a small object store) and shut
down after it. Skipped when Ray is not installed (``pip install 'padprep[ray]'``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from padprep.input.records import RawRecord
from padprep.run import ray_engine
from tests.conftest import ROOT, SAMPLE, alpaca_to_messages, run_build, shared_file, sharegpt_to_messages, tree_bytes
from tests.support.serve import serve

ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'padprep[ray]'")

TOK = SAMPLE / "tokenizer"


@pytest.fixture(scope="module")
def cluster():
    ray.init(
        num_cpus=2,
        object_store_memory=200 << 20,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"RAYON_NUM_THREADS": "1"}},
    )
    yield
    ray.shutdown()


def _without_engine(tree: dict[str, bytes]) -> dict[str, bytes]:
    """The tree with ``options.engine`` taken out of the manifest: the one field the engines may differ in."""
    manifest = json.loads(tree["manifest.json"])
    engine = manifest["options"].pop("engine")
    return {**tree, "manifest.json": json.dumps(manifest, indent=2).encode(), "engine": engine.encode()}


def _both(inputs: list[Path], tmp_path: Path, tokenizer, **options) -> tuple[dict, dict]:
    local, distributed = tmp_path / "local", tmp_path / "ray"
    run_build(inputs, tokenizer, local, **options)
    run_build(inputs, tokenizer, distributed, engine="ray", **options)
    a, b = _without_engine(tree_bytes(local)), _without_engine(tree_bytes(distributed))
    assert a.pop("engine") == b"local" and b.pop("engine") == b"ray"
    return a, b


def test_sample_data_is_byte_identical(tmp_path, cluster):
    inputs = [SAMPLE / "chat.jsonl", *sorted((SAMPLE / "formats").glob("*.json*"))]
    local, distributed = _both(inputs, tmp_path, TOK, max_reject_rate=1.0, chunk_size=7)
    assert local == distributed


@pytest.mark.parametrize("options", [{"max_length": 1024, "seed": 5}, {"pack": True, "max_length": 2048}])
def test_shared_data_with_bad_records_is_byte_identical(tmp_path, cluster, qwen_dir, monkeypatch, options):
    glaive = json.loads(shared_file("glaive_toolcall_en_demo.json").read_text())
    alpaca = json.loads(shared_file("alpaca_en_demo.json").read_text())
    lines = [json.dumps(sharegpt_to_messages(r), ensure_ascii=False) for r in glaive]
    lines += [json.dumps(alpaca_to_messages(r), ensure_ascii=False) for r in alpaca]
    bad = [
        '{"messages": [{"role": "user", "content": "unterminated',
        "[1, 2]",
        '{"messages": []}',
        '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": ""}]}',
    ]
    for i, b in enumerate(bad):
        lines.insert(97 + 331 * i, b)
    src = tmp_path / "mixed.jsonl"
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    raw = shared_file("c4_demo.jsonl")
    monkeypatch.setattr(ray_engine, "RANGE_BYTES", 64 << 10)  # many ranges: line numbers must still match
    local, distributed = _both(
        [src, raw, shared_file("alpaca_en_demo.json")], tmp_path, qwen_dir, max_reject_rate=0.05, chunk_size=64, **options
    )
    rejects = [json.loads(line) for line in local["rejects.jsonl"].splitlines()]
    assert len(rejects) >= len(bad) and {r["code"] for r in rejects} >= {"invalid_json", "wrong_type", "empty_reply"}
    assert local == distributed


def test_url_input_is_read_by_a_worker_and_byte_identical(tmp_path, cluster):
    with serve(SAMPLE) as server:
        inputs = [server.url("chat.jsonl"), SAMPLE / "formats" / "alpaca.json"]
        local, distributed = _both(inputs, tmp_path, TOK, max_reject_rate=1.0)
    assert local == distributed and json.loads(local["manifest.json"])["inputs"][0]["path"] == inputs[0]


def test_recipe_sides_are_byte_identical(tmp_path, cluster):
    from padprep.recipe.spec import parse_recipe
    from padprep.run.mixture import build_recipe, recipe_config
    from padprep.run.progress import Progress

    text = f"tokenizer: {TOK}\nseed: 2\nsources:\n  - path: {SAMPLE / 'chat.jsonl'}\n    weight: 1.5\n"
    text += f"  - path: {SAMPLE / 'formats' / 'sharegpt.json'}\neval:\n  fraction: 0.25\n"
    recipe = parse_recipe(text, "r.yaml")
    trees = []
    for engine in ("local", "ray"):
        cfg = recipe_config(recipe, {"output": tmp_path / engine, "engine": engine, "chunk_size": 5})
        build_recipe(recipe, cfg, Progress(), None)
        trees.append({side: _without_engine(tree_bytes(tmp_path / engine / side)) for side in ("train", "eval")})
    for side in ("train", "eval"):
        assert trees[0][side].pop("engine") == b"local" and trees[1][side].pop("engine") == b"ray"
    assert trees[0] == trees[1]


def test_preference_pairs_are_byte_identical(tmp_path, cluster):
    from tests.unit.train.test_pairs import sample_pairs

    src = tmp_path / "pairs.jsonl"
    src.write_text("".join(json.dumps(p) + "\n" for p in sample_pairs()))
    local, distributed = _both([src], tmp_path, TOK, chunk_size=5, seed=2)
    assert json.loads(local["manifest.json"])["format"] == "padprep-preference-pairs/1"
    assert local == distributed


def test_killed_ray_build_resumes_from_the_pieces_done(tmp_path, cluster, monkeypatch):
    """A Ray build interrupted after some pieces resumes after them, reading only the rest, to the same bytes."""
    from padprep.run import pipeline

    lines = (SAMPLE / "chat.jsonl").read_text().splitlines() * 20
    src = tmp_path / "chat.jsonl"
    src.write_text("\n".join(lines) + "\n")
    monkeypatch.setattr(ray_engine, "RANGE_BYTES", 64 << 10)
    monkeypatch.setenv("PADPREP_CHECKPOINT_SECONDS", "0")
    run_build([src], TOK, tmp_path / "clean", engine="ray", seed=1)
    calls = {"n": 0}
    real = pipeline.Checkpoint.add_segment

    def stop_after_four(self, *args, **kwargs):
        real(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt  # as SIGTERM arrives in the CLI: the partial build is kept

    monkeypatch.setattr(pipeline.Checkpoint, "add_segment", stop_after_four)
    with pytest.raises(KeyboardInterrupt):
        run_build([src], TOK, tmp_path / "out", engine="ray", seed=1)
    monkeypatch.setattr(pipeline.Checkpoint, "add_segment", real)
    state = json.loads((tmp_path / ".out.padprep-state.json").read_text())
    assert state["segments"][-1]["position"]["pieces"] == 4
    skipped = []
    real_pieces = ray_engine.RayEngine._pieces

    def pieces(self, *args):
        skipped.append(self._resume_pieces)
        return real_pieces(self, *args)

    monkeypatch.setattr(ray_engine.RayEngine, "_pieces", pieces)
    run_build([src], TOK, tmp_path / "out", engine="ray", seed=1)
    assert skipped == [4]  # the four pieces the cluster finished are not read again
    assert tree_bytes(tmp_path / "out") == tree_bytes(tmp_path / "clean")


def test_ranges_start_at_lines_and_cover_the_file(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_bytes(b"".join(b'{"text": "%d"}\n' % i * (1 + i % 5) for i in range(500)) + b'{"text": "last"}')
    pieces = list(ray_engine.plan_pieces([str(path)], range_bytes=300))
    data = path.read_bytes()
    assert pieces[0].start == 0 and pieces[-1].end == len(data) and len(pieces) > 10
    assert all(a.end == b.start and data[b.start - 1 : b.start] == b"\n" for a, b in zip(pieces, pieces[1:]))
    lines, records = 0, []
    for piece in pieces:
        got, n = ray_engine.read_piece(piece, "text")
        records += [RawRecord(r.source, r.line + lines, r.text, unit=r.unit, format=r.format) for r in got]
        lines += n
    from padprep.input.read import read_records

    expected = [r.with_format("text") for r in read_records(str(path))]
    assert records == expected


def test_without_ray_the_engine_fails_in_one_line(tmp_path):
    """A Python where ``import ray`` fails: exit 2 and the install command, no traceback."""
    blocker = tmp_path / "ray.py"
    blocker.write_text("raise ImportError('no ray here')\n")
    src = SAMPLE / "chat.jsonl"
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}:{ROOT}"}
    res = subprocess.run(
        [sys.executable, "-m", "padprep", "build", str(src), "-t", str(TOK), "-o", str(tmp_path / "o"), "--engine", "ray"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
    )
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip().splitlines() == [f"padprep: error: {ray_engine.INSTALL_HINT}"]
