"""Hostile paths and user mistakes: padprep replaces only what it wrote itself (output/ownership.py).

Each test lays out a user's folder, runs the real command, and checks that every file that existed before
still exists byte for byte (and every symlink still points where it did), whatever the command did.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import SAMPLE, padprep_cli
from tests.e2e.test_first_run import assert_one_line_failure

TOK = SAMPLE / "tokenizer"
CHAT = SAMPLE / "chat.jsonl"


def snapshot(root: Path) -> dict[str, bytes | str]:
    """Every file under ``root`` with its bytes, and every symlink with its target."""
    out: dict[str, bytes | str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            if path.is_symlink():
                out[str(path.relative_to(root))] = "-> " + os.readlink(path)
            elif path.is_file():
                out[str(path.relative_to(root))] = path.read_bytes()
    return out


def assert_nothing_lost(before: dict[str, bytes | str], root: Path) -> None:
    after = snapshot(root)
    lost = [name for name in before if after.get(name) != before[name]]
    assert not lost, f"changed or gone: {lost}"


def build(out: str | Path, *inputs: str | Path, extra: tuple[str, ...] = (), cwd: Path | None = None, tokenizer=TOK):
    return padprep_cli("build", *map(str, inputs), "--tokenizer", str(tokenizer), "-o", str(out), *extra, cwd=cwd)


@pytest.fixture
def project(tmp_path) -> Path:
    """A user's project folder: data, notes, and a folder of their own."""
    proj = tmp_path / "proj"
    (proj / "mine").mkdir(parents=True)
    shutil.copyfile(CHAT, proj / "chat.jsonl")
    (proj / "notes.md").write_text("my notes\n")
    (proj / "mine" / "weights.bin").write_bytes(os.urandom(64))
    return proj


def test_an_output_that_holds_the_input_is_refused(project):
    before = snapshot(project.parent)
    for extra in ((), ("--overwrite",), ("--force",)):
        res = build(project, project / "chat.jsonl", extra=extra)
        assert_one_line_failure(res, 2, str(project), "holds the input", "chat.jsonl")
    assert_nothing_lost(before, project.parent)


def test_an_output_that_is_the_input_is_refused(project):
    before = snapshot(project.parent)
    res = build(project / "chat.jsonl", project / "chat.jsonl", extra=("--overwrite",))
    assert_one_line_failure(res, 2, "is the input")
    assert_nothing_lost(before, project.parent)


def test_an_output_inside_an_input_directory_is_refused(project):
    before = snapshot(project.parent)
    res = build(project / "out", project, extra=("--overwrite",))
    assert_one_line_failure(res, 2, "lies inside the input directory")
    assert_nothing_lost(before, project.parent)
    assert not (project / "out").exists()


def test_a_users_folder_is_not_replaced(project, tmp_path):
    before = snapshot(tmp_path)
    for extra in ((), ("--overwrite",), ("--force",)):
        res = build(project / "mine", CHAT, extra=extra)
        assert_one_line_failure(res, 2, "is not a padprep output", "weights.bin", "choose another --output")
    assert_nothing_lost(before, tmp_path)


def test_a_users_file_is_not_replaced(project, tmp_path):
    before = snapshot(tmp_path)
    res = build(project / "notes.md", CHAT, extra=("--overwrite",))
    assert_one_line_failure(res, 2, "is a file, not a padprep output")
    assert_nothing_lost(before, tmp_path)


def test_a_file_added_to_an_output_is_kept(tmp_path):
    out = tmp_path / "out"
    assert build(out, CHAT).returncode == 0
    (out / "README.md").write_text("what this build is for\n")
    (out / "extra").mkdir()
    (out / "extra" / "eval.jsonl").write_text("{}\n")
    before = snapshot(tmp_path)
    for extra in (("--overwrite", "--max-length", "300"), ("--force",)):
        res = build(out, CHAT, extra=extra)
        assert_one_line_failure(res, 2, "README.md", "extra", "padprep did not write")
    assert_nothing_lost(before, tmp_path)
    (out / "README.md").unlink()
    shutil.rmtree(out / "extra")
    res = build(out, CHAT, extra=("--overwrite", "--max-length", "300"))  # padprep's own files alone: replaced
    assert res.returncode == 0, res.stderr
    assert json.loads((out / "manifest.json").read_text())["options"]["max_length"] == 300
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # nothing of the old output left beside it


def test_an_earlier_output_needs_overwrite_and_an_empty_folder_does_not(tmp_path):
    out = tmp_path / "out"
    assert build(out, CHAT).returncode == 0
    assert_one_line_failure(build(out, CHAT, extra=("--max-length", "300")), 2, "an earlier padprep build", "--overwrite")
    empty = tmp_path / "empty"
    empty.mkdir()
    res = build(empty, CHAT)
    assert res.returncode == 0, res.stderr
    assert (empty / "manifest.json").is_file()


def test_a_damaged_manifest_is_not_taken_as_padprep_s(tmp_path):
    out = tmp_path / "out"
    assert build(out, CHAT).returncode == 0
    (out / "manifest.json").write_text("{not json")
    before = snapshot(tmp_path)
    res = build(out, CHAT, extra=("--overwrite", "--max-length", "300"))
    assert_one_line_failure(res, 2, "cannot be read", "remove the folder yourself")
    assert_nothing_lost(before, tmp_path)


