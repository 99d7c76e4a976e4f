"""What a build may replace: padprep deletes or replaces only what it wrote itself.

Checked before any work, and again just before an old output is replaced:

* **apart**: the output is never an input, never holds one and never lies inside one (paths compared
  resolved, symlinks followed); the tokenizer, template and recipe files count as inputs, and so do
  padprep's own files beside the output (``.OUT.padprep-*``, ``OUT.rejects.jsonl``), which a build
  removes. The current directory (or one above it) is never an output: it cannot be renamed.
* **owned**: an existing output is replaced only when it is padprep's: a directory holding
  ``manifest.json`` and nothing but the files that manifest lists and ``rejects.jsonl``. An empty
  directory holds nothing to lose and is used as it is. Anything else is refused in one line that names
  what is in the way (exit 2); ``--overwrite`` and ``--force`` never widen this.

Replacing removes the old output's files one by one by name, after the new output is complete
(``run/checkpoint.py``); a folder left holding anything else is kept and named, never deleted whole.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterable

from padprep.errors import EXIT_USAGE, PadprepError
from padprep.output.manifest import ManifestError, read_manifest
from padprep.schema import MANIFEST, REJECTS

_SHOWN = 5  # foreign names listed in a refusal


class OutputExists(PadprepError):
    """The output is an earlier padprep build and neither ``--overwrite`` nor ``--force`` was given (exit 2)."""

    exit_code = EXIT_USAGE


class OutputInTheWay(PadprepError):
    """The output path holds, is or lies in something padprep did not write (exit 2)."""

    exit_code = EXIT_USAGE


def beside(output: Path, suffix: str) -> Path:
    """A file padprep keeps beside ``output`` while building it: ``.OUT.padprep-SUFFIX`` in OUT's parent."""
    output = Path(output)
    return output.parent / f".{output.name}.padprep-{suffix}"


def failed_rejects_path(output: Path) -> Path:
    """Where the rejects of a build that failed on them are kept: beside the output, ``OUT.rejects.jsonl``."""
    output = Path(output)
    return output.parent / f"{output.name}.{REJECTS}"


def check_apart(output: Path, inputs: Iterable[str | Path]) -> None:
    """Refuse an output that is, holds or lies inside one of ``inputs`` (local paths; others are skipped),
    or that is the current directory or above it.

    Raises:
        OutputInTheWay: naming the input and what to do.
    """
    out = os.path.realpath(output)
    own_prefix = os.path.join(os.path.dirname(out), f".{os.path.basename(out)}.padprep-")
    own_rejects = os.path.realpath(failed_rejects_path(output))
    for given in inputs:
        given = str(given)
        if not os.path.lexists(given):
            continue  # a URL, a Hub id, standard input: nothing on this disk to protect
        path = os.path.realpath(given)
        if path == out:
            raise OutputInTheWay(f"{output}: is the input {given}; write the output to a path of its own")
        if _within(path, out):
            raise OutputInTheWay(
                f"{output}: holds the input {given}; an output is replaced whole, so it must not contain what it is "
                "built from: write it elsewhere"
            )
        if os.path.isdir(path) and _within(out, path):
            raise OutputInTheWay(f"{output}: lies inside the input directory {given}; write the output outside it")
        if path.startswith(own_prefix) or path == own_rejects:
            raise OutputInTheWay(
                f"{given}: is a file padprep keeps beside the output {output} and removes; move it, or choose another --output"
            )
    here = os.path.realpath(os.getcwd())
    if _within(here, out):
        raise OutputInTheWay(
            f"{output}: is the current directory{'' if here == out else ' or above it'}, which cannot be replaced; "
            "name a folder of its own, e.g. --output out"
        )


def owned_files(output: Path) -> list[str]:
    """The names in an existing output directory, when every one of them is padprep's (see the module).

    Raises:
        OutputInTheWay: the path is a file, a damaged output, or holds something padprep did not write.
    """
    output = Path(output)
    if not output.is_dir():
        raise OutputInTheWay(
            f"{output}: is a file, not a padprep output; padprep replaces only its own outputs: choose another --output"
        )
    present = sorted(os.listdir(output))
    if not present:
        return []
    if MANIFEST not in present:
        raise OutputInTheWay(
            f"{output}: already exists and is not a padprep output (it holds {names_shown(present)}); "
            "padprep replaces only its own outputs: choose another --output"
        )
    try:
        listed = {name for shard in read_manifest(output).shards for name in (shard.file, shard.sources) if name}
    except ManifestError as exc:
        raise OutputInTheWay(
            f"{output}: its {MANIFEST} cannot be read ({exc}), so padprep cannot tell which files are its own; "
            "remove the folder yourself, or choose another --output"
        ) from None
    foreign = [name for name in present if name not in listed | {MANIFEST, REJECTS} or not (output / name).is_file()]
    if foreign:
        raise OutputInTheWay(
            f"{output}: holds {names_shown(foreign)}, which padprep did not write; move {'it' if len(foreign) == 1 else 'them'} "
            "out of the output, or choose another --output"
        )
    return present


def check_replaceable(output: Path, replace: bool) -> None:
    """An existing ``output`` may be built into: empty, or padprep's and ``replace`` given (--overwrite, --force).

    Raises:
        OutputInTheWay: something padprep did not write is there (whatever ``replace`` says).
        OutputExists: an earlier padprep output, and ``replace`` is False.
    """
    if not os.path.lexists(output):
        return
    if owned_files(output) and not replace:
        raise OutputExists(f"{output} already exists (an earlier padprep build); pass --overwrite to replace it")


def remove_owned(directory: Path, names: Iterable[str]) -> list[str]:
    """Remove ``names`` from ``directory``, then the directory if that left it empty; returns what is left
    there (something that appeared since ``owned_files`` looked), which is kept."""
    for name in names:
        with contextlib.suppress(FileNotFoundError):
            (Path(directory) / name).unlink()
    left = sorted(os.listdir(directory))
    if not left:
        os.rmdir(directory)
    return left


def _within(path: str, folder: str) -> bool:
    """``path`` is ``folder`` or lies below it (both resolved)."""
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def names_shown(names: list[str]) -> str:
    """The first few of ``names`` for a refusal: ``a, b, c, d, e and 3 more``."""
    shown = ", ".join(names[:_SHOWN])
    return shown + (f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else "")


__all__ = [
    "OutputExists",
    "OutputInTheWay",
    "beside",
    "check_apart",
    "check_replaceable",
    "failed_rejects_path",
    "names_shown",
    "owned_files",
    "remove_owned",
]
