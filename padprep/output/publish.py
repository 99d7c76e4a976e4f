"""Publishing a build to a URL (``--output s3://bucket/prefix``, ``gs://``, ``az://``): the same promises as a
local output, on a store that has no rename.

A build to a URL runs as any build, into a local *staging* output under the user's cache
(``staging_path``: ``<cache>/outputs/<sha256(url)[:16]>/<name>``), with its lock, checkpoints and resume
(``run/checkpoint.py``): the partial state is on the building machine. Then ``publish`` puts it at the URL:

1. ``retire_old``: the old output's manifest is deleted, after the names it lists are recorded beside the
   output (``.OUT.padprep-replacing``): from here no reader finds a manifest, so none reads a half output;
2. every file the staged manifest lists (shards, their ``.sources.parquet``), then ``rejects.jsonl``, then
   ``manifest.json`` last: the manifest is the commit marker;
3. ``finish``: the old names the new manifest does not list are removed, by name, then the record.

A publish killed anywhere is completed by the same command run again (the staged output is up to date, the
record still names the old files). An existing output is replaced only when it is padprep's (its manifest,
the files it lists, ``rejects.jsonl``, and what a killed publish recorded: nothing else), and only with
``--overwrite`` (``check_replaceable``). ``RemoteLock`` keeps builds on other machines out (``.OUT.padprep-lock``).
Every remote call goes through ``location.py``.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
import uuid
from pathlib import Path
from typing import Callable, Iterable

from padprep.errors import EXIT_FAILED, EXIT_USAGE, PadprepError
from padprep.failpoints import kill_point
from padprep.output import location
from padprep.output.manifest import Manifest, ManifestError, read_manifest
from padprep.output.ownership import OutputExists, OutputInTheWay, names_shown, owned_files, remove_owned
from padprep.schema import MANIFEST, REJECTS
from padprep.store import default_root
from padprep.store.store import Store

REPLACING = "replacing"  # beside the output: the names a publish may leave behind, removed when it ends
LOCK = "lock"  # beside the output: the build writing it (pid, host, start)


class PublishError(PadprepError):
    """A staged build that cannot be published as its manifest says (exit 1)."""

    exit_code = EXIT_FAILED


class RemoteLocked(PadprepError):
    """Another build holds the output's lock object (exit 2)."""

    exit_code = EXIT_USAGE


# -- where the local copies live -------------------------------------------------------------------


def cache_folder(what: str, cache_dir: Path | None = None) -> Path:
    """``<cache>/WHAT``: the tokenized store's folder (``--cache-dir``, ``PADPREP_CACHE_DIR``, the user's cache),
    its index made first so that the store still knows the folder as its own."""
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_root()
    try:
        Store(root)._make_index()
    except OSError as exc:
        raise location.LocationError(f"{root}: cannot keep local copies of outputs here ({exc}); choose another --cache-dir")
    return root / what


def url_folder(url: str) -> str:
    """A URL's folder name in the cache: the first 16 hex digits of its sha256."""
    return hashlib.sha256(location.url_of(url).rstrip("/").encode()).hexdigest()[:16]


def staging_path(url: str, cache_dir: Path | None = None) -> Path:
    """Where a build to ``url`` is made before it is published (see the module's description)."""
    return cache_folder("outputs", cache_dir) / url_folder(url) / location.name_of(url)


def failed_rejects_url(url: str) -> str:
    """Where the rejects of a failed build to ``url`` are kept: ``OUT.rejects.jsonl`` beside it, as for a local output."""
    return location.join(location.parent_of(url), f"{location.name_of(url)}.{REJECTS}")


# -- what is at the URL ----------------------------------------------------------------------------


def read_remote_manifest(url: str) -> Manifest | None:
    """The manifest at ``url`` (None: there is none).

    Raises:
        ManifestError: a damaged one, or one of another format (exit 1).
    """
    where = location.join(url, MANIFEST)
    try:
        data = location.read_bytes(where)
    except FileNotFoundError:
        return None
    return manifest_from(data, where)


def manifest_from(data: bytes, where: str) -> Manifest:
    """A manifest from the bytes read at ``where`` (as ``manifest.read_manifest`` reads a local one).

    Raises:
        ManifestError: damaged, or of another format (exit 1).
    """
    try:
        obj = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ManifestError(
            f"{where}: damaged, not JSON ({getattr(exc, 'msg', exc)}); rebuild the output", damaged=True
        ) from None
    return Manifest.from_json(obj, where)


def listed_names(manifest: Manifest) -> list[str]:
    """The files a manifest lists (shards and their sidecars), in its order."""
    return [name for shard in manifest.shards for name in (shard.file, shard.sources) if name]


def remote_up_to_date(url: str, key: str | None) -> Manifest | None:
    """The manifest at ``url`` when it was built with ``key`` and every file it lists is there with its size
    (as ``buildkey.up_to_date`` for a local output); else None."""
    if key is None:
        return None
    with location.failures(url, "read"):
        try:
            manifest = read_remote_manifest(url)
        except ManifestError:
            return None
        if manifest is None or manifest.build_key != key:
            return None
        present = location.listing(url)
    if REJECTS not in present or any(present.get(s.file) != s.bytes for s in manifest.shards):
        return None
    return manifest


