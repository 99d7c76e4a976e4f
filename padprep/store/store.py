"""The tokenized store: what pass 1 made (unpadded rows, rejects, counts) kept per token key, so that a build
that changes only the layout (bucketing, packing, padding, sharding, shuffling) skips reading, rendering and
tokenizing and goes straight to pass 2.

Where: ``--cache-dir``, else ``$PADPREP_CACHE_DIR``, else ``$XDG_CACHE_HOME/padprep/store``, else
``~/.cache/padprep/store``. Layout of the folder::

    padprep-store.json        the index: marks the folder as padprep's (nothing is removed from a folder without it)
    entries/KEY/              one entry per token key (sha256 of ``token_parts``)
        spill-00000.arrow ... pass 1's spill segments, as the build spilled them (``layout/spill.py``)
        rejects.jsonl         pass 1's rejects, as the build wrote them
        entry.json            the key's parts, every file's size and sha256, pass 1's counts; its own sha256
    tmp/KEY.PID.RANDOM/       an entry being written, renamed into ``entries/`` whole

The key (``token_parts``) holds everything that decides a row's tokens and labels and pass 1's rejects and
counts: the inputs' sha256 and paths (rejects name them), the tokenizer's files, the template, every option
but the layout's (``LAYOUT_OPTIONS``), the reject limits, the chunk size, padprep's version and the sha256 of
the source of the modules that make pass 1 (``code_digest``: a development tree's change is a new key). The length
policy runs in pass 1 (a row too long is dropped or truncated there, and its reject names the record), so
the *effective* ``--max-length`` and ``--truncation`` are in the key: a new ``--max-length`` tokenizes again.

A build whose first inputs are a stored build's takes their rows from that entry and tokenizes only the
inputs after them (``run/pipeline.py``'s ``_prefix_from_store``, where provably exact).

Safety: an entry is written in ``tmp/`` and renamed into place (a reader sees it whole or not at all);
``entry.json`` carries its own sha256 and every file's, checked when the entry is used (a damaged entry is
removed and the build tokenizes again, never uses it); the store is bounded (``PADPREP_CACHE_MAX_BYTES``,
default 20 GiB) by least-recently-used eviction; pruning removes only the files an entry's ``entry.json``
lists, in a folder holding padprep's index.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import re
import secrets
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from padprep.errors import EXIT_USAGE, PadprepError
from padprep.layout.shards import file_sha256, fsync_path

STORE_FORMAT = 1
INDEX = "padprep-store.json"
ENTRY = "entry.json"
ENTRIES = "entries"
TMP = "tmp"
REJECTS_FILE = "rejects.jsonl"
SEGMENT = "spill-{:05d}.arrow"
DEFAULT_MAX_BYTES = 20 << 30
_KEY = re.compile(r"^[0-9a-f]{64}$")
_TMP_NAME = re.compile(r"^[0-9a-f]{64}\.\d+\.[0-9a-f]{8}$")
_STALE_TMP_SECONDS = 24 * 3600

# Options that change only pass 2 (bucket bounds, packing, padding, shard size, shuffling): not in the key.
# ``max_length`` and ``buckets`` leave the key as options, but the length limit they make is in it.
LAYOUT_OPTIONS = frozenset(
    {"max_length", "buckets", "pack", "pad_to_multiple_of", "padding_side", "shard_tokens", "seed", "padded_pairs"}
)


def default_root() -> Path:
    """``$PADPREP_CACHE_DIR``, else ``$XDG_CACHE_HOME/padprep/store``, else ``~/.cache/padprep/store``."""
    env = os.environ.get("PADPREP_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "padprep" / "store"


def parse_size(text: str) -> int:
    """``20G``, ``500M``, ``1024`` (bytes) -> bytes."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*", text.lower())
    if not match:
        raise ValueError(f"{text!r} is not a size (e.g. 20G, 500M, 1048576)")
    return int(float(match.group(1)) * 1024 ** "_kmgt".index(match.group(2) or "_"))


def max_bytes() -> int:
    """The store's bound: ``$PADPREP_CACHE_MAX_BYTES`` (``20G``...), default 20 GiB."""
    env = os.environ.get("PADPREP_CACHE_MAX_BYTES")
    if not env:
        return DEFAULT_MAX_BYTES
    try:
        return parse_size(env)
    except ValueError:
        return DEFAULT_MAX_BYTES


