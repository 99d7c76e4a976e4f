"""Data sets on the Hugging Face Hub: ``hf://datasets/ORG/NAME[@REVISION][/PATH-OR-GLOB]`` -> local files.

The split's files are fetched through ``huggingface_hub`` into its cache (and read from the cache alone
with ``HF_HUB_OFFLINE=1``), then read like any local file. Without a path, a split is the files the
dataset card (``README.md``) lists for it under ``configs`` (the default config: the one marked
``default: true``, else the one named ``default``, else the first), and where the card lists none, the
files the Hub's own convention names for it: ``data/{split}-*``, ``data/{split}.*``, ``{split}-*``,
``{split}.*``, or the files under a ``{split}/`` folder. Nothing here reads records.

A revision that is a full commit hash is a content address: what it names never changes, so the
build key can be made from it (``identity``) and an up-to-date build is known without a download.
"""

from __future__ import annotations

import fnmatch
import os
import re
from dataclasses import dataclass
from typing import Any

from padprep.input.records import DATA_SUFFIXES

HUB = "hf://datasets/"
DEFAULT_SPLIT = "train"
CARD = "README.md"
_COMMIT = re.compile(r"[0-9a-f]{40}")


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


def identity(uri: str, split: str = DEFAULT_SPLIT) -> str | None:
    """What the build key holds for ``uri`` when its revision is a full commit hash (None otherwise).

    Example:
        >>> identity("hf://datasets/org/chat@" + "a" * 40, "test")
        'hf://datasets/org/chat@aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa split=test'
        >>> identity("hf://datasets/org/chat@main") is None
        True
    """
    if not uri.startswith(HUB):
        return None
    ref = HubPath.parse(uri)
    if ref.revision is None or not _COMMIT.fullmatch(ref.revision):
        return None
    return f"{HUB}{ref.repo}@{ref.revision}" + (f"/{ref.path}" if ref.path else f" split={split}")


def split_patterns(split: str) -> list[str]:
    """The Hub's file-name conventions for a split."""
    return [f"data/{split}-*", f"data/{split}.*", f"{split}-*", f"{split}.*", f"data/{split}/*", f"{split}/*"]


def card_patterns(card: str, split: str) -> tuple[str, list[str]] | None:
    """(config name, the split's file patterns) from a dataset card's ``configs``; None when it lists none.

    A card that lists configs but not this split is a ``HubError`` naming the splits it has.

    Example:
        >>> card = "---\nconfigs:\n- config_name: default\n  data_files:\n  - split: train\n    path: sft/*.parquet\n---\n"
        >>> card_patterns(card, "train")
        ('default', ['sft/*.parquet'])
    """
    configs = _front_matter(card).get("configs")
    if not isinstance(configs, list) or not configs or not all(isinstance(c, dict) for c in configs):
        return None
    chosen = next((c for c in configs if c.get("default") is True), None)
    chosen = chosen or next((c for c in configs if c.get("config_name") == "default"), configs[0])
    name = str(chosen.get("config_name", "default"))
    splits = _data_files(chosen.get("data_files"))
    if splits is None:
        return None
    if split not in splits:
        raise HubError(f"the dataset card's config {name!r} has no split {split!r} (it has {', '.join(sorted(splits))})")
    return name, splits[split]


def _front_matter(card: str) -> dict[str, Any]:
    """The YAML between the card's leading ``---`` lines ({} when there is none or it does not parse)."""
    if not card.startswith("---"):
        return {}
    end = card.find("\n---", 3)
    if end < 0:
        return {}
    import yaml

    try:
        meta = yaml.safe_load(card[3:end])
    except yaml.YAMLError:
        return {}
    return meta if isinstance(meta, dict) else {}


def _data_files(value: Any) -> dict[str, list[str]] | None:
    """A config's ``data_files`` (a pattern, a list of them, or a list of {split, path}) per split."""
    if isinstance(value, str):
        return {DEFAULT_SPLIT: [value]}
    if isinstance(value, dict):  # {split: path-or-paths}
        return {str(k): [v] if isinstance(v, str) else [str(x) for x in v] for k, v in value.items()}
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return {DEFAULT_SPLIT: list(value)}
    if isinstance(value, list) and all(isinstance(v, dict) and "path" in v for v in value):
        out: dict[str, list[str]] = {}
        for v in value:
            paths = v["path"]
            out.setdefault(str(v.get("split", DEFAULT_SPLIT)), []).extend([paths] if isinstance(paths, str) else paths)
        return out
    return None


def _download(ref: HubPath, uri: str, patterns: list[str]) -> str:
    """The local snapshot folder holding ``patterns`` of ``ref`` (fetched into the cache unless there)."""
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(ref.repo, repo_type="dataset", revision=ref.revision, allow_patterns=patterns)
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


def hub_files(uri: str, split: str = DEFAULT_SPLIT, log=None) -> list[str]:
    """The local paths of ``uri``'s files (of ``split`` where it names no path), in sorted order."""
    if not uri.startswith(HUB):
        raise HubError(f"{uri}: only data sets are read from the Hub (hf://datasets/ORG/NAME)")
    ref = HubPath.parse(uri)
    if ref.path:
        patterns = [ref.path]
    else:
        card = os.path.join(_download(ref, uri, [CARD]), CARD)
        try:
            listed = card_patterns(open(card, encoding="utf-8").read(), split) if os.path.isfile(card) else None
        except (HubError, OSError, UnicodeDecodeError) as exc:
            raise HubError(f"{uri}: {exc}") from None
        patterns = listed[1] if listed else split_patterns(split)
        if log is not None:
            origin = f"the dataset card's config {listed[0]!r}" if listed else "the Hub's file-name convention"
            log(f"{uri}: split {split!r} is {', '.join(patterns)} ({origin})")
    root = _download(ref, uri, patterns)
    found = []
    for folder, dirs, names in os.walk(root):
        dirs.sort()
        for name in sorted(names):
            rel = os.path.relpath(os.path.join(folder, name), root).replace(os.sep, "/")
            if any(_matches(rel, p) for p in patterns) and (ref.path or name.endswith(DATA_SUFFIXES)):
                found.append(os.path.join(folder, name))
    if not found:
        what = f"no file matches {ref.path}" if ref.path else f"no files of split {split!r} ({', '.join(patterns)})"
        raise HubError(f"{uri}: {what} in {ref.repo}")
    return sorted(found)


def _matches(rel: str, pattern: str) -> bool:
    """A file matches a pattern as the Hub's globs do: ``**`` spans folders, ``*`` does not."""
    if "**" in pattern:
        return fnmatch.fnmatch(rel, pattern)
    return fnmatch.fnmatch(rel, pattern) and rel.count("/") == pattern.count("/")
