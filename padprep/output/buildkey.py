"""The build key: one digest of everything a build's output depends on, so a repeated build is free.

It hashes content, never names: the bytes of every input (in order), the tokenizer files' contents
(their chat template included), the text of ``--chat-template`` when one is given, every option that
changes what is written, and the padprep version. Paths, the tokenizer's name or location, the worker
count and the reject limits do not enter it, so the same data and tokenizer give the same key
wherever they lie. Standard input cannot be hashed before it is read: such builds have no key.

Computing it reads and hashes the files but parses nothing, so an up-to-date check costs about what
reading the inputs once costs.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from padprep import __version__
from padprep.chat.templates import resolve_template
from padprep.chat.tokenizer import tokenizer_fingerprint
from padprep.config import BuildConfig
from padprep.errors import PadprepError
from padprep.input.read import STDIN, InputError
from padprep.input.remote import RemoteError, is_remote, url_sha256
from padprep.layout.shards import file_sha256
from padprep.output.manifest import Manifest, read_manifest
from padprep.schema import REJECTS

# Options recorded by name or path, not content: their content enters the key on its own.
_BY_CONTENT = frozenset({"inputs", "tokenizer", "chat_template"})
# Options that do not change a byte of the output: the engine (local or Ray) is recorded, not keyed.
_NOT_IN_KEY = _BY_CONTENT | {"engine"}


def input_digests(files: list[str]) -> list[str | None]:
    """sha256 of each input file (None for standard input); a URL is read once for it (``remote``)."""
    return [None if f == STDIN else _url_sha256(f) if is_remote(f) else file_sha256(f) for f in files]


def _url_sha256(url: str) -> str:
    try:
        return url_sha256(url)
    except RemoteError as exc:
        raise InputError(f"{url}: cannot read ({exc})") from None


def key_parts(cfg: BuildConfig, digests: list[str | None]) -> dict | None:
    """What the key of building ``cfg`` from inputs with these digests hashes; None when an input is standard input."""
    if any(d is None for d in digests):
        return None
    template = resolve_template(cfg.chat_template, None)[0] if cfg.chat_template else None
    return {
        "padprep_version": __version__,
        "inputs": digests,
        "tokenizer": tokenizer_fingerprint(cfg.tokenizer),
        "chat_template": hashlib.sha256(template.encode()).hexdigest() if template is not None else None,
        "options": {k: v for k, v in cfg.as_manifest().items() if k not in _NOT_IN_KEY},
    }


def key_of(parts: dict | None) -> str | None:
    """The build key: the sha256 of its parts (``key_parts``)."""
    return None if parts is None else hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def build_key(cfg: BuildConfig, digests: list[str | None]) -> str | None:
    """The key of building ``cfg`` from inputs with these digests; None when an input is standard input."""
    return key_of(key_parts(cfg, digests))


def key_changes(before: dict | None, now: dict | None) -> str:
    """What differs between two builds' key parts, for a person: ``--max-length (512, now 1024), the tokenizer``."""
    if not before or not now:
        return "the inputs, tokenizer, template or options"
    changed = []
    if before.get("inputs") != now.get("inputs"):
        old, new = before.get("inputs") or [], now.get("inputs") or []
        which = [str(i + 1) for i, (a, b) in enumerate(zip(old, new)) if a != b]
        changed.append(
            f"the inputs ({len(old)} then, {len(new)} now)"
            if len(old) != len(new)
            else f"the content of input{'s' * (len(which) > 1)} {', '.join(which)} of {len(new)}"
        )
    for part, name in (("tokenizer", "the tokenizer's files"), ("chat_template", "the --chat-template text")):
        if before.get(part) != now.get(part):
            changed.append(name)
    a, b = before.get("options") or {}, now.get("options") or {}
    for name in sorted(set(a) | set(b)):
        if a.get(name) != b.get(name):
            changed.append(f"--{name.replace('_', '-')} ({a.get(name)!r}, now {b.get(name)!r})")
    return ", ".join(changed) or "the build key"


def up_to_date(output: Path, key: str | None) -> Manifest | None:
    """The manifest of ``output`` when it was built with ``key`` and every file it lists is still there
    with its recorded size (contents are not re-hashed: ``inspect --verify`` does that); else None."""
    if key is None:
        return None
    try:
        manifest = read_manifest(Path(output))
    except (PadprepError, OSError):
        return None
    if manifest.build_key != key or not (Path(output) / REJECTS).is_file():
        return None
    for shard in manifest.shards:
        path = Path(output) / shard.file
        if not path.is_file() or path.stat().st_size != shard.bytes:
            return None
    return manifest
