"""Outputs at a URL (``--output s3://bucket/prefix``), against a local S3 server (moto's, in this process).

A build to a URL is built in a local staging output and published, manifest last (``output/publish.py``):
the same bytes as the build to a local folder, the same rules for up to date, replacing and foreign files, and
a publish killed midway leaves no manifest (no reader sees a half output) until the same command completes it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, SAMPLE, padprep_cli, tree_bytes
from tests.support.s3 import make_bucket, s3_server

pytestmark = pytest.mark.slow

CHAT = "sample_data/chat.jsonl"  # relative, from ROOT: the manifest records inputs as given
TOK = "sample_data/tokenizer"


@pytest.fixture(scope="module")
def s3():
    """One S3 server for the module; its environment is in os.environ, so the CLI's subprocesses reach it."""
    with s3_server() as env:
        yield env


def _fs():
    import s3fs

    return s3fs.S3FileSystem(skip_instance_cache=True)


def _build(out: str | Path, *extra: str, kill_at: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "120"}
    env.pop("PADPREP_KILL_AT", None)
    if kill_at:
        env["PADPREP_KILL_AT"] = kill_at
    return subprocess.run(
        [sys.executable, "-m", "padprep", "build", CHAT, "-t", TOK, "-o", str(out), "--max-length", "512", *extra],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=300,
        start_new_session=True,  # its own process group: a kill point takes the pad process too, never pytest
    )


def remote_tree(url: str) -> dict[str, bytes]:
    """Every object under ``url`` and its bytes (as ``tree_bytes`` for a folder)."""
    fs = _fs()
    base = url[len("s3://") :].rstrip("/")
    return {path[len(base) + 1 :]: fs.cat_file(path) for path in sorted(fs.find(base))}


def beside(url: str) -> list[str]:
    """What lies next to the output in its bucket (padprep's lock and record are named ``.OUT.padprep-*``)."""
    parent = url[len("s3://") :].rsplit("/", 1)[0]
    return sorted(p.rsplit("/", 1)[-1] for p in _fs().ls(parent, detail=False))


@pytest.fixture(scope="module")
def local(tmp_path_factory) -> dict[int, dict[str, bytes]]:
    """The same builds to a local folder, at --max-length 512 and 256 (different buckets: different shard names)."""
    trees = {}
    for length in (512, 256):
        out = tmp_path_factory.mktemp("local") / "out"
        done = _build(out, "--max-length", str(length))
        assert done.returncode == 0, done.stderr
        trees[length] = tree_bytes(out)
    return trees


def test_a_build_to_s3_is_the_local_build_byte_for_byte_and_then_up_to_date(s3, local):
    url = make_bucket() + "/shards/out"
    done = _build(url)
    assert done.returncode == 0, done.stderr
    assert "manifest.json written last" in done.stderr
    assert remote_tree(url) == local[512]  # every file: shards, sidecars, rejects.jsonl, manifest.json
    assert beside(url) == ["out"]  # no lock object, no record left
    again = _build(url)
    assert again.returncode == 0, again.stderr
    assert f"padprep: {url} is up to date" in again.stdout
    staging = Path(os.environ["PADPREP_CACHE_DIR"]) / "outputs"
    assert not [p for p in staging.rglob("*") if p.is_file()]  # the staged output went once published


def test_replacing_needs_overwrite_and_removes_the_old_shards(s3, local):
    url = make_bucket() + "/out"
    assert _build(url).returncode == 0
    refused = _build(url, "--max-length", "256")
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1
    assert "pass --overwrite to replace it" in refused.stderr
    assert remote_tree(url) == local[512]
    replaced = _build(url, "--max-length", "256", "--overwrite")
    assert replaced.returncode == 0, replaced.stderr
    assert remote_tree(url) == local[256]  # the old shards of buckets over 256 are gone
    assert beside(url) == ["out"]


def test_a_foreign_object_is_never_replaced_nor_lost(s3):
    url = make_bucket() + "/out"
    assert _build(url).returncode == 0
    _fs().pipe_file(url[len("s3://") :] + "/notes.txt", b"mine\n")
    before = remote_tree(url)
    res = _build(url, "--max-length", "256", "--overwrite")
    assert res.returncode == 2 and res.stderr.count("\n") == 1
    assert "notes.txt, which padprep did not write" in res.stderr
    assert remote_tree(url) == before
    other = make_bucket() + "/data"
    _fs().pipe_file(other[len("s3://") :] + "/table.csv", b"a,b\n")
    res = _build(other, "--overwrite")
    assert res.returncode == 2 and "is not a padprep output (it holds table.csv)" in res.stderr
    assert remote_tree(other) == {"table.csv": b"a,b\n"}


def test_a_publish_killed_midway_shows_no_output_and_the_rerun_completes_it(s3, local):
    url = make_bucket() + "/out"
    assert _build(url).returncode == 0
    killed = _build(url, "--max-length", "256", "--overwrite", kill_at="publish:3")
    assert killed.returncode < 0  # SIGKILL, mid-upload
    left = remote_tree(url)
    assert "manifest.json" not in left  # the old one retired before the first upload, the new one not yet written
    assert ".out.padprep-replacing" in beside(url) and ".out.padprep-lock" in beside(url)
    seen = padprep_cli("inspect", url)
    assert seen.returncode == 2 and "no manifest.json" in seen.stderr  # a reader sees no output, never a half one
    rerun = _build(url, "--max-length", "256", "--overwrite")
    assert rerun.returncode == 0, rerun.stderr
    assert "took over the lock left by a build that is no longer running" in rerun.stderr
    assert remote_tree(url) == local[256]  # the stale old shards recorded before the kill are gone too
    assert beside(url) == ["out"]