def token_parts(build_parts: dict, files: list[str], limit: int | None, limit_name: str, policy: dict) -> dict:
    """What a store entry's key hashes, from the build key's parts (``output/buildkey.key_parts``): the layout
    options out, the files' names (rejects and the manifest name them), the length limit pass 1 applies and
    the reject limits and chunk size (``policy``) in."""
    return {
        "store_format": STORE_FORMAT,
        "padprep_version": build_parts["padprep_version"],
        "code": code_digest(),
        "inputs": build_parts["inputs"],
        "files": list(files),
        "tokenizer": build_parts["tokenizer"],
        "chat_template": build_parts["chat_template"],
        "options": {k: v for k, v in build_parts["options"].items() if k not in LAYOUT_OPTIONS},
        "length_limit": {"max_length": limit, "named": limit_name},
        "policy": policy,
    }


# The modules whose code decides pass 1's rows, rejects and counts: a change to any of them (a development
# tree between releases) is a new key, never a stale entry.
_PASS_ONE_CODE = ("input", "chat", "layout", "run", "store", "config.py", "schema.py", "output/rejects.py")


@functools.lru_cache(maxsize=1)
def code_digest() -> str:
    """sha256 of the source of the modules that decide pass 1 (``_PASS_ONE_CODE``)."""
    package = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for part in _PASS_ONE_CODE:
        where = package / part
        for path in sorted(where.rglob("*.py")) if where.is_dir() else [where]:
            h.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def key_of(parts: dict) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def _self_sha(entry: dict) -> str:
    return hashlib.sha256(json.dumps({k: v for k, v in entry.items() if k != "sha256"}, sort_keys=True).encode()).hexdigest()


def _place(src: Path, dst: Path) -> None:
    """``dst`` holds ``src``'s bytes: a hard link (neither is ever written again), else a copy."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


@dataclass
class Entry:
    """One entry of the store, read and its ``entry.json`` checked (its files are checked when placed)."""

    key: str
    path: Path
    record: dict  # entry.json

    @property
    def meta(self) -> dict:
        """What pass 1 counted and found (``run/pipeline.py`` writes and reads it)."""
        return self.record["meta"]

    @property
    def segments(self) -> list[tuple[str, int]]:
        """The spill segments' names and batch counts, in order."""
        return [(name, self.record["files"][name]["batches"]) for name in self.record["segments"]]

    def place(self, workdir: Path, log: Callable[[str], None]) -> list[Path] | None:
        """The entry's spill segments and rejects put into ``workdir`` (linked or copied) and checked against
        their sha256 there: the placed segments, or None when a file is missing or damaged (what was placed is
        removed; so is the entry)."""
        placed: list[Path] = []
        names = [(name, workdir / SEGMENT.format(i)) for i, name in enumerate(self.record["segments"])]
        names.append((REJECTS_FILE, workdir / REJECTS_FILE))
        try:
            for name, dst in names:
                want = self.record["files"][name]
                with contextlib.suppress(FileNotFoundError):
                    dst.unlink()
                if name == REJECTS_FILE:
                    shutil.copyfile(self.path / name, dst)  # a build appends to its rejects: never a link
                else:
                    _place(self.path / name, dst)
                placed.append(dst)
                if dst.stat().st_size != want["bytes"] or file_sha256(dst) != want["sha256"]:
                    raise _Damaged(name)
        except (OSError, KeyError, _Damaged) as exc:
            for p in placed:
                with contextlib.suppress(OSError):
                    p.unlink()
            what = f"{exc.args[0]} differs from its digest" if isinstance(exc, _Damaged) else f"cannot read it ({exc})"
            log(f"store: entry {self.key[:12]} is damaged ({what}): not used, removed; tokenizing again")
            _remove_entry(self.path)
            return None
        with contextlib.suppress(OSError):
            os.utime(self.path / ENTRY)  # used now (least-recently-used eviction)
        return placed[:-1]


class _Damaged(Exception):
    pass


