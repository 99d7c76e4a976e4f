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


def build_key(cfg: BuildConfig, digests: list[str | None]) -> str | None:
    """The key of building ``cfg`` from inputs with these digests; None when an input is standard input."""
    if any(d is None for d in digests):
        return None
    template = resolve_template(cfg.chat_template, None)[0] if cfg.chat_template else None
    payload = {
        "padprep_version": __version__,
        "inputs": digests,
        "tokenizer": tokenizer_fingerprint(cfg.tokenizer),
        "chat_template": hashlib.sha256(template.encode()).hexdigest() if template is not None else None,
        "options": {k: v for k, v in cfg.as_manifest().items() if k not in _NOT_IN_KEY},
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


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