def test_inspect_verify_export_and_load_read_the_url(s3, tmp_path, local):
    import padprep
    from padprep.output import fetch, location

    url = make_bucket() + "/out"
    assert _build(url).returncode == 0
    verified = padprep_cli("inspect", url, "--verify")
    assert verified.returncode == 0 and "verify: ok" in verified.stdout, verified.stderr
    stats = json.loads(padprep_cli("inspect", url, "--json", "--show", "1").stdout)
    assert stats["output"] == url and len(stats["rows"]) == 1
    assert padprep_cli("inspect", url, "--html", str(tmp_path / "r.html")).returncode == 0
    exported = padprep_cli("export", url, str(tmp_path / "ax"), "--to", "axolotl")
    assert exported.returncode == 0, exported.stderr
    local_out = tmp_path / "here"
    local_out.mkdir()
    for name, data in local[512].items():
        (local_out / name).write_bytes(data)
    remote, here = padprep.load(url), padprep.load(local_out)
    assert len(remote) == len(here) and all((remote[i]["input_ids"] == here[i]["input_ids"]).all() for i in range(len(here)))
    fetched = []
    real = location.get_file
    location.get_file = lambda where, dest: (fetched.append(where), real(where, dest))[1]
    try:
        fetch.local_copy(url)  # a second read: every file already in the read cache
    finally:
        location.get_file = real
    assert fetched == []


def test_a_damaged_shard_at_the_url_is_reported_not_read(s3, local, tmp_path, monkeypatch):
    from padprep.output.fetch import FetchError, local_copy

    url = make_bucket() + "/out"
    assert _build(url).returncode == 0
    shard = next(name for name in local[512] if name.endswith(".arrow"))
    _fs().pipe_file(f"{url[len('s3://') :]}/{shard}", local[512][shard][:-8] + b"damaged!")
    verified = padprep_cli("inspect", url, "--verify")
    assert verified.returncode == 1 and f"{shard}: not a readable shard" in verified.stdout  # fetched again to verify
    monkeypatch.setenv("PADPREP_CACHE_DIR", str(tmp_path / "cache"))  # a read cache without the good bytes
    with pytest.raises(FetchError, match="differs from its manifest's"):
        local_copy(url)


def test_a_lock_held_on_another_machine_refuses_the_build(s3):
    url = make_bucket() + "/out"
    lock = url[len("s3://") :].rsplit("/", 1)[0] + "/.out.padprep-lock"
    _fs().pipe_file(lock, json.dumps({"pid": 1, "host": "elsewhere", "started": "2026-01-01 00:00:00"}).encode())
    res = _build(url)
    assert res.returncode == 2 and res.stderr.count("\n") == 1
    assert "another build is writing this output (pid 1 on elsewhere" in res.stderr and ".out.padprep-lock" in res.stderr
    assert remote_tree(url) == {}


def test_a_recipe_builds_train_and_eval_at_the_url(s3, tmp_path):
    recipe = tmp_path / "mix.yaml"
    recipe.write_text(
        f"tokenizer: {SAMPLE / 'tokenizer'}\nmax_length: 512\nsources:\n  - path: {SAMPLE / 'chat.jsonl'}\neval:\n  count: 8\n"
    )
    url = make_bucket() + "/mix"
    done = padprep_cli("build", "--recipe", str(recipe), "-o", url)
    assert done.returncode == 0, done.stderr
    tree = remote_tree(url)
    assert "train/manifest.json" in tree and "eval/manifest.json" in tree
    exported = padprep_cli("export", url, str(tmp_path / "lf"), "--to", "llamafactory")
    assert exported.returncode == 0, exported.stderr


def _staged(tree: dict[str, bytes], folder: Path) -> Path:
    folder.mkdir(parents=True)
    for name, data in tree.items():
        (folder / name).write_bytes(data)
    return folder


def test_publish_counts_files_already_at_the_url_and_retire_old_is_idempotent(s3, local, tmp_path):
    """The interface the Ray engine relies on: shards it wrote to the URL itself are not staged here."""
    from padprep.output.publish import PublishError, publish, retire_old

    url = make_bucket() + "/out"
    shard = next(name for name in local[512] if name.endswith(".arrow"))
    staged = _staged(local[512], tmp_path / "a" / "out")
    _fs().pipe_file(f"{url[len('s3://') :]}/{shard}", local[512][shard])
    (staged / shard).unlink()
    publish(staged, url, lambda line: None)
    assert remote_tree(url) == local[512] and not staged.exists()
    listed = [n for n in local[512] if n not in ("manifest.json", "rejects.jsonl")]
    assert sorted(retire_old(url)) == sorted(listed) and "manifest.json" not in remote_tree(url)
    assert sorted(retire_old(url)) == sorted(listed)  # again: nothing more to retire, the same names
    missing = _staged(local[256], tmp_path / "b" / "out")
    gone = next(name for name in local[256] if name.endswith(".arrow") and name not in local[512])
    (missing / gone).unlink()
    with pytest.raises(PublishError, match=f"{gone}: listed in the manifest"):
        publish(missing, url, lambda line: None)
    assert "manifest.json" not in remote_tree(url)
