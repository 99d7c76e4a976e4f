"""Where an export is written: a partial folder beside DEST, renamed into place when complete.

The rules are a build's (``output/ownership.py``): DEST is never the build or inside it; an existing
DEST is replaced only when it is an earlier export of padprep (``padprep-export.json`` and nothing but
the files it lists) and ``--overwrite`` is given; an empty folder is used as it is; anything else is
refused in one line (exit 2). Replacing removes the old export's files by name, after the new one is
complete, and then the folders that left empty; nothing padprep did not write is ever deleted.

``padprep-export.json`` says what the export is: its format, the source builds (their build keys and
formats), what was written, and every file with its size and sha256.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
from pathlib import Path
from typing import Any

from padprep import __version__
from padprep.layout.shards import file_sha256, write_json
from padprep.output.ownership import OutputExists, OutputInTheWay, beside, check_apart

EXPORT_MANIFEST = "padprep-export.json"
EXPORT_FORMAT = "padprep-export/1"
_MARK = ".padprep-export-partial"  # inside a partial folder: what makes a stale one padprep's to remove


def read_export_manifest(dest: Path) -> dict[str, Any]:
    """An export's ``padprep-export.json``.

    Raises:
        OutputInTheWay: none there, or not one padprep can read.
    """
    path = Path(dest) / EXPORT_MANIFEST
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        obj = None
    if not isinstance(obj, dict) or obj.get("format") != EXPORT_FORMAT or not isinstance(obj.get("files"), list):
        raise OutputInTheWay(
            f"{dest}: already exists and is not an export of padprep (no readable {EXPORT_MANIFEST}); "
            "padprep replaces only what it wrote: choose another destination"
        )
    return obj


def _owned(dest: Path) -> list[str]:
    """The files of an existing export at ``dest`` (relative paths), when it holds nothing else."""
    if not dest.is_dir():
        raise OutputInTheWay(f"{dest}: is a file, not an export of padprep; choose another destination")
    present = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if not p.is_dir())
    if not present:
        return []
    listed = {str(f.get("path")) for f in read_export_manifest(dest)["files"] if isinstance(f, dict)} | {EXPORT_MANIFEST}
    foreign = [name for name in present if name not in listed or not (dest / name).is_file() or (dest / name).is_symlink()]
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise OutputInTheWay(
            f"{dest}: holds {shown}, which padprep did not write; move it out of the export, or choose another destination"
        )
    return present


class Destination:
    """The partial folder an export is written into, then put in place by ``commit``.

    Args:
        dest: where the export goes (a local folder).
        sources: the build folders read (DEST must be apart from them).
        overwrite: replace an earlier export at ``dest``.

    Raises:
        OutputInTheWay: DEST is, holds or lies in a build, or holds what padprep did not write (exit 2).
        OutputExists: DEST is an earlier export and ``overwrite`` is False (exit 2).
    """

    def __init__(self, dest: Path, sources: list[Path], overwrite: bool = False):
        if re.match(r"[A-Za-z][\w+.-]+:/", str(dest)):  # s3://, gs://, https:// (a Path keeps one slash)
            raise OutputInTheWay(
                f"{dest}: an export is written to a local folder (atomically, by a rename); write it locally, then copy it"
            )
        self.dest = Path(dest)
        check_apart(self.dest, sources)
        self.dest.parent.mkdir(parents=True, exist_ok=True)
        self._lock = _ExportLock(beside(self.dest, "export-lock"), self.dest)
        try:
            if os.path.lexists(self.dest) and _owned(self.dest) and not overwrite:
                raise OutputExists(f"{self.dest} already exists (an earlier export); pass --overwrite to replace it")
            self.partial = beside(self.dest, "export-partial")
            if os.path.lexists(self.partial):
                if not (self.partial / _MARK).is_file():
                    raise OutputInTheWay(f"{self.partial}: is in the way and padprep did not make it; move it away")
                _remove_tree(self.partial)
            self.partial.mkdir()
            (self.partial / _MARK).touch()
        except BaseException:
            self._lock.release()
            raise

    def path(self, relative: str) -> Path:
        """A file's path inside the export being written (its folder made)."""
        path = self.partial / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def commit(self, info: dict[str, Any]) -> dict[str, Any]:
        """Hash every file, write ``padprep-export.json`` (``info`` first), put the export in place; returns the manifest."""
        (self.partial / _MARK).unlink()
        files = sorted(str(p.relative_to(self.partial)) for p in self.partial.rglob("*") if p.is_file())
        manifest = {
            "format": EXPORT_FORMAT,
            "padprep_version": __version__,
            **info,
            "files": [
                {"path": name, "bytes": (self.partial / name).stat().st_size, "sha256": file_sha256(self.partial / name)}
                for name in files
            ],
        }
        write_json(self.partial / EXPORT_MANIFEST, manifest)
        old = _owned(self.dest) if os.path.lexists(self.dest) else None  # checked again: it may have changed meanwhile
        if old is None:
            os.rename(self.partial, self.dest)
        elif not old:
            os.rmdir(self.dest)  # an empty folder: used as it is
            os.rename(self.partial, self.dest)
        else:
            retired = beside(self.dest, "export-old")
            os.rename(self.dest, retired)
            os.rename(self.partial, self.dest)
            left = _remove_files(retired, old)
            if left:
                raise OutputInTheWay(f"{retired}: kept, it holds {', '.join(left[:5])}, which appeared while exporting")
        self._lock.release()
        return manifest

    def abandon(self) -> None:
        """Remove the partial folder (a failed or interrupted export leaves nothing that looks complete)."""
        with contextlib.suppress(OSError):
            _remove_tree(self.partial)
        self._lock.release()


class _ExportLock:
    """``flock`` on ``.DEST.padprep-export-lock`` while an export writes DEST: a second export into it is refused."""

    def __init__(self, path: Path, dest: Path):
        self.path = path
        while True:
            fh = open(path, "a+", encoding="utf-8")
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                fh.close()
                raise OutputInTheWay(f"{dest}: another export is writing it; wait for it to end, or stop it") from None
            try:  # removed by the export that held it after we opened it: lock the new one
                same = os.fstat(fh.fileno()).st_ino == os.stat(path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                self._fh = fh
                return
            fh.close()

    def release(self) -> None:
        if self._fh is not None:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            self._fh.close()
            self._fh = None


def _remove_files(root: Path, names: list[str]) -> list[str]:
    """Remove ``names`` under ``root``, then the folders that left empty; returns what is left (kept)."""
    for name in names:
        with contextlib.suppress(FileNotFoundError):
            (root / name).unlink()
    for folder in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        with contextlib.suppress(OSError):
            folder.rmdir()
    left = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    if not left:
        root.rmdir()
    return left


def _remove_tree(root: Path) -> None:
    """A partial folder padprep made (it held the mark): its files and folders."""
    for path in sorted(root.rglob("*"), key=lambda p: -len(p.parts)):
        if path.is_dir() and not path.is_symlink():
            path.rmdir()
        else:
            path.unlink()
    root.rmdir()


__all__ = ["EXPORT_FORMAT", "EXPORT_MANIFEST", "Destination", "read_export_manifest"]
