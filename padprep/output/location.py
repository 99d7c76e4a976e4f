"""Where an output lives: a local path, or a URL that ``fsspec`` writes (``s3://``, ``gs://``, ``az://`` ...).

Everything padprep writes to or reads from an output URL goes through here, so that one module knows
fsspec's ways: its listing cache (a listing here is always fresh), a missing backend (one line saying what
to install), and object stores without a rename (a file is put whole under its final name: an object store
shows an object whole or not at all).

A local path given here is used as it is (fsspec's local filesystem), so the cluster's pass 2 (``run/cluster.py``)
reads and writes a shared folder and a bucket with the same calls.
"""

from __future__ import annotations

import contextlib
import posixpath
import re
from pathlib import Path
from typing import Any, BinaryIO

from padprep.errors import EXIT_USAGE, PadprepError

# A URL is scheme://...; "file://" is a local path for everything else padprep does.
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
# Path folds "s3://b/o" to "s3:/b/o": a str that went through Path on its way here.
_FOLDED = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):/(?!/)")
CLOUD_HINT = "pip install 'padprep[cloud]'"


class LocationError(PadprepError):
    """An output URL that cannot be written or read (no backend, no access): exit 2, in one line."""

    exit_code = EXIT_USAGE


def is_url(where: str | Path) -> bool:
    """Whether ``where`` names an output by URL (``s3://bucket/prefix``), not a local path."""
    text = str(where)
    return bool(_URL.match(text) or _FOLDED.match(text)) and not text.startswith("file:")


def url_of(where: str | Path) -> str:
    """``where`` as a URL string, with the ``//`` that ``Path`` folds restored."""
    return _FOLDED.sub(r"\1://", str(where))


def filesystem(where: str | Path) -> tuple[Any, str]:
    """The fsspec filesystem of ``where`` and the path in it (a local path: the local filesystem)."""
    try:
        import fsspec
    except ImportError:
        raise LocationError(f"{where}: writing to a URL needs fsspec and its backend: {CLOUD_HINT}") from None
    try:
        fs, path = fsspec.core.url_to_fs(url_of(where) if is_url(where) else str(where))
    except ImportError as exc:  # fsspec names the backend it lacks (s3fs, gcsfs, adlfs)
        raise LocationError(f"{where}: no fsspec backend for this URL ({exc}): {CLOUD_HINT}") from None
    return fs, path


def join(base: str | Path, *names: str) -> str:
    """``base/name/...``: a URL joined with ``/``, a local path with the OS's separator."""
    if is_url(base):
        return posixpath.join(url_of(base).rstrip("/"), *names)
    return str(Path(base).joinpath(*names))


def name_of(where: str | Path) -> str:
    """The last part of ``where`` (``s3://b/p/out`` -> ``out``)."""
    return posixpath.basename(url_of(where).rstrip("/")) if is_url(where) else Path(where).name


def parent_of(where: str | Path) -> str:
    """What holds ``where`` (``s3://b/p/out`` -> ``s3://b/p``)."""
    if is_url(where):
        return posixpath.dirname(url_of(where).rstrip("/"))
    return str(Path(where).parent)


def beside_url(output: str | Path, suffix: str) -> str:
    """Where padprep keeps ``suffix`` beside ``output``: ``.OUT.padprep-SUFFIX`` in OUT's parent (as
    ``ownership.beside`` for a local output)."""
    return join(parent_of(output), f".{name_of(output)}.padprep-{suffix}")


def exists(where: str | Path) -> bool:
    fs, path = filesystem(where)
    fs.invalidate_cache()
    return bool(fs.exists(path))


def size(where: str | Path) -> int | None:
    """The size of the file at ``where`` (None: there is none)."""
    fs, path = filesystem(where)
    fs.invalidate_cache()
    try:
        return int(fs.size(path))
    except FileNotFoundError:
        return None


def names(where: str | Path) -> list[str]:
    """The names directly under ``where`` (files and folders), sorted; [] when there is nothing there."""
    fs, path = filesystem(where)
    fs.invalidate_cache()
    try:
        listed = fs.ls(path, detail=False)
    except FileNotFoundError:
        return []
    return sorted(posixpath.basename(str(p).rstrip("/")) for p in listed if str(p).rstrip("/") != path.rstrip("/"))


