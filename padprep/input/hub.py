"""Data sets on the Hugging Face Hub: ``hf://datasets/ORG/NAME[@REVISION][/PATH-OR-GLOB]`` -> local files.

The split's files are fetched through ``huggingface_hub`` into its cache (and read from the cache alone
with ``HF_HUB_OFFLINE=1``), then read like any local file. Without a path, a split is the files the Hub's
own convention names for it: ``data/{split}-*``, ``data/{split}.*``, ``{split}-*``, ``{split}.*``, or the
files under a ``{split}/`` folder. Nothing here reads records.
"""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass

from padprep.input.records import DATA_SUFFIXES

HUB = "hf://datasets/"
DEFAULT_SPLIT = "train"


class HubError(ValueError):
    """A Hub path that is malformed or whose files cannot be had; the reader turns it into an input error."""


@dataclass(frozen=True)
class HubPath:
    """A parsed ``hf://datasets/...`` path."""

    repo: str  # ORG/NAME
    revision: str | None  # a branch, tag or commit (None: the default branch)
    path: str | None  # a file or glob inside the repository (None: the split's files)

    @classmethod
    def parse(cls, uri: str) -> "HubPath":
        """Split ``uri``; a path that names no ``ORG/NAME`` is a ``HubError``.

        Example:
            >>> HubPath.parse("hf://datasets/org/chat@v1/data/*.parquet")
            HubPath(repo='org/chat', revision='v1', path='data/*.parquet')
        """
        parts = uri[len(HUB) :].split("/") if uri.startswith(HUB) else []
        if len(parts) < 2 or not parts[0] or not parts[1]:
            raise HubError(f"{uri}: a Hub data set is hf://datasets/ORG/NAME[@REVISION][/PATH-OR-GLOB]")
        name, _, revision = parts[1].partition("@")
        return cls(f"{parts[0]}/{name}", revision or None, "/".join(parts[2:]) or None)


def is_hub(path: str) -> bool:
    return str(path).startswith("hf://")


def split_patterns(split: str) -> list[str]:
    """The Hub's file-name conventions for a split."""
    return [f"data/{split}-*", f"data/{split}.*", f"{split}-*", f"{split}.*", f"data/{split}/*", f"{split}/*"]


def hub_files(uri: str, split: str = DEFAULT_SPLIT) -> list[str]:
    """The local paths of ``uri``'s files (of ``split`` where it names no path), in sorted order."""
    if not uri.startswith(HUB):
        raise HubError(f"{uri}: only data sets are read from the Hub (hf://datasets/ORG/NAME)")
    ref = HubPath.parse(uri)
    patterns = [ref.path] if ref.path else split_patterns(split)
    try:
        from huggingface_hub import snapshot_download

        root = snapshot_download(ref.repo, repo_type="dataset", revision=ref.revision, allow_patterns=patterns)
    except Exception as exc:  # offline and not cached, no such repository or revision, no network
        offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
        hint = (
            "it is not in the local cache (HF_HUB_OFFLINE is set)"
            if offline
            else "the Hub cannot be reached or has no such data set"
        )
        raise HubError(
            f"{uri}: cannot get {ref.repo}{'@' + ref.revision if ref.revision else ''}: {hint} ({type(exc).__name__})"
        ) from None
    found = []
    for folder, dirs, names in os.walk(root):
        dirs.sort()
        for name in sorted(names):
            rel = os.path.relpath(os.path.join(folder, name), root).replace(os.sep, "/")
            if any(fnmatch.fnmatch(rel, p) for p in patterns) and (ref.path or name.endswith(DATA_SUFFIXES)):
                found.append(os.path.join(folder, name))
    if not found:
        what = f"no file matches {ref.path}" if ref.path else f"no files of split {split!r} ({', '.join(patterns)})"
        raise HubError(f"{uri}: {what} in {ref.repo}")
    return sorted(found)