def test_the_current_directory_is_never_the_output(project, tmp_path):
    before = snapshot(tmp_path)
    res = build(".", "chat.jsonl", extra=("--overwrite",), cwd=project)
    assert_one_line_failure(res, 2, "holds the input")
    elsewhere = tmp_path / "data.jsonl"
    shutil.copyfile(CHAT, elsewhere)
    before = snapshot(tmp_path)
    res = build(".", elsewhere, extra=("--overwrite",), cwd=project)
    assert_one_line_failure(res, 2, "is the current directory")
    res = build("..", elsewhere, extra=("--overwrite",), cwd=project / "mine")
    assert_one_line_failure(res, 2, "is the current directory or above it")
    assert_nothing_lost(before, tmp_path)


def test_a_symlinked_output_is_built_where_it_points(project, tmp_path):
    real = tmp_path / "scratch" / "out"
    real.parent.mkdir()
    link = tmp_path / "out"
    link.symlink_to(real)
    assert build(link, CHAT).returncode == 0
    assert link.is_symlink() and (real / "manifest.json").is_file()
    before = snapshot(tmp_path)
    res = build(link, CHAT, extra=("--overwrite", "--max-length", "300"))
    assert res.returncode == 0, res.stderr
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert json.loads((real / "manifest.json").read_text())["options"]["max_length"] == 300
    assert_nothing_lost({k: v for k, v in before.items() if not k.startswith("scratch")}, tmp_path)
    # a link to the user's folder: refused, the folder and the link untouched
    (tmp_path / "to-mine").symlink_to(project / "mine")
    before = snapshot(tmp_path)
    res = build(tmp_path / "to-mine", CHAT, extra=("--overwrite",))
    assert_one_line_failure(res, 2, "not a padprep output")
    # a link to the input's folder: the output is that folder, which holds the input
    (tmp_path / "to-proj").symlink_to(project)
    res = build(tmp_path / "to-proj", project / "chat.jsonl", extra=("--overwrite",))
    assert_one_line_failure(res, 2, "holds the input")
    assert_nothing_lost(before, tmp_path)


def test_the_tokenizer_and_template_are_inputs_too(tmp_path):
    out = tmp_path / "out"
    assert build(out, CHAT).returncode == 0
    shutil.copytree(TOK, out / "tok")
    before = snapshot(tmp_path)
    res = build(out, CHAT, extra=("--overwrite", "--max-length", "300"), tokenizer=out / "tok")
    assert_one_line_failure(res, 2, "holds the input", "tok")
    assert_nothing_lost(before, tmp_path)


def test_padprep_s_own_files_beside_the_output_are_never_inputs(tmp_path):
    data = tmp_path / "out.rejects.jsonl"  # the name a failed build's rejects are kept under, then removed
    shutil.copyfile(CHAT, data)
    before = snapshot(tmp_path)
    assert_one_line_failure(build(tmp_path / "out", data), 2, "padprep keeps beside the output")
    assert_nothing_lost(before, tmp_path)


def test_an_output_url_padprep_cannot_write_is_refused_in_one_line(tmp_path):
    for url in ("https://example.com/out", "hf://datasets/org/out"):
        res = build(url, CHAT, cwd=tmp_path)
        assert_one_line_failure(res, 2, f"--output {url}", "cannot write there")
    if importlib.util.find_spec("gcsfs") is None:  # a URL whose fsspec backend is missing: what to install
        res = build("gs://bucket/out", CHAT, cwd=tmp_path)
        assert_one_line_failure(res, 2, "gs://bucket/out:", "pip install 'padprep[cloud]'")
    assert list(tmp_path.iterdir()) == []  # no local folder named "https:" or "gs:"


def test_a_recipe_output_never_holds_its_sources_or_the_recipe(project, tmp_path):
    recipe = project / "recipe.yaml"
    recipe.write_text(f"tokenizer: {TOK}\nsources:\n  - path: {project / 'chat.jsonl'}\n")
    before = snapshot(tmp_path)
    for out in (project, tmp_path):
        res = padprep_cli("build", "--recipe", str(recipe), "-o", str(out), "--overwrite")
        assert_one_line_failure(res, 2, "holds the input")
    other = tmp_path / "recipes"
    other.mkdir()
    (other / "r.yaml").write_text(f"tokenizer: {TOK}\nsources:\n  - path: {CHAT}\n")
    res = padprep_cli("build", "--recipe", str(other / "r.yaml"), "-o", str(other / "built" / ".."), "--overwrite")
    assert_one_line_failure(res, 2, "holds the input", "r.yaml")
    # a side with a user's file in it is not replaced
    res = padprep_cli("build", "--recipe", str(recipe), "-o", str(tmp_path / "built"))
    assert res.returncode == 0, res.stderr
    (tmp_path / "built" / "train" / "keep.txt").write_text("mine\n")
    before = snapshot(tmp_path)
    res = padprep_cli("build", "--recipe", str(recipe), "-o", str(tmp_path / "built"), "--force")
    assert_one_line_failure(res, 2, "keep.txt", "padprep did not write")
    assert_nothing_lost(before, tmp_path)


def test_a_read_only_parent_fails_in_one_line_and_loses_nothing(project, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "kept.txt").write_text("kept\n")
    before = snapshot(tmp_path)
    locked.chmod(0o555)
    try:
        res = build(locked / "out", project / "chat.jsonl")
    finally:
        locked.chmod(0o755)
    if os.geteuid() != 0:  # root writes anyway: then the build succeeds, and still loses nothing
        assert_one_line_failure(res, 1, "ermission")
        assert not (locked / "out").exists()
    else:
        assert res.returncode == 0, res.stderr
    assert_nothing_lost(before, tmp_path)