class Store:
    """The store at ``root`` (see the module's description); ``log``: where its one-line reports go."""

    def __init__(self, root: Path, log: Callable[[str], None] = lambda m: None, limit: int | None = None):
        self.root = Path(root)
        self.log = log
        self.limit = max_bytes() if limit is None else limit

    # -- reading -----------------------------------------------------------------------------------

    def lookup(self, parts: dict) -> Entry | None:
        """The entry for ``parts``, its ``entry.json`` whole and naming exactly these parts; None otherwise
        (an entry that fails its own digest is removed)."""
        key = key_of(parts)
        path = self.root / ENTRIES / key
        record = _read_entry(path)
        if record is None:
            if (path / ENTRY).exists() and self._ours():
                self.log(f"store: entry {key[:12]} is damaged (entry.json differs from its digest): removed; tokenizing again")
                _remove_entry(path)
            return None
        if record.get("parts") != parts:
            return None
        return Entry(key, path, record)

    def entries(self) -> list[tuple[Path, dict]]:
        """Every whole entry (its folder and ``entry.json``), least recently used first."""
        base = self.root / ENTRIES
        if not base.is_dir() or not self._ours():
            return []
        found = []
        for path in base.iterdir():
            if _KEY.match(path.name) and (record := _read_entry(path)) is not None:
                found.append((path, record))
        return sorted(found, key=lambda e: (_used(e[0]), e[0].name))

    # -- writing -----------------------------------------------------------------------------------

    def put(self, parts: dict, segments: list[tuple[Path, int]], rejects: Path, meta: dict) -> bool:
        """Keep pass 1's spill ``segments`` (path, batches), ``rejects`` and ``meta`` under ``parts``' key:
        written in ``tmp/`` and renamed into place; then the least recently used entries go past the bound."""
        key = key_of(parts)
        final = self.root / ENTRIES / key
        if (final / ENTRY).exists():
            return False
        size = sum(p.stat().st_size for p, _ in segments) + rejects.stat().st_size
        if size > self.limit:
            self.log(f"store: pass 1's rows ({size:,} bytes) exceed the store's bound ({self.limit:,}): not kept")
            return False
        tmp = self.root / TMP / f"{key}.{os.getpid()}.{secrets.token_hex(4)}"
        try:
            self._make_index()
            tmp.mkdir(parents=True)
            files, names = {}, []
            for i, (src, batches) in enumerate(segments):
                name = SEGMENT.format(i)
                _place(src, tmp / name)
                files[name] = {"bytes": (tmp / name).stat().st_size, "sha256": file_sha256(tmp / name), "batches": batches}
                names.append(name)
            shutil.copyfile(rejects, tmp / REJECTS_FILE)
            fsync_path(tmp / REJECTS_FILE)
            files[REJECTS_FILE] = {"bytes": (tmp / REJECTS_FILE).stat().st_size, "sha256": file_sha256(tmp / REJECTS_FILE)}
            record = {
                "padprep_store": STORE_FORMAT,
                "key": key,
                "parts": parts,
                "created": time.strftime("%Y-%m-%d %H:%M:%S"),
                "segments": names,
                "files": files,
                "bytes": sum(f["bytes"] for f in files.values()),
                "meta": meta,
            }
            record["sha256"] = _self_sha(record)
            with open(tmp / ENTRY, "w", encoding="utf-8") as fh:
                json.dump(record, fh)
                fh.flush()
                os.fsync(fh.fileno())
            fsync_path(tmp)
            final.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.rename(tmp, final)
            except OSError:  # another build kept the same entry meanwhile
                _remove_entry(tmp)
                return False
            with contextlib.suppress(OSError):
                fsync_path(final.parent)
        except OSError as exc:
            _remove_entry(tmp)
            self.log(f"store: could not keep pass 1's rows in {self.root} ({exc}); the build goes on")
            return False
        self.evict(self.limit, keep=key)
        return True

    def evict(self, limit: int, keep: str | None = None) -> list[tuple[Path, dict]]:
        """Remove least recently used entries until the store holds at most ``limit`` bytes (never ``keep``);
        stale unfinished writes go too. Returns what was removed."""
        if not self._ours():
            return []
        entries = self.entries()
        total = sum(r.get("bytes", 0) for _, r in entries)
        removed = []
        for path, record in entries:
            if total <= limit:
                break
            if path.name == keep:
                continue
            _remove_entry(path)
            total -= record.get("bytes", 0)
            removed.append((path, record))
        tmp = self.root / TMP
        if tmp.is_dir():
            for path in tmp.iterdir():
                with contextlib.suppress(OSError):
                    if _TMP_NAME.match(path.name) and time.time() - path.stat().st_mtime > _STALE_TMP_SECONDS:
                        _remove_entry(path)
        return removed

    def _ours(self) -> bool:
        """The folder holds padprep's index: it is padprep's store."""
        try:
            return json.loads((self.root / INDEX).read_text(encoding="utf-8")).get("padprep_store") == STORE_FORMAT
        except (OSError, ValueError, AttributeError):
            return False

    def _make_index(self) -> None:
        if self._ours():
            return
        if (self.root / INDEX).exists() or (self.root.is_dir() and any(p.name != TMP for p in self.root.iterdir())):
            raise OSError(f"{self.root} holds files that are not padprep's store (no {INDEX}): choose another --cache-dir")
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".{INDEX}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps({"padprep_store": STORE_FORMAT, "about": "padprep's tokenized store"}) + "\n", encoding="utf-8")
        os.replace(tmp, self.root / INDEX)