def listing(where: str | Path) -> dict[str, int | None]:
    """The names directly under ``where`` and their sizes in bytes (a folder: None); {} when nothing is there.
    One request for what ``names`` and ``size`` would ask name by name."""
    fs, path = filesystem(where)
    fs.invalidate_cache()
    try:
        listed = fs.ls(path, detail=True)
    except FileNotFoundError:
        return {}
    found: dict[str, int | None] = {}
    for item in listed:
        full = str(item["name"]).rstrip("/")
        if full != path.rstrip("/"):
            found[posixpath.basename(full)] = int(item.get("size") or 0) if item.get("type") == "file" else None
    return found


def create_new(where: str | Path, data: bytes) -> bool:
    """Write ``data`` to ``where`` only where nothing is yet; False: something is there.

    An object store that has a conditional put (S3's ``If-None-Match: *``, which s3fs sends for mode ``xb``)
    decides it in one request, so two writers never both win. A backend without mode ``xb`` is asked first
    and written after: two writers racing between the two may both win (docs/output.md says so).
    """
    fs, path = filesystem(where)
    try:
        with fs.open(path, "xb") as fh:
            fh.write(data)
        return True
    except FileExistsError:
        return False
    except (ValueError, NotImplementedError, TypeError):  # the backend has no exclusive create
        if exists(where):
            return False
        write_bytes(where, data)
        return True


@contextlib.contextmanager
def failures(where: str | Path, doing: str):
    """Turn what an object store raises (no bucket, no credentials, no access) into one ``LocationError`` line
    naming ``where`` and what to check; padprep's own errors pass as they are."""
    try:
        yield
    except PadprepError:
        raise
    except Exception as exc:
        if not isinstance(exc, OSError) and not type(exc).__module__.startswith(_STORE_ERRORS):
            raise
        cause = str(exc).strip() or type(exc).__name__
        raise LocationError(
            f"{url_of(where)}: cannot {doing} ({cause}); check that the bucket exists and that your credentials "
            f"(e.g. AWS_PROFILE, AWS_ACCESS_KEY_ID, GOOGLE_APPLICATION_CREDENTIALS) may {doing} there"
        ) from None


# where fsspec's backends' own exceptions come from (the rest are OSError already)
_STORE_ERRORS = ("botocore", "aiobotocore", "s3fs", "gcsfs", "google", "adlfs", "azure")


def put_file(local: str | Path, where: str | Path) -> None:
    """Copy a local file to ``where``, whole (an object store shows it only once complete)."""
    fs, path = filesystem(where)
    fs.makedirs(posixpath.dirname(path) if is_url(where) else str(Path(path).parent), exist_ok=True)
    fs.put_file(str(local), path)


def get_file(where: str | Path, local: str | Path) -> None:
    """Copy the file at ``where`` to a local path."""
    fs, path = filesystem(where)
    fs.get_file(path, str(local))


def open_read(where: str | Path) -> BinaryIO:
    fs, path = filesystem(where)
    return fs.open(path, "rb")


def read_bytes(where: str | Path) -> bytes:
    fs, path = filesystem(where)
    with fs.open(path, "rb") as fh:
        return fh.read()


def write_bytes(where: str | Path, data: bytes) -> None:
    """Write ``data`` to ``where`` whole (an object: one put; a local file: written, then renamed into place)."""
    fs, path = filesystem(where)
    if is_url(where):
        fs.pipe_file(path, data)
        return
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(target)


def remove(where: str | Path) -> None:
    """Remove the file at ``where`` (nothing when it is not there)."""
    fs, path = filesystem(where)
    try:
        fs.rm_file(path)
    except FileNotFoundError:
        pass


def remove_tree(where: str | Path) -> None:
    """Remove ``where`` and everything below it: only for folders padprep made itself (partial work)."""
    fs, path = filesystem(where)
    fs.invalidate_cache()
    try:
        fs.rm(path, recursive=True)
    except FileNotFoundError:
        pass


__all__ = [
    "LocationError",
    "beside_url",
    "create_new",
    "exists",
    "failures",
    "filesystem",
    "get_file",
    "is_url",
    "join",
    "listing",
    "name_of",
    "names",
    "open_read",
    "parent_of",
    "put_file",
    "read_bytes",
    "remove",
    "remove_tree",
    "size",
    "url_of",
    "write_bytes",
]