def check_apart(url: str, inputs: Iterable[str | Path]) -> None:
    """Refuse an output URL that is, or holds, one of the inputs (a build replaces its output), or a bucket
    itself; a URL without its fsspec backend is refused here too, before any work."""
    location.filesystem(url)
    out = location.url_of(url).rstrip("/")
    for given in inputs:
        text = location.url_of(given) if location.is_url(given) else ""
        if text.rstrip("/") == out or text.startswith(out + "/"):
            raise OutputInTheWay(f"{url}: holds the input {text}; write the output to a prefix of its own")
    if "://" not in location.parent_of(out) or location.parent_of(out).endswith("://"):
        raise OutputInTheWay(f"{url}: is a bucket, not a folder in one; name a prefix, e.g. {out}/shards")


def check_replaceable(url: str, replace: bool) -> None:
    """An output at ``url`` may be built into: nothing there, what a killed publish left, or padprep's and
    ``replace`` given (``--overwrite``, ``--force``); the same rule and words as ``ownership.py``.

    Raises:
        OutputInTheWay: something padprep did not write is there (whatever ``replace`` says).
        OutputExists: an earlier padprep output, and ``replace`` is False.
    """
    with location.failures(url, "read"):
        present = location.listing(url)
        if not present:
            return
        recorded = _recorded(url)
        try:
            manifest = read_remote_manifest(url) if MANIFEST in present else None
        except ManifestError as exc:
            raise OutputInTheWay(
                f"{url}: its {MANIFEST} cannot be read ({exc}), so padprep cannot tell which files are its own; "
                "remove them yourself, or choose another --output"
            ) from None
    if manifest is None and recorded is None:
        raise OutputInTheWay(
            f"{url}: already exists and is not a padprep output (it holds {names_shown(sorted(present))}); "
            "padprep replaces only its own outputs: choose another --output"
        )
    allowed = set(recorded or ()) | set(listed_names(manifest) if manifest else ()) | {MANIFEST, REJECTS}
    foreign = [name for name, size in sorted(present.items()) if name not in allowed or size is None]
    if foreign:
        raise OutputInTheWay(
            f"{url}: holds {names_shown(foreign)}, which padprep did not write; move {'it' if len(foreign) == 1 else 'them'} "
            "out of the output, or choose another --output"
        )
    if manifest is not None and not replace:
        raise OutputExists(f"{url} already exists (an earlier padprep build); pass --overwrite to replace it")


# -- the record of what a publish may leave behind -------------------------------------------------


def _record_url(url: str) -> str:
    return location.beside_url(url, REPLACING)


def _recorded(url: str) -> list[str] | None:
    """The names in the "replacing" record beside ``url`` (None: no publish is under way there)."""
    try:
        obj = json.loads(location.read_bytes(_record_url(url)))
    except FileNotFoundError:
        return None
    except ValueError:
        return []  # torn by hand: nothing to remove by name, and the output is still recognised as in replacement
    names = obj.get("names") if isinstance(obj, dict) else None
    return [n for n in names if isinstance(n, str) and n and "/" not in n] if isinstance(names, list) else []


def claim(url: str, names: Iterable[str]) -> list[str]:
    """Add ``names`` to the "replacing" record before they are written to ``url``: a killed publish's files are
    then known as padprep's (the next run replaces them without calling them foreign), and removed by name if the
    finished build does not list them. Returns every recorded name."""
    every = sorted(set(_recorded(url) or ()) | set(names))
    location.write_bytes(_record_url(url), json.dumps({"names": every}).encode())
    return every


def retire_old(url: str) -> list[str]:
    """Take the old output at ``url`` out of readers' sight: record the names its manifest lists, then delete
    the manifest. Idempotent: with no manifest there, the names already recorded. Returns the recorded names."""
    with location.failures(url, "replace the output at"):
        damaged = False
        try:
            old = read_remote_manifest(url)
        except ManifestError:
            old, damaged = None, True  # it lists nothing to trust: it goes, and the files it may list stay
        if old is None and not damaged:
            return _recorded(url) or []
        names = claim(url, listed_names(old) if old is not None else ())
        location.remove(location.join(url, MANIFEST))
    return names


