"""Inputs behind a URL: ``http(s)://`` (standard library) and object stores through ``fsspec``.

``http://`` and ``https://`` are streamed with ``urllib`` (nothing to install). ``s3://``, ``gs://``,
``az://`` / ``abfs://`` and any other scheme ``fsspec`` knows are opened through it when its backend is
installed (``pip install 'padprep[cloud]'``); a missing backend is one line that says what to install.

The suffix of the URL's path decides the container exactly as for a file (``.jsonl.gz``,
``.json``, ``.parquet`` ...); a query string does not count. Parquet and Arrow need random access
(the footer comes first), so such a URL is copied to a temporary file while it is hashed, then read
from there; everything else is read as it arrives.

A URL is read twice: once to hash it for the build key (an up-to-date build is detected without
tokenizing, as for files), once to build. The second read is hashed too and must give the same
digest: a source that changed in between fails the build instead of writing what the key does
not describe (``HashingReader``).
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import tempfile
import urllib.parse
from typing import BinaryIO

_HTTP = ("http://", "https://")
# Schemes handed to fsspec; "file://" stays a local path for everything else padprep does.
_CLOUD = ("s3://", "gs://", "gcs://", "az://", "abfs://", "abfss://", "adl://", "hdfs://", "ftp://", "sftp://")
_TIMEOUT_S = 60
_BLOCK = 1 << 20
CLOUD_HINT = "pip install 'padprep[cloud]'"


class RemoteError(OSError):
    """A URL that cannot be opened or read; the reader makes it an input error (exit 2)."""


def is_remote(path: str) -> bool:
    """Whether ``path`` is a URL padprep reads over the network (``hf://`` is resolved before, by ``hub``)."""
    return str(path).startswith(_HTTP + _CLOUD)


def url_name(path: str) -> str:
    """The part of ``path`` whose suffix names the container: a URL's path without query or fragment.

    Example:
        >>> url_name("https://host/data/chat.jsonl.gz?token=abc")
        '/data/chat.jsonl.gz'
    """
    return urllib.parse.urlsplit(path).path if is_remote(path) else path


def open_url(url: str) -> BinaryIO:
    """The URL's bytes as a stream (``RemoteError`` in one line when it cannot be opened)."""
    if url.startswith(_HTTP):
        import urllib.error
        import urllib.request  # imported here: the CLI's start-up does not pay for it

        request = urllib.request.Request(url, headers={"User-Agent": "padprep", "Accept-Encoding": "identity"})
        try:
            return urllib.request.urlopen(request, timeout=_TIMEOUT_S)  # noqa: S310 (the user's own URL)
        except urllib.error.HTTPError as exc:
            raise RemoteError(f"the server answered {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise RemoteError(f"cannot connect ({getattr(exc, 'reason', exc)})") from None
    try:
        import fsspec
    except ImportError:
        raise RemoteError(f"reading {url.split('://')[0]}:// URLs needs fsspec and its backend: {CLOUD_HINT}") from None
    try:
        return fsspec.open(url, "rb").open()
    except ImportError as exc:  # fsspec names the backend it lacks (s3fs, gcsfs, adlfs)
        raise RemoteError(f"no fsspec backend for this URL ({exc}): {CLOUD_HINT}") from None
    except (OSError, ValueError) as exc:
        raise RemoteError(f"cannot open ({exc})") from None


class HashingReader(io.RawIOBase):
    """A stream that hashes what passes through it and counts its bytes (progress asks ``tell``).

    With ``expect`` (a sha256), reaching the end with another digest is a ``RemoteError``: the
    source changed since the build key was computed.
    """

    def __init__(self, raw: BinaryIO, url: str, expect: str | None = None):
        self._raw, self._url, self._expect = raw, url, expect
        self._hash = hashlib.sha256()
        self._read = 0
        self._checked = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        try:
            data = self._raw.read(len(buffer))
        except OSError as exc:
            raise RemoteError(f"the connection broke after {self._read:,} bytes ({exc})") from None
        n = len(data)
        if not n:
            self._check()
            return 0
        buffer[:n] = data
        self._hash.update(data)
        self._read += n
        return n

    def tell(self) -> int:
        return self._read

    def hexdigest(self) -> str:
        return self._hash.hexdigest()

    def finish(self) -> None:
        """Read what the reader above left (a compressed stream may stop at its frame's end) and check the digest."""
        while self.readinto(bytearray(_BLOCK)):
            pass
        self._check()

    def _check(self) -> None:
        if self._checked or self._expect is None:
            return
        self._checked = True
        if self._hash.hexdigest() != self._expect:
            raise RemoteError(
                f"its content changed while the build ran (sha256 {self._expect[:12]}... when the build key was "
                f"computed, {self._hash.hexdigest()[:12]}... now): run the build again"
            )

    def close(self) -> None:
        try:
            self._raw.close()
        finally:
            super().close()


def url_sha256(url: str) -> str:
    """sha256 of the URL's bytes, read once as a stream."""
    reader = HashingReader(open_url(url), url)
    with reader:
        while reader.read(_BLOCK):
            pass
        return reader.hexdigest()


def download(url: str, expect: str | None = None) -> str:
    """A temporary local copy of the URL (for readers that need random access); the caller deletes it."""
    suffix = "".join(os.path.basename(url_name(url)).partition(".")[1:])  # keep ".parquet" for format detection
    fd, tmp = tempfile.mkstemp(prefix="padprep-", suffix=suffix)
    try:
        with os.fdopen(fd, "wb") as out, HashingReader(open_url(url), url, expect) as reader:
            shutil.copyfileobj(reader, out, _BLOCK)
            reader.finish()
    except BaseException:
        os.unlink(tmp)
        raise
    return tmp
