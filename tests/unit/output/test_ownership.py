"""output/ownership.py: what padprep may replace, and the commit that replaces only that."""

from __future__ import annotations

import pytest

from padprep.output.ownership import OutputExists, OutputInTheWay, check_apart, check_replaceable, owned_files
from padprep.run.checkpoint import Checkpoint
from tests.conftest import SAMPLE, run_build, tree_bytes


@pytest.fixture
def built(tmp_path):
    out = tmp_path / "out"
    manifest = run_build([SAMPLE / "chat.jsonl"], SAMPLE / "tokenizer", out)
    return out, manifest


def test_an_output_is_padprep_s_when_it_holds_only_what_its_manifest_lists(built):
    out, manifest = built
    listed = [name for s in manifest["shards"] for name in (s["file"], s["sources"])]  # each shard and its sidecar
    assert sorted(owned_files(out)) == sorted(listed + ["manifest.json", "rejects.jsonl"])
    with pytest.raises(OutputExists, match="--overwrite"):
        check_replaceable(out, replace=False)
    check_replaceable(out, replace=True)
    (out / "shard-extra.arrow").write_bytes(b"mine")  # padprep's kind of name, but not listed: not padprep's
    with pytest.raises(OutputInTheWay, match="shard-extra.arrow, which padprep did not write"):
        check_replaceable(out, replace=True)


def test_paths_are_compared_resolved(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.jsonl").write_text("{}\n")
    (tmp_path / "alias").symlink_to(tmp_path / "data")
    with pytest.raises(OutputInTheWay, match="holds the input"):
        check_apart(tmp_path / "alias", [tmp_path / "data" / "a.jsonl"])
    with pytest.raises(OutputInTheWay, match="lies inside the input directory"):
        check_apart(tmp_path / "alias" / "sub" / ".." / "out", [tmp_path / "data"])
    check_apart(tmp_path / "out", [tmp_path / "data", "hf://datasets/org/name", "-"])  # apart: fine


def test_a_file_put_into_the_old_output_during_the_build_stops_the_commit_and_is_kept(built, tmp_path):
    out, _ = built
    checkpoint = Checkpoint(out, "key", "local", fresh=False)
    (checkpoint.path / "manifest.json").write_text("{}")  # the new output, as complete as the commit needs
    (out / "notes.md").write_text("added while the build ran\n")
    before = tree_bytes(out)
    with pytest.raises(OutputInTheWay, match="notes.md.*run the same command again"):
        checkpoint.commit()
    assert tree_bytes(out) == before and (checkpoint.path / "manifest.json").is_file()
    (out / "notes.md").unlink()
    checkpoint.commit()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"] and tree_bytes(out) == {"manifest.json": b"{}"}