def publish(staged: Path, url: str, log: Callable[[str], None]) -> None:
    """Put the staged output ``staged`` at ``url`` (see the module's description), then remove ``staged``.

    A listed file absent from ``staged`` but at ``url`` with the manifest's size (a sidecar: present) counts as
    uploaded: the Ray engine writes shards there directly.

    Raises:
        PublishError: a listed file neither staged nor at the URL.
        LocationError: the URL cannot be written (one line: what and what to check).
    """
    manifest = read_manifest(staged)
    names = listed_names(manifest)
    with location.failures(url, "write"):
        retire_old(url)
        claim(url, names)
        present = location.listing(url)
        sizes = {s.file: s.bytes for s in manifest.shards}
        todo = [n for n in names if (staged / n).is_file()]
        for name in names:
            if not (staged / name).is_file() and (name not in present or (name in sizes and present[name] != sizes[name])):
                raise PublishError(
                    f"{location.join(url, name)}: listed in the manifest of {staged}, but neither there nor at the URL; "
                    "rebuild with --fresh"
                )
        log(f"publish: {len(todo)} files ({_size(sum((staged / n).stat().st_size for n in todo))}) to {url}")
        for name in todo:
            location.put_file(staged / name, location.join(url, name))
            kill_point("publish")
        location.put_file(staged / REJECTS, location.join(url, REJECTS))
        location.put_file(staged / MANIFEST, location.join(url, MANIFEST))  # the commit: last
        finish(url, manifest)
        location.remove(failed_rejects_url(url))  # an earlier failed run's, now out of date
    remove_staged(staged)
    log(f"publish: {url} complete ({MANIFEST} written last)")


def finish(url: str, manifest: Manifest) -> None:
    """After the manifest is at ``url``: the recorded names it does not list are removed, by name, then the record.
    Also what an up-to-date output whose publish was killed after its manifest still needs."""
    with location.failures(url, "write"):
        recorded = _recorded(url)
        if recorded is None:
            return
        keep = set(listed_names(manifest)) | {MANIFEST, REJECTS}
        for name in recorded:
            if name not in keep:
                location.remove(location.join(url, name))
        location.remove(_record_url(url))


def remove_staged(staged: Path) -> None:
    """The staged output, once published: its own files by name (``ownership``), then its cache folder if empty."""
    if staged.is_dir():
        remove_owned(staged, owned_files(staged))
    try:
        staged.parent.rmdir()
    except OSError:
        pass  # the lock's file or another build's checkpoints are still there


def keep_failed_rejects(local: Path, url: str) -> str | None:
    """A failed build's rejects (kept beside the staged output) copied beside ``url``; where, or None if that failed."""
    if not Path(local).is_file():
        return None
    try:
        with location.failures(url, "write"):
            location.put_file(local, failed_rejects_url(url))
    except PadprepError:
        return None
    Path(local).unlink(missing_ok=True)
    return failed_rejects_url(url)


# -- the lock --------------------------------------------------------------------------------------


class RemoteLock:
    """One build per output URL across machines: a lock object beside it (pid, host, start, a token), made with a
    conditional create (``location.create_new``) and removed at the end. A lock left by a killed build on this
    host (its pid is gone) is taken over; one held from another host is refused, naming it (a lock object cannot
    tell whether a build on another machine still runs: remove it by hand once that build is gone)."""

    def __init__(self, url: str, log: Callable[[str], None] = lambda message: None):
        self.url = url
        self.path = location.beside_url(url, LOCK)
        self._log = log
        self._token: str | None = None

    def __enter__(self) -> "RemoteLock":
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        me["token"] = uuid.uuid4().hex
        with location.failures(self.url, "write"):
            for _ in range(3):
                if location.create_new(self.path, json.dumps(me).encode()):
                    self._token = me["token"]
                    return self
                holder = self._holder()
                if holder is None:
                    continue  # removed meanwhile: try again
                if holder.get("host") != me["host"] or _alive(holder.get("pid")):
                    raise RemoteLocked(
                        f"{self.url}: another build is writing this output ({_describe(holder)}); wait for it to end, "
                        f"or, if it no longer runs, remove {self.path}"
                    )
                self._log(f"took over the lock left by a build that is no longer running ({_describe(holder)})")
                location.remove(self.path)
        raise RemoteLocked(f"{self.url}: could not take the lock {self.path} (other builds keep taking it); try again")

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._token is None:
            return
        try:
            if (self._holder() or {}).get("token") == self._token:
                location.remove(self.path)
        except Exception:  # the build's own outcome matters more; a lock left behind is taken over on this host
            pass
        self._token = None

    def _holder(self) -> dict | None:
        try:
            obj = json.loads(location.read_bytes(self.path))
        except FileNotFoundError:
            return None
        except ValueError:
            return {}
        return obj if isinstance(obj, dict) else {}


def _alive(pid) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return pid != os.getpid()


def _describe(holder: dict) -> str:
    return f"pid {holder.get('pid')} on {holder.get('host')}, started {holder.get('started')}"


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n:,.1f} GiB"


__all__ = [
    "LOCK",
    "REPLACING",
    "PublishError",
    "RemoteLock",
    "RemoteLocked",
    "cache_folder",
    "check_apart",
    "check_replaceable",
    "claim",
    "failed_rejects_url",
    "finish",
    "keep_failed_rejects",
    "listed_names",
    "manifest_from",
    "publish",
    "read_remote_manifest",
    "remote_up_to_date",
    "remove_staged",
    "retire_old",
    "staging_path",
    "url_folder",
]
