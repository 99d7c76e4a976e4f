"""Load a tokenizer (file, directory or hub id) with its special tokens, chat template and fingerprint.

The fingerprint hashes file *contents*, so the manifest tells whether two builds used the same
tokenizer whatever the path or hub revision it came from.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from tokenizers import Tokenizer

from padprep.errors import EXIT_USAGE, PadprepError

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json")
SPECIAL_KEYS = ("bos_token", "eos_token", "pad_token", "unk_token")


class TokenizerError(PadprepError):
    """The tokenizer could not be found, downloaded or parsed (exit 2)."""

    exit_code = EXIT_USAGE


@dataclass(frozen=True)
class TokenizerBundle:
    """Everything padprep needs from a tokenizer, loaded once, picklable for worker processes."""

    source: str
    config: dict
    chat_template: str | None
    special: dict[str, str]  # bos_token / eos_token / pad_token / unk_token -> token text, where set
    pad_token: str
    pad_id: int
    pad_origin: str  # "tokenizer_config", "--pad-token" or "fallback: eos_token"
    fingerprint: str
    tokenizer: Tokenizer = field(compare=False, repr=False)  # parsed once (large vocabularies take ~0.5 s)
    files: dict[str, str] = field(default_factory=dict)  # file name -> sha256


def tokenizer_fingerprint(spec: str) -> str:
    """The content fingerprint of ``spec``'s files, without parsing the tokenizer (cheap)."""
    return _fingerprint(_read_files(_resolve(spec)))[1]


def _read_files(files: dict[str, str]) -> dict[str, bytes]:
    out = {}
    for name, path in files.items():
        try:
            out[name] = Path(path).read_bytes()
        except OSError as exc:
            raise TokenizerError(f"{path}: cannot read the tokenizer file ({exc.strerror or exc})") from None
    return out


def _first_line(exc: Exception) -> str:
    text = str(exc)
    return text.splitlines()[0][:300] if text else type(exc).__name__


def _fingerprint(raw: dict[str, bytes]) -> tuple[dict[str, str], str]:
    digests = {name: hashlib.sha256(data).hexdigest() for name, data in sorted(raw.items())}
    return digests, hashlib.sha256(json.dumps(digests, sort_keys=True).encode()).hexdigest()


def load_tokenizer(spec: str, pad_token: str | None = None, pad_id: int | None = None) -> TokenizerBundle:
    """Resolve ``spec`` (tokenizer.json path, directory, or hub id) and read its files.

    ``pad_id``: the pad token's id as a build with these very files (same fingerprint) found it: the
    tokenizer is then not parsed (``tokenizer`` is None; the tokenized store's builds, which tokenize nothing).
    """
    files = _resolve(spec)
    raw = _read_files(files)
    tok = None
    if pad_id is None:
        try:
            tok = Tokenizer.from_str(raw["tokenizer.json"].decode("utf-8"))
        except Exception as exc:  # tokenizers raises a plain Exception on parse errors; bytes may not be UTF-8
            raise TokenizerError(f"{files['tokenizer.json']}: not a valid tokenizer.json ({_first_line(exc)})") from None
    config = _json_file(raw, files, "tokenizer_config.json")
    special_map = _json_file(raw, files, "special_tokens_map.json")
    special = {}
    for key in SPECIAL_KEYS:
        value = _token_text(config.get(key)) or _token_text(special_map.get(key))
        if value is not None:
            special[key] = value
    template = _text(raw, files, "chat_template.jinja") if "chat_template.jinja" in raw else _config_template(config)
    pad, origin = _choose_pad(special, pad_token)
    pad_id = tok.token_to_id(pad) if tok is not None else pad_id
    if pad_id is None:
        raise TokenizerError(f"pad token {pad!r} ({origin}) is not in the tokenizer's vocabulary")
    digests, fingerprint = _fingerprint(raw)
    return TokenizerBundle(
        source=spec,
        config=config,
        chat_template=template,
        special=special,
        pad_token=pad,
        pad_id=pad_id,
        pad_origin=origin,
        fingerprint=fingerprint,
        tokenizer=tok,
        files=digests,
    )


def _resolve(spec: str) -> dict[str, str]:
    path = Path(spec).expanduser()
    if path.is_file():
        found = {"tokenizer.json": str(path)}
        found.update(_siblings(path.parent, exclude="tokenizer.json"))
        return found
    if path.is_dir():
        if not (path / "tokenizer.json").is_file():
            raise TokenizerError(f"{path}: directory has no tokenizer.json")
        return {"tokenizer.json": str(path / "tokenizer.json"), **_siblings(path, exclude="tokenizer.json")}
    if re.fullmatch(r"[\w.-]+(/[\w.-]+)?", spec) and not spec.endswith(".json") and not spec.startswith("."):
        return _from_hub(spec)
    raise TokenizerError(f"{spec}: no such file or directory (and not a hub id like `org/name`)")


def _siblings(directory: Path, exclude: str) -> dict[str, str]:
    return {n: str(directory / n) for n in TOKENIZER_FILES if n != exclude and (directory / n).is_file()}


def _from_hub(repo_id: str) -> dict[str, str]:
    """Download (or find in the local cache) the tokenizer files of a hub repository."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError:  # pragma: no cover - a runtime dependency
        raise TokenizerError("huggingface_hub is not installed; pass a local tokenizer path") from None
    patterns = list(TOKENIZER_FILES)
    errors = []
    for local_only in (False, True):
        try:
            folder = snapshot_download(repo_id, allow_patterns=patterns, local_files_only=local_only)
        except Exception as exc:  # network, auth, not found: all end in the same advice
            errors.append(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
            continue
        if (Path(folder) / "tokenizer.json").is_file():
            return {"tokenizer.json": str(Path(folder) / "tokenizer.json"), **_siblings(Path(folder), "tokenizer.json")}
        errors.append("the repository has no tokenizer.json")
    # the first error is the real cause (no network, not found, auth): the cache retry's only says it is not cached
    raise TokenizerError(
        f"{repo_id}: cannot get this tokenizer from the Hugging Face Hub ({errors[0]}), and it is not in the local "
        "cache either; download it where you have network, or pass a local path"
    )


def _text(raw: dict[str, bytes], files: dict[str, str], name: str) -> str:
    try:
        return raw[name].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TokenizerError(f"{files[name]}: not UTF-8 text (byte {exc.start})") from None


def _json_file(raw: dict[str, bytes], files: dict[str, str], name: str) -> dict:
    if name not in raw:
        return {}
    try:
        value = json.loads(_text(raw, files, name))
    except json.JSONDecodeError as exc:
        raise TokenizerError(f"{files[name]}: invalid JSON ({exc.msg} at line {exc.lineno})") from None
    return value if isinstance(value, dict) else {}


def _token_text(value) -> str | None:
    """Special tokens are written as a string or as an AddedToken dict ``{"content": ...}``."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) and value else None


def _config_template(config: dict) -> str | None:
    template = config.get("chat_template")
    if isinstance(template, list):  # named templates: [{"name": "default", "template": ...}, ...]
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default") or next(iter(named.values()), None)
    return template if isinstance(template, str) else None


def _choose_pad(special: dict[str, str], override: str | None) -> tuple[str, str]:
    if override:
        return override, "--pad-token"
    if "pad_token" in special:
        return special["pad_token"], "tokenizer_config"
    if "eos_token" in special:
        return special["eos_token"], "fallback: eos_token (the tokenizer defines no pad token)"
    raise TokenizerError("the tokenizer defines neither a pad token nor an eos token; pass --pad-token")
