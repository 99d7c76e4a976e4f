"""Reading an output at a URL (``padprep inspect s3://...``, ``padprep export``, ``padprep.load``): its files
copied into a local read cache, then read as a local output.

``local_copy(url)`` reads the URL's ``manifest.json`` (a recipe's output: ``train/`` and ``eval/``'s), fetches
every file it lists into ``<cache>/reads/blobs/<sha256>`` (checked against the manifest's sha256 as it lands;
a file already there costs nothing) and gives a local folder, ``<cache>/reads/<sha256(url)[:16]>/<name>``,
that holds the manifest, ``rejects.jsonl`` and the files linked from the blobs under their names. A second read
of the same output fetches only the manifest (and ``rejects.jsonl`` when its size changed). Readers on one
machine (a node's ranks) share the folder under a lock; files are replaced by rename, never rewritten, so a
reader's open maps stay valid while a newer build is fetched. The cache is not bounded: ``rm -r <cache>/reads``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import shutil
from pathlib import Path
from typing import Iterator

from padprep.errors import EXIT_FAILED, PadprepError
from padprep.layout.shards import file_sha256
from padprep.output import location
from padprep.output.manifest import ManifestError
from padprep.output.publish import cache_folder, manifest_from, url_folder
from padprep.schema import MANIFEST, REJECTS

SIDES = ("train", "eval")  # a recipe's builds (as ``export/source.py`` reads them)


class FetchError(PadprepError):
    """A file of an output at a URL that is missing or differs from its manifest's sha256 (exit 1)."""

    exit_code = EXIT_FAILED


def local_copy(where: str | Path, verify: bool = False) -> Path:
    """``where`` itself when it is a local path; for a URL, the local folder holding its output (see the module).

    ``verify`` (``inspect --verify``): every file is fetched again, whatever the cache holds, and one missing at
    the URL or differing from its sha256 is left for the verification to report (missing, or as fetched).

    Raises:
        ManifestError: no output at the URL (exit 2), or a damaged manifest (exit 1).
        FetchError: a listed file missing or not as its manifest says (exit 1), unless ``verify``.
        LocationError: the URL cannot be read (no backend, no credentials, no bucket).
    """
    if not location.is_url(where):
        return Path(where)
    url = location.url_of(where).rstrip("/")
    reads = cache_folder("reads")
    view = reads / url_folder(url) / location.name_of(url)
    with location.failures(url, "read"), _locked(reads / url_folder(url)):
        if location.exists(location.join(url, MANIFEST)):
            _mirror(url, view, reads / "blobs", verify)
            return view
        sides = [s for s in SIDES if location.exists(location.join(url, s, MANIFEST))]
        if not sides:
            raise ManifestError(f"{url}: no {MANIFEST} here (nor in train/ or eval/); is this a padprep build output?")
        for side in sides:
            _mirror(location.join(url, side), view / side, reads / "blobs", verify)
        return view


def _mirror(url: str, view: Path, blobs: Path, verify: bool) -> None:
    """Make ``view`` hold ``url``'s output: every listed file linked from its blob, then rejects and manifest
    (the bytes read once: what is fetched is what that manifest lists)."""
    data = location.read_bytes(location.join(url, MANIFEST))
    manifest = manifest_from(data, location.join(url, MANIFEST))
    view.mkdir(parents=True, exist_ok=True)
    blobs.mkdir(parents=True, exist_ok=True)
    present = location.listing(url)
    wanted = {MANIFEST, REJECTS}
    for shard in manifest.shards:
        for name, sha in ((shard.file, shard.sha256), (shard.sources, shard.sources_sha256)):
            if not name:
                continue
            wanted.add(name)
            if name not in present:
                if not verify:
                    raise FetchError(
                        f"{location.join(url, name)}: listed in its manifest but not there; the output is damaged: rebuild it"
                    )
                _unlink(view / name)
                continue
            _place(location.join(url, name), sha, view / name, blobs, verify)
    _fetch_rejects(url, present.get(REJECTS), view)
    _replace_with(view / MANIFEST, lambda tmp: tmp.write_bytes(data))
    for stale in os.listdir(view):  # the view is padprep's own: what an older build listed goes
        if stale not in wanted and (view / stale).is_file():
            _unlink(view / stale)


def _place(url: str, sha: str | None, target: Path, blobs: Path, verify: bool) -> None:
    """``target`` linked to the blob of ``sha``, fetched first where it is not in the cache (always, to verify)."""
    blob = blobs / sha if sha else None
    if blob is not None and blob.is_file() and not verify:
        if target.is_file() and os.path.samefile(blob, target):
            return
        _replace_with(target, lambda tmp: _link(blob, tmp))
        return
    tmp = blobs / f".fetch-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        location.get_file(url, tmp)
        got = file_sha256(tmp)
        if blob is not None and got == sha:
            os.replace(tmp, blob)
            _replace_with(target, lambda t: _link(blob, t))
            return
        if not verify:
            raise FetchError(
                f"{url}: sha256 {got[:12]}... differs from its manifest's {str(sha)[:12]}...; the output is damaged "
                "or being replaced: read it again once its build has ended, or rebuild it"
            )
        os.replace(tmp, target)  # kept as fetched: inspect --verify reports the difference
    finally:
        _unlink(tmp)


def _fetch_rejects(url: str, size: int | None, view: Path) -> None:
    """``rejects.jsonl`` (no sha256 in the manifest): fetched again when its size differs from the local copy's."""
    target = view / REJECTS
    if size is None:
        _unlink(target)
        return
    if target.is_file() and target.stat().st_size == size:
        return
    _replace_with(target, lambda tmp: location.get_file(location.join(url, REJECTS), tmp))


def _replace_with(target: Path, make) -> None:
    """``make(tmp)`` then ``tmp`` renamed over ``target``: a reader that holds the old file keeps it whole."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        make(tmp)
        os.replace(tmp, target)
    finally:
        _unlink(tmp)


def _link(blob: Path, tmp: Path) -> None:
    try:
        os.link(blob, tmp)
    except OSError:  # a file system without hard links: a copy
        shutil.copyfile(blob, tmp)


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """One fetch of a URL's output at a time on this machine (a node's ranks read it together)."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


__all__ = ["FetchError", "local_copy"]