def _read_entry(path: Path) -> dict | None:
    """An entry's ``entry.json`` when whole (its own sha256 agrees), else None."""
    try:
        record = json.loads((path / ENTRY).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("padprep_store") != STORE_FORMAT or record.get("sha256") != _self_sha(record):
        return None
    if record.get("key") != path.name and not _TMP_NAME.match(path.name):
        return None
    return record


def _used(path: Path) -> float:
    try:
        return (path / ENTRY).stat().st_mtime
    except OSError:
        return 0.0


def _remove_entry(path: Path) -> None:
    """An entry's folder goes: renamed aside first (readers see it or nothing), then only the files padprep
    writes in an entry are removed, and the folder if that leaves it empty."""
    aside = path.parent / f".removing-{path.name}-{secrets.token_hex(4)}"
    try:
        os.rename(path, aside)
    except OSError:
        return
    for p in aside.iterdir():
        if p.name in (ENTRY, REJECTS_FILE) or re.fullmatch(r"spill-\d{5}\.arrow", p.name):
            with contextlib.suppress(OSError):
                p.unlink()
    with contextlib.suppress(OSError):
        aside.rmdir()


def open_store(cache_dir: Path | None, no_cache: bool, log: Callable[[str], None]) -> Store | None:
    """The build's store: None with ``--no-cache`` (or ``PADPREP_NO_CACHE=1``)."""
    if no_cache or os.environ.get("PADPREP_NO_CACHE", "") not in ("", "0"):
        return None
    return Store(Path(cache_dir).expanduser() if cache_dir is not None else default_root(), log)


# -- padprep cache ---------------------------------------------------------------------------------


class NotAStore(PadprepError):
    """``--cache-dir`` names a folder that is not padprep's store (exit 2): nothing in it is touched."""

    exit_code = EXIT_USAGE


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n:,.1f} GiB"


def _check_ours(store: Store) -> bool:
    """True when the store holds padprep's index; False when there is no folder yet; else NotAStore."""
    if store._ours():
        return True
    if not store.root.exists():
        return False
    raise NotAStore(f"{store.root} is not padprep's store (no {INDEX} in it): nothing listed or removed")


def listing(root: Path) -> list[str]:
    """``padprep cache list``: the store's entries, least recently used first, one line each."""
    store = Store(root)
    if not _check_ours(store):
        return [f"{root}: empty (no build has kept its rows here yet)"]
    entries = store.entries()
    total = sum(r.get("bytes", 0) for _, r in entries)
    lines = [f"{root}: {len(entries)} {'entry' if len(entries) == 1 else 'entries'}, {_size(total)} (bound {_size(store.limit)})"]
    for path, record in entries:
        counts = record["meta"]["pass_one"]["counts"]
        inputs = len(record["parts"]["files"])
        used = time.strftime("%Y-%m-%d %H:%M", time.localtime(_used(path)))
        lines.append(
            f"  {path.name[:12]}  {counts['read']:,} records, {counts['written']:,} rows, {inputs} input{'s' * (inputs != 1)}, "
            f"{_size(record.get('bytes', 0))}, used {used}"
        )
    return lines


def prune(root: Path, limit: int | None = None, everything: bool = False) -> list[str]:
    """``padprep cache prune``: least recently used entries removed down to ``limit`` (default: the bound),
    or all of them; only padprep's entries, only the files they list."""
    store = Store(root)
    if not _check_ours(store):
        return [f"{root}: empty (nothing to prune)"]
    removed = store.evict(0 if everything else store.limit if limit is None else limit)
    freed = sum(r.get("bytes", 0) for _, r in removed)
    left = store.entries()
    return [
        f"{root}: removed {len(removed)} {'entry' if len(removed) == 1 else 'entries'} ({_size(freed)}); "
        f"{len(left)} left ({_size(sum(r.get('bytes', 0) for _, r in left))})"
    ]


__all__ = [
    "LAYOUT_OPTIONS",
    "Entry",
    "NotAStore",
    "Store",
    "default_root",
    "listing",
    "open_store",
    "parse_size",
    "prune",
    "token_parts",
]
